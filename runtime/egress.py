"""Egress policy: which destinations a sandboxed worker may open TCP connections to.

A :class:`Policy` is checked by the host at every guest ``connect``, on the *resolved* address
the guest is connecting to (a name that later resolves to a private address cannot slip through:
there is no name-only check that DNS rebinding could bypass). Host names in rules match the names
the guest resolved to that address through the host's resolver in the same isolate.

Rules are ``host[:port]`` patterns:

- ``host``: a DNS name with ``*`` / ``?`` wildcards (``*.internal.example``, case-insensitive),
  an IP address (``127.0.0.1``, ``::1``, ``[::1]``), or a CIDR network (``10.0.0.0/8``,
  ``fc00::/7``); ``*`` matches every destination; ``@public`` matches every public address
  (not loopback, private, link-local, multicast, reserved or unspecified).
- ``:port``: one port, or ``:*`` / omitted for every port. IPv6 addresses with a port are
  bracketed: ``[::1]:8080``.

Decision, in order: a ``deny`` rule that matches refuses; an ``allow`` rule that matches
permits; otherwise, with no ``allow`` rules at all, the default applies (public addresses
permitted; loopback, private (RFC 1918, ULA ``fc00::/7``, CGNAT ``100.64.0.0/10``), link-local
(``169.254.0.0/16`` incl. the cloud metadata address ``169.254.169.254``, ``fe80::/10``),
multicast, reserved and unspecified addresses refused); with ``allow`` rules, everything they do
not match is refused (an allow-list). ``allow = ["@public", "127.0.0.1:6379"]`` keeps the
default and adds one local service.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import logging
from typing import Iterable, Sequence

log = logging.getLogger("pyworkers.egress")

__all__ = ["EgressError", "Policy", "Rule", "Decision", "DEFAULT", "address_class"]


class EgressError(ValueError):
    """A malformed rule; the message names the rule and the expected form."""


IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_class(ip: IPAddr) -> str | None:
    """Why ``ip`` is not a public internet address (``"loopback"``, ``"private"``,
    ``"link-local"``, ``"unspecified"``, ``"multicast"``, ``"reserved"``), or ``None`` if it is
    public. IPv4-mapped IPv6 addresses are judged by their IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private or (isinstance(ip, ipaddress.IPv4Address)
                         and ip in ipaddress.IPv4Network("100.64.0.0/10")):
        # is_private covers RFC 1918, ULA fc00::/7 and the documentation/benchmark ranges
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


