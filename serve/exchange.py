"""One HTTP request or WebSocket forwarded into a conversation of a worker (the request path of
:class:`pyworkers.serve.front.ServerApp` and :mod:`pyworkers.serve.oneshot`): the ASGI
``receive``/``send`` of the client side on one end, the conversation's frames on the other,
with the request deadline, body limits, back-pressure and the host's fault responses
(``x-pyworkers-fault``, see :mod:`pyworkers.serve.front`)."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from pyworkers.serve.phases import RequestTrace
from pyworkers.serve.protocol import GuestMessage, IsolateLost, encode_scope, wire
from pyworkers.serve.worker import Conversation

log = logging.getLogger("pyworkers.serve")

_STATUS_TEXT = {500: "Internal Server Error", 503: "Service Unavailable",
                504: "Gateway Timeout", 413: "Content Too Large", 408: "Request Timeout"}

#: bytes of WebSocket messages the host forwards to an isolate before it waits for the guest
WS_BUFFER = 8 << 20
#: seconds after its body is in before a request's client is watched for a disconnect
WATCH_AFTER = 0.02


class ResponseAborted(Exception):
    """Raised to uvicorn when a response that already started cannot be completed: uvicorn
    then closes the connection."""


class HttpExchange:
    """One HTTP request forwarded into one conversation: ``receive``/``send`` are the ASGI
    callables of the client side (uvicorn's, or in-memory ones in
    :mod:`pyworkers.serve.oneshot`); ``request_timeout`` in seconds, ``max_body_size`` in
    bytes. :meth:`run` returns when the response is complete (the app's task may go on)."""

    def __init__(self, conv: Conversation, receive: Callable, send: Callable, *,
                 request_timeout: float, max_body_size: int,
                 abort: Callable[[], Any] | None = None, trace: RequestTrace | None = None):
        self.conv, self.receive, self.send = conv, receive, send
        #: clock readings of this request (``--trace-phases``), filled in as it goes
        self.trace = trace
        #: drops the client connection at once (a started response that cannot complete)
        self.abort = abort
        self.request_timeout, self.max_body_size = request_timeout, max_body_size
        self.started = self.complete = False
        self.received = 0
        #: the host's fault, if it answered for the app (``"exception"``, ``"timeout"``...)
        self.fault: str | None = None
        #: the app's exception (guest data) when it raised before responding
        self.error: dict | None = None
        #: the request deadline on the loop's clock: one timer covers the whole exchange
        self._loop_deadline = asyncio.get_running_loop().time() + request_timeout
        self.watcher: asyncio.Task | None = None
        self._watch_later: asyncio.TimerHandle | None = None

    @property
    def where(self) -> str:
        return f"[{self.conv.worker.id}] {self.conv.what}"

    async def run(self, scope: dict, first: dict) -> None:
        body = bytes(first.get("body", b""))
        more = bool(first.get("more_body", False))
        self.received = len(body)
        meta = encode_scope(scope, more_body=more)
        if self.trace is not None:
            meta["trace"] = 1
            self.trace.worker = self.conv.worker.id
            self.conv.trace = self.trace  # the worker adds the guest's readings (G_DONE)
            self.trace.pushed = time.monotonic_ns()
        if not more:
            self._watch_disconnect()
        self.conv.push(wire.H_HTTP, meta, body)
        try:
            await self._pump()
        except asyncio.TimeoutError:
            self.conv.push(wire.H_CANCEL, {"reason": "request timeout"})
            await self._fail(504, "timeout", "request timed out after "
                             f"{self.request_timeout:g} s (its task was cancelled)")
        except _Finished:
            pass
        except asyncio.CancelledError:
            self.conv.push(wire.H_CANCEL, {"reason": "the server cancelled the request"})
            raise
        finally:
            self.conv.detach()
            if self.watcher is not None:
                self.watcher.cancel()
            if self._watch_later is not None:
                self._watch_later.cancel()

    async def _pump(self) -> None:
        """Forward the guest's messages until the response is complete, all under the request
        deadline (``TimeoutError``): reading the body, the app, sending to the client."""
        async with asyncio.timeout_at(self._loop_deadline):
            await self._forward()

    async def _forward(self) -> None:
        q = self.conv.queue
        while True:
            msg = await q.get()
            if isinstance(msg, IsolateLost):
                await self._lost(msg)
                return
            kind = msg.kind
            if kind == wire.G_START:
                self.started = True
                if self.trace is not None:
                    self.trace.start_rx = time.monotonic_ns()
                    self.trace.status = msg.status
                await self._send({"type": "http.response.start", "status": msg.status,
                                  "headers": msg.headers,
                                  "trailers": bool(msg.meta.get("trailers", False))})
            elif kind == wire.G_BODY:
                more = msg.more_body
                await self._send({"type": "http.response.body", "body": msg.body,
                                  "more_body": more})
                if more:
                    self.conv.push(wire.H_ACK)
                else:
                    self.complete = True
                    if self.trace is not None:
                        self.trace.sent = time.monotonic_ns()
                    return  # background work goes on in the guest; G_DONE is logged there
            elif kind == wire.G_NEED_BODY:
                await self._next_body()
            elif kind == wire.G_DONE:
                await self._done(msg)
                return

    async def _send(self, message: dict) -> None:
        """Send to the client (within the request deadline of :meth:`_pump`: a client that does
        not read holds only this request, and only until then)."""
        await self.send(message)

    async def _next_body(self) -> None:
        ev = await self.receive()
        if ev["type"] == "http.request":
            chunk = bytes(ev.get("body", b""))
            self.received += len(chunk)
            if self.received > self.max_body_size:
                self.conv.push(wire.H_DISCONNECT)
                await self._fail(413, "too-large", f"request body over {self.max_body_size} bytes")
                raise _Finished()
            more = bool(ev.get("more_body", False))
            self.conv.push(wire.H_BODY, {"more_body": more}, chunk)
            if not more:
                self._watch_disconnect()
        else:
            self.conv.push(wire.H_DISCONNECT)

    def _watch_disconnect(self) -> None:
        """Once the body is in, uvicorn's receive() only reports a disconnect: pass it on.
        The watching task starts :data:`WATCH_AFTER` seconds later (most responses are complete
        by then: a task per request costs more than the whole front), so a disconnect
        reaches the app at most that late."""
        async def watch() -> None:
            ev = await self.receive()
            if ev["type"] == "http.disconnect" and not self.complete:
                self.conv.push(wire.H_DISCONNECT)

        def start() -> None:
            self._watch_later = None
            if not self.complete:
                self.watcher = asyncio.ensure_future(watch())

        self._watch_later = asyncio.get_running_loop().call_later(WATCH_AFTER, start)

    async def _done(self, msg: GuestMessage) -> None:
        err = msg.error
        fault = "exception"
        if err:
            log.error("%s: Exception in ASGI application\n%s", self.where,
                      err["traceback"].rstrip() or f"{err['type']}: {err['message']}")
            if err["type"] == "MemoryError":
                fault = "memory"
        if not self.started:
            if not err:
                log.error("%s: ASGI callable returned without starting response.", self.where)
            self.started, self.fault = True, fault
            self.error = err
            await plain_response(self.send, 500, "Internal Server Error\n", fault)
        elif not self.complete:
            if not err:
                log.error("%s: ASGI callable returned without completing response.",
                          self.where)
            raise ResponseAborted(f"{self.where}: the response was not completed")

    async def _lost(self, msg: IsolateLost) -> None:
        status = 504 if msg.fault == "timeout" else 503 if msg.fault == "unavailable" else 500
        what = {"timeout": "request timed out: the guest ran without awaiting and was "
                           "interrupted", "unavailable": "isolate stopped"}.get(
            msg.fault, "isolate crashed")
        await self._fail(status, msg.fault, f"{what}: {msg.reason}")

    async def _fail(self, status: int, fault: str, message: str) -> None:
        (log.warning if status in (413, 504) else log.error)("%s: %s", self.where, message)
        self.fault = fault
        if not self.started:
            self.started = True
            await plain_response(self.send, status, _STATUS_TEXT.get(status, "Error") + "\n", fault,
                         close=status in (413, 504))
        elif not self.complete:
            if self.abort is not None:  # do not wait for a client that may never read
                asyncio.get_running_loop().call_soon(self.abort)
            raise ResponseAborted(f"{self.where}: {message}")


class _Finished(Exception):
    pass


class WebSocketExchange:
    """One WebSocket forwarded into one conversation (no request timeout: it lives as long
    as both sides keep it; the CPU watchdog still applies to the guest)."""

    def __init__(self, conv: Conversation, receive: Callable, send: Callable):
        self.conv, self.receive, self.send = conv, receive, send
        self.accepted = self.closed = False

    async def run(self, scope: dict) -> None:
        self.conv.push(wire.H_WS_CONNECT, encode_scope(scope))
        reader = asyncio.ensure_future(self._read())
        try:
            while True:
                msg = await self.conv.queue.get()
                if isinstance(msg, IsolateLost):
                    log.error("[%s] %s: isolate lost: %s", self.conv.worker.id, self.conv.what,
                              msg.reason)
                    await self._close(1011, "")
                    return
                if msg.kind == wire.G_WS_ACCEPT:
                    self.accepted = True
                    await self._send({"type": "websocket.accept",
                                      "subprotocol": msg.meta.get("subprotocol"),
                                      "headers": msg.headers})
                elif msg.kind == wire.G_WS_SEND:
                    if msg.meta.get("text"):
                        await self._send({"type": "websocket.send",
                                          "text": msg.body.decode("utf-8", "replace")})
                    else:
                        await self._send({"type": "websocket.send", "bytes": msg.body})
                elif msg.kind == wire.G_WS_CLOSE:
                    await self._close(int(msg.meta.get("code", 1000)),
                                      str(msg.meta.get("reason", "")))
                elif msg.kind == wire.G_DONE:
                    err = msg.error
                    if err and err["type"] != "CancelledError":
                        log.error("[%s] %s: Exception in ASGI application\n%s",
                                  self.conv.worker.id, self.conv.what, err["traceback"].rstrip())
                    await self._close(1011 if err else 1000, "")
                    return
        finally:
            reader.cancel()
            self.conv.detach()

    async def _send(self, message: dict) -> None:
        if self.closed:
            return
        try:
            await self.send(message)
        except (OSError, RuntimeError) as e:  # the client is gone
            log.debug("[%s] %s: send after disconnect (%s)", self.conv.worker.id,
                      self.conv.what, e)
            self.closed = True

    async def _close(self, code: int, reason: str) -> None:
        if not self.closed:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
            self.closed = True

    async def _read(self) -> None:
        while True:
            # back-pressure: stop reading the client while the guest has not taken what was
            # forwarded (the host never buffers more than ~WS_BUFFER bytes per isolate)
            ch = self.conv.worker.channel
            while ch is not None and ch.pending > WS_BUFFER:
                await asyncio.sleep(0.005)
            ev = await self.receive()
            t = ev["type"]
            if t == "websocket.receive":
                if ev.get("text") is not None:
                    self.conv.push(wire.H_WS_RECEIVE, {"text": True}, ev["text"].encode("utf-8"))
                else:
                    self.conv.push(wire.H_WS_RECEIVE, None, bytes(ev.get("bytes") or b""))
            elif t == "websocket.disconnect":
                self.closed = True
                self.conv.push(wire.H_WS_DISCONNECT, {"code": int(ev.get("code", 1005)),
                                                      "reason": str(ev.get("reason") or "")})
                return


def has_header(scope: dict, name: bytes) -> bool:
    return any(k == name for k, _ in scope.get("headers", ()))


def content_length(scope: dict) -> int | None:
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


async def plain_response(send: Callable, status: int, text: str, fault: str | None,
                 close: bool = False) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode())]
    if fault:
        headers.append((b"x-pyworkers-fault", fault.encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


__all__ = ["HttpExchange", "ResponseAborted", "WS_BUFFER", "WebSocketExchange", "content_length",
           "has_header", "plain_response"]
