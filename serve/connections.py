"""uvicorn's HTTP/1.1 protocol (h11) with what a server facing hostile clients needs:

- a connection that never sends a request is closed after ``--keep-alive-timeout`` (uvicorn
  starts that timer only after a first response);
- the arrival time of a request's bytes is kept for ``--trace-phases``
  (:data:`pyworkers.serve.phases.arrived_ns`);
- the front can *abort* a connection (:func:`abort`): when a response that already started
  cannot be completed (request timeout, isolate lost), uvicorn's ``transport.close()`` would
  wait for the write buffer to drain, forever for a client that does not read; aborting drops
  the buffer and the socket at once.

Connections are found by the client address of the ASGI scope (unique per open connection).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from pyworkers.serve import phases

_open: dict[tuple, "ServeH11Protocol"] = {}


class ServeH11Protocol(H11Protocol):
    """``uvicorn.Config(http=ServeH11Protocol)`` (see the module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client:
            _open[tuple(self.client)] = self
        if self.timeout_keep_alive_task is None:  # idle until the first request, too
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        # the arrival time of a request's bytes, for --trace-phases (uvicorn's request task,
        # started from here, copies the context)
        phases.arrived_ns.set(time.monotonic_ns())
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client and _open.get(tuple(self.client)) is self:
            del _open[tuple(self.client)]
        super().connection_lost(exc)


def abort(client: Any) -> bool:
    """Abort the connection of ASGI ``scope["client"]`` (``(host, port)``) if it is open;
    returns whether one was. Call on the server's loop."""
    if not client:
        return False
    proto = _open.get(tuple(client))
    if proto is None or proto.transport is None:
        return False
    proto.transport.abort()
    return True


__all__ = ["ServeH11Protocol", "abort"]