@dataclasses.dataclass(frozen=True)
class Rule:
    """One parsed ``host[:port]`` pattern (see the module docstring)."""

    text: str
    kind: str  # "any" | "public" | "net" | "name"
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    name: str | None
    port: int | None  # None: every port

    @classmethod
    def parse(cls, text: str) -> "Rule":
        """Parse one pattern; raises :class:`EgressError` naming it."""
        if not isinstance(text, str) or not text.strip():
            raise EgressError(f"egress rule {text!r}: expected a 'host[:port]' string")
        s = text.strip()
        host, port_s = s, None
        if s.startswith("["):
            end = s.find("]")
            if end < 0:
                raise EgressError(f"egress rule {text!r}: unclosed '[' (IPv6 form is '[::1]:443')")
            host, rest = s[1:end], s[end + 1:]
            if rest:
                if not rest.startswith(":"):
                    raise EgressError(f"egress rule {text!r}: expected ':port' after ']'")
                port_s = rest[1:]
        elif s.count(":") == 1:
            host, port_s = s.split(":")
        elif s.count(":") > 1 and "/" not in s:
            try:  # a bare IPv6 address, no port
                ipaddress.IPv6Address(s)
            except ValueError:
                raise EgressError(f"egress rule {text!r}: write IPv6 addresses with a port as "
                                  "'[addr]:port'") from None
        port: int | None = None
        if port_s is not None and port_s != "*":
            if not port_s.isdigit() or not 0 < int(port_s) < 65536:
                raise EgressError(f"egress rule {text!r}: port must be 1-65535 or '*'")
            port = int(port_s)
        host = host.strip().lower()
        if not host:
            raise EgressError(f"egress rule {text!r}: empty host")
        if host == "*":
            return cls(s, "any", None, None, port)
        if host == "@public":
            return cls(s, "public", None, None, port)
        try:
            net = ipaddress.ip_network(host, strict=False)
            return cls(s, "net", net, None, port)
        except ValueError:
            pass
        if "/" in host or not all(c.isalnum() or c in "-._*?" for c in host):
            raise EgressError(f"egress rule {text!r}: {host!r} is neither a host name pattern, "
                              "an IP address nor a CIDR network")
        return cls(s, "name", None, host.rstrip("."), port)

    def matches(self, ip: IPAddr, port: int, names: Iterable[str]) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.kind == "any":
            return True
        if self.kind == "public":
            return address_class(ip) is None
        if self.kind == "net":
            assert self.net is not None
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None \
                    and self.net.version == 4:
                ip = ip.ipv4_mapped
            return ip.version == self.net.version and ip in self.net
        return any(fnmatch.fnmatchcase(n.lower().rstrip("."), self.name or "") for n in names)


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of :meth:`Policy.check`: ``allowed`` and the ``rule`` that decided
    (``"deny <pattern>"``, ``"allow <pattern>"``, ``"default: loopback address"``, ...)."""

    allowed: bool
    rule: str


@dataclasses.dataclass(frozen=True)
class Policy:
    """An egress policy: ``allow`` and ``deny`` rules (strings or :class:`Rule`), the extra
    trusted CA certificates (PEM text) for TLS, and ``max_sockets`` (open sockets per isolate;
    more fail with ``EMFILE``).

    Raises :class:`EgressError` for a malformed rule."""

    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    ca_pem: str = ""
    max_sockets: int = 256

    @classmethod
    def build(cls, allow: Sequence[str] = (), deny: Sequence[str] = (), *, ca_pem: str = "",
              max_sockets: int = 256) -> "Policy":
        """A policy from pattern strings (see the module docstring)."""
        return cls(tuple(Rule.parse(a) for a in allow), tuple(Rule.parse(d) for d in deny),
                   ca_pem, int(max_sockets))

    def extended(self, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> "Policy":
        """This policy with more rules (e.g. a server's ``--outbound-allow/--outbound-deny``)."""
        return dataclasses.replace(self, allow=self.allow + tuple(Rule.parse(a) for a in allow),
                                   deny=self.deny + tuple(Rule.parse(d) for d in deny))

    def check(self, ip: str | IPAddr, port: int, names: Iterable[str] = ()) -> Decision:
        """Decide a connection to ``ip``:``port``; ``names`` are the host names the guest
        resolved to ``ip`` (they can match name rules)."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        names = tuple(names)
        for r in self.deny:
            if r.matches(addr, port, names):
                return Decision(False, f"deny rule {r.text!r}")
        for r in self.allow:
            if r.matches(addr, port, names):
                return Decision(True, f"allow rule {r.text!r}")
        if self.allow:
            return Decision(False, "no [outbound] allow rule matches")
        why = address_class(addr)
        if why is not None:
            return Decision(False, f"default policy: {why} address")
        return Decision(True, "default policy: public address")

    def to_json(self) -> dict:
        """A JSON-able form (rule texts), for deployment records."""
        return {"allow": [r.text for r in self.allow], "deny": [r.text for r in self.deny],
                "ca_pem": self.ca_pem, "max_sockets": self.max_sockets}

    @classmethod
    def from_json(cls, d: dict | None) -> "Policy":
        """Inverse of :meth:`to_json`; ``None`` or ``{}`` gives the default policy."""
        d = d or {}
        return cls.build(d.get("allow", ()), d.get("deny", ()), ca_pem=d.get("ca_pem", ""),
                         max_sockets=d.get("max_sockets", 256))


#: The default policy: public internet only.
DEFAULT = Policy()


def describe_refusal(host: str, port: int, names: Sequence[str], decision: Decision) -> str:
    """The text a refused guest connect reports (and the host logs)."""
    dest = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    via = f" ({', '.join(sorted(set(names)))})" if names else ""
    return (f"outbound connection to {dest}{via} refused by the egress policy: "
            f"{decision.rule} (configure [outbound] allow/deny in pyworkers.toml)")
