"""The typed host<->guest ASGI protocol of ``pyworkers serve``.

The byte format (frames: kind, conversation id, JSON metadata, raw body) is defined once, in
the guest module ``runtime/guest/_pyworkers_wire.py``, which the guest imports as
``_pyworkers_wire`` and the host as :data:`wire`. This module gives the host side its types:
the scope fields forwarded to the guest and the messages the guest sends back, decoded into
:class:`GuestMessage` values (like uvicorn's ``_types.py`` for ASGI messages).

Host -> guest events (``wire.H_*``): lifespan startup, a new HTTP request (scope + first body
chunk), a body chunk, client disconnect, WebSocket connect/receive/disconnect, cancel (request
timeout), ack (a streamed chunk reached the client), environment (secrets), stop (drain).
Guest -> host (``wire.G_*``): ready, lifespan messages, response start/body, "needs body",
done (with the app's exception, if any), WebSocket accept/send/close, stopped, log.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Literal, TypedDict

#: the shared wire format (see the module docstring)
wire = importlib.import_module("pyworkers.runtime.guest._pyworkers_wire")

#: guest path of the channel device the guest opens (see ``pyworkers.runtime.streams.Channel``)
CHANNEL_PATH = "/dev/pyworkers/channel"


class ScopeFields(TypedDict, total=False):
    """HTTP/WebSocket scope keys the host forwards (ASGI HTTP spec 2.3 / WebSocket 2.4,
    https://asgi.readthedocs.io/en/latest/specs/www.html); the guest adds ``type``, ``asgi``
    and ``state``."""

    http_version: str
    method: str
    scheme: str
    path: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: list[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    subprotocols: list[str]


#: scope keys forwarded from the front server
SCOPE_KEYS = ("http_version", "method", "scheme", "path", "raw_path", "query_string",
              "root_path", "headers", "client", "server", "subprotocols")


class GuestErrorInfo(TypedDict):
    """An exception raised by the app in the guest."""

    type: str
    module: str
    message: str
    traceback: str


@dataclasses.dataclass(slots=True)
class GuestMessage:
    """One decoded guest -> host frame.

    ``kind`` is a ``wire.G_*`` constant, ``cid`` the conversation (0: lifespan), ``meta`` the
    frame's JSON metadata, ``body`` its raw bytes. Accessors give the typed fields."""

    kind: int
    cid: int
    meta: dict[str, Any]
    body: bytes = b""

    @property
    def status(self) -> int:
        return int(self.meta["status"])

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return wire.headers_in(self.meta.get("headers"))

    @property
    def more_body(self) -> bool:
        return bool(self.meta.get("more_body", False))

    @property
    def error(self) -> GuestErrorInfo | None:
        return self.meta.get("error")


#: a message the host makes itself when the isolate dies under a conversation
@dataclasses.dataclass(slots=True)
class IsolateLost:
    """The isolate serving the conversation is gone: ``fault`` is ``"crash"``, ``"timeout"``
    (CPU watchdog) or ``"unavailable"`` (stopped); ``reason`` the isolate's death reason."""

    fault: Literal["crash", "timeout", "unavailable", "memory"]
    reason: str


def encode_scope(scope: dict, **extra: Any) -> dict[str, Any]:
    """The JSON metadata of ``H_HTTP``/``H_WS_CONNECT`` for an ASGI ``scope`` (only
    :data:`SCOPE_KEYS` are forwarded) plus ``extra`` keys."""
    fields = {k: scope[k] for k in SCOPE_KEYS if k in scope}
    meta = wire.scope_out(fields)
    meta.update(extra)
    return meta


def frame(kind: int, cid: int, meta: dict | None = None, body: bytes = b"") -> bytes:
    """One host -> guest frame."""
    return wire.encode(kind, cid, meta, body)


__all__ = ["CHANNEL_PATH", "GuestErrorInfo", "GuestMessage", "IsolateLost", "SCOPE_KEYS",
           "ScopeFields", "encode_scope", "frame", "wire"]
