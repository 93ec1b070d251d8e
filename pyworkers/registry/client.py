"""A small OCI distribution client over httpx (the parts pyworkers needs).

Follows the OCI distribution specification v1.1 ("Pulling", "Pushing", "Checking if content
exists"): ``GET /v2/`` (ping), ``HEAD``/``GET``/``PUT /v2/<repo>/manifests/<ref>``,
``HEAD``/``GET /v2/<repo>/blobs/<digest>``, monolithic uploads (``POST
/v2/<repo>/blobs/uploads/`` then ``PUT <location>?digest=<digest>``). Authentication: HTTP
basic, or the bearer-token flow of the docker/distribution token specification (a ``401`` with
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` -> ``GET realm?service&scope``
with basic credentials -> ``{"token"|"access_token"}``).

Why not the ``oras`` Python SDK (checked: 0.2.43 installs and pushes/pulls against a plain-HTTP
local registry): its requests carry no timeout, every request is wrapped in a fixed retry of 5
attempts with sleeps of 3+5+11+29+83 s (an unreachable registry blocks a call for 131 s,
measured; a registry follower must notice in seconds), it does not check the sha256 of blobs it
downloads, and it would add ``requests`` and ``jsonschema`` beside httpx, which pyworkers
already uses.

Transport security: TLS is verified against certifi's CA bundle plus ``ca_file`` if given.
Plain HTTP is used only for loopback registries (``localhost``, ``127.0.0.0/8``, ``::1``):
HTTPS is tried first and plain HTTP only when the TLS connection cannot be made, which is what
Docker does for registries it treats as insecure.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import certifi
import httpx

from pyworkers.registry.auth import Credentials, credentials_for
from pyworkers.registry.errors import (DigestMismatch, NotFound, RegistryAuthError, RegistryError,
                                       RegistryUnreachable)
from pyworkers.registry.reference import is_loopback

__all__ = ["RegistryClient", "OCI_MANIFEST", "sha256_file", "sha256_bytes"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CHUNK = 1 << 20
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


def sha256_bytes(data: bytes) -> str:
    """``"sha256:<hex>"`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    """``("sha256:<hex>", size in bytes)`` of the file at ``path``."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def _errors(r: httpx.Response) -> str:
    try:
        errs = r.json().get("errors") or []
        msgs = [f"{e.get('code')}: {e.get('message')}" for e in errs if isinstance(e, dict)]
        if msgs:
            return "; ".join(msgs)
    except (ValueError, AttributeError):
        pass
    text = r.text.strip().splitlines()
    return f"HTTP {r.status_code}" + (f" {text[0][:200]}" if text else "")


class RegistryClient:
    """A connection to one registry ``host`` (``name[:port]``).

    Args:
        host: the registry, as in an ``oci://`` reference.
        credentials: used for basic auth and token requests; default: the docker configuration
            (:func:`pyworkers.registry.auth.credentials_for`).
        ca_file: a PEM file of extra CA certificates trusted for this registry.
        timeout: seconds for connecting and for each read/write (default 30).

    ``stats`` counts what went over the wire: ``blob_uploads``, ``bytes_uploaded``,
    ``blob_downloads``, ``bytes_downloaded``, ``blob_checks`` (HEAD), ``manifest_puts``.
    Thread-safe for use by one follower thread at a time plus readers of ``stats``.
    Raises :class:`RegistryUnreachable`, :class:`RegistryAuthError`, :class:`NotFound`,
    :class:`DigestMismatch` or :class:`RegistryError`, each one line naming host and object.
    """

    def __init__(self, host: str, *, credentials: Credentials | None = None,
                 ca_file: str | os.PathLike | None = None, timeout: float = 30.0,
                 docker_config: Path | None = None):
        self.host = host
        if credentials is None:
            try:
                credentials = credentials_for(host, config=docker_config)
            except ValueError as e:
                raise RegistryAuthError(str(e)) from None
        self.credentials = credentials
        ctx = ssl.create_default_context(cafile=certifi.where())
        if ca_file:
            try:
                ctx.load_verify_locations(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as e:
                raise RegistryError(f"--ca-file {ca_file}: cannot load CA certificates ({e})") from None
        self._http = httpx.Client(verify=ctx, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                  follow_redirects=True,
                                  headers={"User-Agent": "pyworkers-registry"})
        #: Schemes tried in order: HTTPS, and plain HTTP only for a loopback registry.
        self.schemes = ("https", "http") if is_loopback(host) else ("https",)
        self._base: str | None = None
        self._auth_header: dict[str, str] = {}
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.stats = {"blob_uploads": 0, "bytes_uploaded": 0, "blob_downloads": 0,
                      "bytes_downloaded": 0, "blob_checks": 0, "manifest_puts": 0}

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        """``https://host`` or (loopback registries only, when TLS is not offered)
        ``http://host``; decided by a ``GET /v2/`` on first use."""
        if self._base is None:
            self._base = self._probe()
        return self._base

    def _probe(self) -> str:
        tls_error: Exception | None = None
        for scheme in self.schemes:
            url = f"{scheme}://{self.host}"
            try:
                r = self._http.get(f"{url}/v2/")
            except httpx.TransportError as e:
                if scheme == "https":
                    tls_error = e
                    continue
                raise RegistryUnreachable(f"registry {self.host} does not answer over HTTPS "
                                          f"({tls_error}) nor HTTP ({e})") from None
            if r.status_code in (200, 401):
                return url
            if tls_error is not None:
                raise RegistryUnreachable(f"registry {self.host}: HTTPS failed ({tls_error}) and "
                                          f"plain HTTP answered {_errors(r)}"
                                          f"{self._tls_hint(tls_error)}") from None
            raise RegistryError(f"{url}/v2/ answered {_errors(r)}: is {self.host} an OCI registry?")
        raise RegistryUnreachable(f"registry {self.host} does not answer over HTTPS "
                                  f"({tls_error}){self._tls_hint(tls_error)}")

    @staticmethod
    def _tls_hint(e: Exception | None) -> str:
        if e is not None and "CERTIFICATE_VERIFY_FAILED" in str(e):
            return ": its certificate is not trusted; pass --ca-file with the CA that signed it"
        return ""

    def _token(self, challenge: str) -> str:
        params = dict(_CHALLENGE_RE.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise RegistryAuthError(f"registry {self.host}: bearer challenge without realm: {challenge}")
        key = f"{params.get('service')} {params.get('scope')}"
        if key in self._tokens:
            return self._tokens[key]
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        try:
            r = self._http.get(realm, params=params, auth=auth)
        except httpx.TransportError as e:
            raise RegistryUnreachable(f"token service {realm} of {self.host}: {e}") from None
        if r.status_code in (401, 403):
            raise RegistryAuthError(f"registry {self.host}: the token service refused "
                                    f"{'the credentials' if auth else 'anonymous access'} "
                                    f"({_errors(r)}): docker login {self.host}, or pass "
                                    "--username/--password-stdin")
        if r.status_code != 200:
            raise RegistryError(f"token service {realm}: {_errors(r)}")
        body = r.json()
        tok = body.get("token") or body.get("access_token")
        if not tok:
            raise RegistryAuthError(f"token service {realm} answered no token")
        self._tokens[key] = tok
        return tok

    def _send(self, method: str, url: str, *, headers: dict | None = None, content: Any = None,
              stream: bool = False) -> httpx.Response:
        hdrs = {**self._auth_header, **(headers or {})}
        try:
            req = self._http.build_request(method, url, headers=hdrs, content=content)
            return self._http.send(req, stream=stream)
        except httpx.TransportError as e:
            raise RegistryUnreachable(f"registry {self.host}: {method} {url}: {e}") from None

    def request(self, method: str, path: str, *, headers: dict | None = None,
                content: Any = None, stream: bool = False, url: str | None = None,
                replay: Any = None) -> httpx.Response:
        """Send ``method`` to ``base_url + path`` (or ``url``), answering one auth challenge.

        ``replay``: a callable giving the body again if the first attempt was refused with 401
        (streamed bodies can be read once). Raises :class:`RegistryUnreachable` on transport
        errors and :class:`RegistryAuthError` when the registry refuses the credentials.
        """
        target = url or f"{self.base_url}{path}"
        r = self._send(method, target, headers=headers, content=content, stream=stream)
        if r.status_code != 401:
            return r
        challenge = r.headers.get("WWW-Authenticate", "")
        r.close()
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self.credentials:
                raise RegistryAuthError(f"registry {self.host} requires a login: docker login "
                                        f"{self.host}, or pass --username/--password-stdin")
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            self._auth_header = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        elif scheme == "bearer":
            self._auth_header = {"Authorization": f"Bearer {self._token(challenge)}"}
        else:
            raise RegistryAuthError(f"registry {self.host}: unsupported authentication "
                                    f"challenge {challenge!r}")
        body = replay() if replay is not None else content
        r = self._send(method, target, headers=headers, content=body, stream=stream)
        if r.status_code == 401:
            r.close()
            who = f"user {self.credentials.username!r} ({self.credentials.source})" \
                if self.credentials else "anonymous access"
            raise RegistryAuthError(f"registry {self.host} refused {who}: check the login "
                                    "(docker login, or --username/--password-stdin)")
        return r

    # ------------------------------------------------------------------ API
    def ping(self) -> None:
        """Check the registry answers the ``/v2/`` API (and accepts the credentials)."""
        r = self.request("GET", "/v2/")
        if r.status_code != 200:
            raise RegistryError(f"registry {self.host}: GET /v2/ answered {_errors(r)}")

    def blob_exists(self, repo: str, digest: str) -> bool:
        """Whether ``repo`` has blob ``digest`` (``HEAD /v2/<repo>/blobs/<digest>``)."""
        with self._lock:
            self.stats["blob_checks"] += 1
        r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if r.status_code == 200:
            return True
        if r.status_code == 404:
            return False
        raise RegistryError(f"registry {self.host}: HEAD blob {digest} in {repo}: {_errors(r)}")

    def upload_blob(self, repo: str, digest: str, size: int, source: bytes | str | os.PathLike) -> None:
        """Upload one blob (``bytes`` or a file path) of ``size`` bytes with ``digest``
        (monolithic upload: POST then PUT with ``?digest=``; the registry checks the digest)."""
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
        if r.status_code != 202 or "Location" not in r.headers:
            raise RegistryError(f"registry {self.host}: starting the upload of {digest} to {repo}: "
                                f"{_errors(r)}")
        loc = httpx.URL(self.base_url).join(r.headers["Location"])
        loc = loc.copy_merge_params({"digest": digest})

        def body() -> bytes | Iterator[bytes]:
            if isinstance(source, bytes):
                return source
            return _file_chunks(Path(source))

        r = self.request("PUT", "", url=str(loc), content=body(), replay=body,
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Length": str(size)})
        if r.status_code != 201:
            raise RegistryError(f"registry {self.host}: uploading {digest} ({size} bytes) to "
                                f"{repo}: {_errors(r)}")
        with self._lock:
            self.stats["blob_uploads"] += 1
            self.stats["bytes_uploaded"] += size

    def put_manifest(self, repo: str, reference: str, manifest: bytes,
                     media_type: str = OCI_MANIFEST) -> str:
        """Store ``manifest`` under ``reference`` (a tag or its digest); returns its digest."""
        digest = sha256_bytes(manifest)
        r = self.request("PUT", f"/v2/{repo}/manifests/{reference}", content=manifest,
                         headers={"Content-Type": media_type})
        if r.status_code != 201:
            raise RegistryError(f"registry {self.host}: storing the manifest {repo}:{reference}: "
                                f"{_errors(r)}")
        got = r.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise DigestMismatch(f"registry {self.host} stored the manifest of {repo}:{reference} "
                                 f"as {got}, its content is {digest}")
        with self._lock:
            self.stats["manifest_puts"] += 1
        return digest

    def head_manifest(self, repo: str, reference: str) -> str | None:
        """The digest ``reference`` (tag) points at, or ``None`` if there is no such tag."""
        r = self.request("HEAD", f"/v2/{repo}/manifests/{reference}",
                         headers={"Accept": OCI_MANIFEST})
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise RegistryError(f"registry {self.host}: HEAD manifest {repo}:{reference}: {_errors(r)}")
        d = r.headers.get("Docker-Content-Digest")
        if d:
            return d
        return self.get_manifest(repo, reference)[1]

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        """``(manifest bytes, digest)`` of ``reference``. When ``reference`` is a digest the
        content must hash to it, else :class:`DigestMismatch`; a tag's content must match the
        ``Docker-Content-Digest`` the registry sends. Raises :class:`NotFound` (404)."""
        r = self.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
        if r.status_code == 404:
            raise NotFound(f"registry {self.host} has no manifest {repo}:{reference}")
        if r.status_code != 200:
            raise RegistryError(f"registry {self.host}: GET manifest {repo}:{reference}: {_errors(r)}")
        data = r.content
        digest = sha256_bytes(data)
        want = reference if reference.startswith("sha256:") else r.headers.get("Docker-Content-Digest")
        if want and want != digest:
            raise DigestMismatch(f"manifest {repo}@{want} from {self.host} hashes to {digest}: refused")
        return data, digest

    def get_blob(self, repo: str, digest: str, out: BinaryIO, *, size: int | None = None) -> int:
        """Stream blob ``digest`` into the open file ``out``, checking its sha256 (and
        ``size`` if given) as it arrives. Returns the byte count. Raises
        :class:`DigestMismatch` (the caller must discard what was written) or :class:`NotFound`."""
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}", stream=True)
        try:
            if r.status_code == 404:
                raise NotFound(f"registry {self.host} has no blob {digest} in {repo}")
            if r.status_code != 200:
                r.read()
                raise RegistryError(f"registry {self.host}: GET blob {digest}: {_errors(r)}")
            h = hashlib.sha256()
            n = 0
            try:
                for chunk in r.iter_bytes(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    n += len(chunk)
                    if size is not None and n > size:
                        break
            except httpx.TransportError as e:
                raise RegistryUnreachable(f"registry {self.host}: GET blob {digest}: {e}") from None
        finally:
            r.close()
        got = "sha256:" + h.hexdigest()
        if got != digest or (size is not None and n != size):
            raise DigestMismatch(f"blob {digest} of {repo} from {self.host} is corrupt: received "
                                 f"{n} bytes hashing to {got}"
                                 + (f" (expected {size} bytes)" if size is not None else "")
                                 + ": refused")
        with self._lock:
            self.stats["blob_downloads"] += 1
            self.stats["bytes_downloaded"] += n
        return n


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk
