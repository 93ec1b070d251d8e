"""The errors of :mod:`pyworkers.registry` (one root class, :class:`RegistryError`)."""
from __future__ import annotations

__all__ = ["RegistryError", "RegistryUnreachable", "RegistryAuthError", "DigestMismatch",
           "NotFound"]


class RegistryError(Exception):
    """A registry problem; ``str(e)`` is one line naming the registry, the object and the fix."""


class RegistryUnreachable(RegistryError):
    """The registry did not answer (connection refused, DNS, timeout, TLS handshake)."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials (or wants some and none were given)."""


class DigestMismatch(RegistryError):
    """Content received from the registry does not have the digest it was asked for: refused."""


class NotFound(RegistryError):
    """The registry has no such manifest, tag or blob (HTTP 404)."""
