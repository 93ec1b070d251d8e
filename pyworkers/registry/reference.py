"""``oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`` references and which scheme a registry gets.

Grammar (OCI distribution spec, "Pulling manifests"; docker/distribution ``reference``):
``REPO`` is one or more ``/``-separated components ``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*``;
``TAG`` is ``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``; a digest is ``sha256:<64 hex>``. The host is
a DNS name, an IPv4 address or a bracketed IPv6 address (``[::1]``), with an optional port.

Plain HTTP is allowed only for loopback registries (``localhost``, ``127.0.0.0/8``, ``::1``), as
Docker treats them as insecure registries by default; every other registry is reached over TLS.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re

__all__ = ["Reference", "parse_reference", "is_loopback", "TAG_RE", "DIGEST_RE"]

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPO_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?")

SCHEME = "oci://"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name``, ``name:port``, ``[v6]:port``) is ``localhost`` (or a name
    under ``.localhost``), an address in ``127.0.0.0/8`` or ``::1``."""
    h = host
    if h.startswith("["):
        h = h[1:h.index("]")]
    elif h.count(":") == 1:
        h = h.split(":")[0]
    h = h.lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class Reference:
    """A parsed registry reference.

    ``host``: ``name[:port]`` as written (the key looked up in docker's ``auths``);
    ``repository``: the repository path; ``tag`` and ``digest`` (``sha256:<hex>``): at most
    one usually, both allowed (the digest wins when pulling).
    """

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def loopback(self) -> bool:
        """Whether plain HTTP may be used (see :func:`is_loopback`)."""
        return is_loopback(self.host)

    @property
    def reference(self) -> str | None:
        """What to put after ``/manifests/``: the digest if any, else the tag."""
        return self.digest or self.tag

    def with_tag(self, tag: str) -> "Reference":
        """The same repository with ``tag`` (and no digest)."""
        if not TAG_RE.fullmatch(tag):
            raise ValueError(f"{tag!r} is not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9._-], at most "
                             "128 characters)")
        return dataclasses.replace(self, tag=tag, digest=None)

    def repo_only(self) -> "Reference":
        """The repository without tag or digest."""
        return dataclasses.replace(self, tag=None, digest=None)

    def __str__(self) -> str:
        s = f"{SCHEME}{self.host}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse_reference(text: str) -> Reference:
    """Parse ``oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]``.

    Raises ``ValueError`` with a one-line message naming the bad part and the expected form.
    """
    if not text.startswith(SCHEME):
        raise ValueError(f"{text!r}: a registry reference starts with oci://, e.g. "
                         "oci://registry.example:5000/team/workers:hello")
    rest = text[len(SCHEME):]
    host, sep, path = rest.partition("/")
    if not sep or not path:
        raise ValueError(f"{text!r}: give a repository after the host, e.g. oci://{host or 'HOST'}/workers")
    if not _HOST_RE.fullmatch(host):
        raise ValueError(f"{text!r}: {host!r} is not a registry host[:port]")
    digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not DIGEST_RE.fullmatch(digest):
            raise ValueError(f"{text!r}: {digest!r} is not a digest (sha256:<64 lowercase hex>)")
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not TAG_RE.fullmatch(tag):
            raise ValueError(f"{text!r}: {tag!r} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-], "
                             "at most 128 characters)")
    if not REPO_RE.fullmatch(path):
        raise ValueError(f"{text!r}: {path!r} is not a repository name (lowercase letters, digits "
                         "and . _ - separators, components joined by /)")
    return Reference(host=host, repository=path, tag=tag, digest=digest)
