"""Which deployment a request is for (``pyworkers serve`` with several workers).

First rule that matches:

1. ``Host: <name>.localhost[:port]`` -> deployment ``name`` (names compared case-insensitively,
   as host names are); ``path`` and ``root_path`` as received.
2. Path ``/<name>`` or ``/<name>/...`` -> deployment ``name`` with ``root_path`` ``/<name>``
   (the ASGI convention uvicorn's ``--root-path`` follows: ``path`` and ``raw_path`` keep the
   prefix, the app's router strips ``root_path``).
3. Exactly one deployment served -> that one, unchanged (``pyworkers serve app/`` answers at
   ``/`` like ``uvicorn main:app``).
4. Otherwise no match (the front answers ``404`` listing the deployments).
"""
from __future__ import annotations

from typing import Collection


def route(scope: dict, names: Collection[str]) -> tuple[str, str] | None:
    """``(deployment name, root_path)`` for an HTTP or WebSocket ``scope``, or ``None``."""
    host = b""
    for k, v in scope.get("headers", ()):
        if k == b"host":
            host = v
            break
    if host:
        hostname = host.decode("latin-1").rsplit(":", 1)[0].lower()
        if hostname.endswith(".localhost"):
            wanted = hostname[: -len(".localhost")]
            for name in names:
                if name.lower() == wanted:
                    return name, scope.get("root_path", "")
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    rel = path[len(root):] if root and path.startswith(root) else path
    first = rel.split("/", 2)[1] if rel.startswith("/") else ""
    if first and first in names:
        return first, root + "/" + first
    if len(names) == 1:
        return next(iter(names)), root
    return None


__all__ = ["route"]
