"""The HTTP front of ``pyworkers serve``: the ASGI app uvicorn runs, forwarding each HTTP
request and WebSocket into an isolate of the deployment it is addressed to
(:mod:`pyworkers.serve.routing`).

One request, followed end to end: uvicorn calls :class:`ServerApp` -> :func:`route` picks the
deployment -> :meth:`Pool.acquire` the least-loaded isolate with room -> :meth:`Worker.open` a
conversation and push ``H_HTTP`` (scope + first body chunk) through the isolate's channel ->
the guest's loop (``runtime/guest/_pyworkers_serve.py``) runs the app's task -> each ``send()``
of the app is a frame back, put on the conversation's queue -> :class:`HttpExchange` forwards
it to uvicorn at once.

Faults stay local to the request; responses made by the host carry
``x-pyworkers-fault: exception|crash|memory|timeout|unavailable|startup|too-large``:

- the app raised before starting a response: ``500`` (traceback logged; ``MemoryError``
  also recycles the isolate); a response that started and cannot complete closes the
  connection (as uvicorn does);
- ``request_timeout`` passed: that request's task is cancelled in the guest, the client gets
  ``504``; the isolate's other requests go on;
- the isolate died (trap, abort, out of memory): ``500`` for each of its requests; guest code
  stuck without awaiting past the CPU watchdog: ``504``; the pool replaces the isolate;
- no isolate with room within ``queue_timeout``: ``503``; a body over ``max_body_size``:
  ``413`` before the app sees it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Mapping

from pyworkers.serve import connections
from pyworkers.serve.config import ServeConfig
from pyworkers.serve.errors import PoolUnavailable, ServeError
from pyworkers.serve.pool import Pool
from pyworkers.serve.protocol import GuestMessage, IsolateLost, encode_scope, wire
from pyworkers.serve.routing import route
from pyworkers.serve.worker import Conversation, IsolateFactory

log = logging.getLogger("pyworkers.serve")

_STATUS_TEXT = {500: "Internal Server Error", 503: "Service Unavailable",
                504: "Gateway Timeout", 413: "Content Too Large", 408: "Request Timeout"}


#: bytes of WebSocket messages the host forwards to an isolate before it waits for the guest
WS_BUFFER = 8 << 20


class ResponseAborted(Exception):
    """Raised to uvicorn when a response that already started cannot be completed: uvicorn
    then closes the connection."""


class ServerApp:
    """The ASGI app ``pyworkers serve`` runs under uvicorn.

    ``targets`` maps deployment names to :data:`IsolateFactory` callables (one :class:`Pool`
    each). Lifespan: startup boots every pool (a deployment that cannot boot fails the
    server's startup), then runs ``on_startup`` callables ``(app) -> None | awaitable``;
    shutdown drains every pool. :meth:`swap` redeploys or adds a deployment.
    """

    def __init__(self, targets: Mapping[str, IsolateFactory], config: ServeConfig,
                 on_startup: list[Callable[["ServerApp"], Any]] | None = None,
                 env_sources: Mapping[str, Callable[[], dict]] | None = None,
                 bindings: Mapping[str, Any] | None = None,
                 metrics: Any = None, admin: Any = None, admin_port: int | None = None,
                 unavailable: Mapping[str, str] | None = None):
        if not targets and not unavailable:
            raise ServeError("no deployments to serve")
        #: workers that cannot be served now, with the reason (``503`` for their requests
        #: until a deployment of theirs can be restored)
        self.unavailable: dict[str, str] = dict(unavailable or {})
        self.config = config
        #: optional :class:`pyworkers.serve.admin.Metrics`; ``admin`` answers requests that
        #: arrive on ``admin_port`` (the admin socket uvicorn also listens on)
        self.metrics = metrics
        self.admin, self.admin_port = admin, admin_port
        self.env_sources = dict(env_sources or {})
        #: per deployment name, a :class:`~pyworkers.serve.worker.BindingHost` (a factory's
        #: own ``bindings`` attribute wins)
        self.bindings = dict(bindings or {})
        self.pools: dict[str, Pool] = {name: self._pool(name, f) for name, f in targets.items()}
        self.on_startup = list(on_startup or [])
        self.started = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending_upgrades: list = []

    def _pool(self, name: str, factory: IsolateFactory) -> Pool:
        return Pool(name, factory, self.config.policy(), self.config.times(),
                    env_source=self.env_sources.get(name), metrics=self.metrics,
                    bindings=self.bindings.get(name))

    # ------------------------------------------------------------------ ASGI entry
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if self.admin_port is not None and kind != "lifespan" \
                and (scope.get("server") or (None, None))[1] == self.admin_port:
            await self.admin(scope, receive, send)
            return
        if kind == "http":
            if self.metrics is None:
                await self._http(scope, receive, send)
                return
            t0 = time.monotonic()
            seen = {"status": 500, "name": None}

            async def counted(message: dict) -> None:
                if message["type"] == "http.response.start":
                    seen["status"] = message["status"]
                await send(message)

            try:
                seen["name"] = await self._http(scope, receive, counted)
            finally:
                self.metrics.on_request(seen["name"] or "-", seen["status"],
                                        time.monotonic() - t0)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except BaseException as e:  # noqa: BLE001 - reported to uvicorn
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Boot every pool concurrently. A deployment that fails to start is served as
        unavailable (``503``) while the others serve; if none starts, raise the first failure,
        naming the deployment."""
        names = list(self.pools)
        if not names:
            raise ServeError("no deployment can be served: "
                             + "; ".join(f"{n}: {r}" for n, r in self.unavailable.items()))
        results = await asyncio.gather(*(self.pools[n].start() for n in names),
                                       return_exceptions=True)
        failed = [(n, r) for n, r in zip(names, results) if isinstance(r, BaseException)]
        if len(failed) == len(names):  # nothing can be served
            name, r = failed[0]
            raise ServeError(f"deployment {name!r} failed to start: {r}") from r
        for name, r in failed:
            log.error("[%s] cannot start, answering 503 until it is redeployed: %s", name, r)
            await self.pools.pop(name).close()
            self.unavailable[name] = f"failed to start: {r}"
        self.started = True
        self.loop = asyncio.get_running_loop()
        pending, self.pending_upgrades = self.pending_upgrades, []
        for name, current, factory in pending:
            asyncio.ensure_future(self._upgrade(name, current, factory))
        for cb in self.on_startup:
            res = cb(self)
            if asyncio.iscoroutine(res):
                await res

    async def shutdown(self) -> None:
        """Drain and stop every pool."""
        await asyncio.gather(*(p.close() for p in self.pools.values()), return_exceptions=True)

    async def swap(self, name: str, factory: IsolateFactory) -> int:
        """Serve ``factory`` as deployment ``name``: a new pool if ``name`` is new, else a
        switch without dropping requests. Returns the pool's generation. Raises what booting
        the new isolates raises (the old deployment keeps serving)."""
        pool = self.pools.get(name)
        if pool is None:
            pool = self._pool(name, factory)
            try:
                await pool.start()
            except BaseException:
                await pool.close()
                raise
            self.pools[name] = pool
            self.unavailable.pop(name, None)
            log.info("[%s] deployment added", name)
            return pool.deployment_generation
        return await pool.swap(factory)

    def upgrader(self, name: str, current: Callable[[], bool]) -> Callable[[IsolateFactory], None]:
        """A thread-safe ``upgrade(factory)`` callback for
        :func:`pyworkers.serve.targets.deployment_factory`: once started, it switches pool
        ``name`` to ``factory`` if ``current()`` still says its deployment is the one served."""
        def upgrade(factory: IsolateFactory) -> None:
            loop = self.loop
            if loop is None or loop.is_closed():
                self.pending_upgrades.append((name, current, factory))
                return
            asyncio.run_coroutine_threadsafe(self._upgrade(name, current, factory), loop)

        return upgrade

    async def _upgrade(self, name: str, current: Callable[[], bool],
                       factory: IsolateFactory) -> None:
        pool = self.pools.get(name)
        if pool is None or not current():
            return
        try:
            await pool.upgrade(factory)
        except Exception as e:  # noqa: BLE001 - the copy-mode isolates keep serving
            log.error("[%s] upgrade to copy-on-write restores failed: %s", name, e)

    def _names(self) -> list[str]:
        return [*self.pools, *(n for n in self.unavailable if n not in self.pools)]

    # ------------------------------------------------------------------ HTTP
    async def _http(self, scope: dict, receive: Callable, send: Callable) -> str | None:
        """Forward one HTTP request; returns the deployment name it went to (or None)."""
        routed = route(scope, self._names())
        if routed is None:
            names = ", ".join(sorted(self._names()))
            await _plain(send, 404, "no deployment matches this request: use /<name>/... or a "
                         f"Host header <name>.localhost; deployments: {names}\n", None)
            return None
        name, root_path = routed
        if name in self.unavailable:
            await _plain(send, 503, f"Service Unavailable: worker {name} cannot be served "
                         "now (see the server log)\n", "unavailable")
            return name
        length = _content_length(scope)
        if length is not None and length > self.config.max_body_size:
            await _plain(send, 413, f"request body over {self.config.max_body_size} bytes\n",
                         "too-large", close=True)
            return name
        if _has(scope, b"transfer-encoding") and _has(scope, b"content-length"):
            # RFC 9112 6.1: ambiguous framing (a request smuggling vector): refuse and close
            await _plain(send, 400, "Bad Request: both Content-Length and Transfer-Encoding\n",
                         None, close=True)
            return name
        try:
            first = await asyncio.wait_for(receive(), self.config.request_timeout)
        except asyncio.TimeoutError:
            await _plain(send, 408, "Request Timeout\n", "timeout", close=True)
            return name
        if first["type"] != "http.request":
            return name  # the client went away before its request arrived
        pool = self.pools[name]
        try:
            worker = await pool.acquire(self.config.queue_timeout)
        except PoolUnavailable as e:
            log.warning("[%s] 503 for %s %s: %s", name, scope["method"], scope["path"], e)
            await _plain(send, 503, "Service Unavailable\n",
                         "startup" if e.reason == "startup" else "unavailable")
            return name
        conv = worker.open("http", f"{scope['method']} {scope['path']}")
        client = scope.get("client")
        ex = HttpExchange(conv, receive, send, request_timeout=self.config.request_timeout,
                          max_body_size=self.config.max_body_size,
                          abort=lambda: connections.abort(client))
        await ex.run(dict(scope, root_path=root_path), first)
        return name

    # ------------------------------------------------------------------ WebSocket
    async def _websocket(self, scope: dict, receive: Callable, send: Callable) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        routed = route(scope, self._names())
        if routed is None or routed[0] in self.unavailable:
            await send({"type": "websocket.close", "code": 1008 if routed is None else 1013})
            return
        name, root_path = routed
        try:
            worker = await self.pools[name].acquire(self.config.queue_timeout)
        except PoolUnavailable as e:
            log.warning("[%s] WebSocket %s refused: %s", name, scope["path"], e)
            await send({"type": "websocket.close", "code": 1013})
            return
        conv = worker.open("websocket", f"WebSocket {scope['path']}")
        if self.metrics is not None:
            self.metrics.on_websocket(name)
        await _WebSocketExchange(conv, receive, send).run(dict(scope, root_path=root_path))


class HttpExchange:
    """One HTTP request forwarded into one conversation: ``receive``/``send`` are the ASGI
    callables of the client side (uvicorn's, or in-memory ones in
    :mod:`pyworkers.serve.oneshot`); ``request_timeout`` in seconds, ``max_body_size`` in
    bytes. :meth:`run` returns when the response is complete (the app's task may go on)."""

    def __init__(self, conv: Conversation, receive: Callable, send: Callable, *,
                 request_timeout: float, max_body_size: int,
                 abort: Callable[[], Any] | None = None):
        self.conv, self.receive, self.send = conv, receive, send
        #: drops the client connection at once (a started response that cannot complete)
        self.abort = abort
        self.request_timeout, self.max_body_size = request_timeout, max_body_size
        self.started = self.complete = False
        self.received = 0
        #: the host's fault, if it answered for the app (``"exception"``, ``"timeout"``...)
        self.fault: str | None = None
        #: the app's exception (guest data) when it raised before responding
        self.error: dict | None = None
        self.deadline = time.monotonic() + request_timeout
        self.watcher: asyncio.Task | None = None

    @property
    def where(self) -> str:
        return f"[{self.conv.worker.id}] {self.conv.what}"

    async def run(self, scope: dict, first: dict) -> None:
        body = bytes(first.get("body", b""))
        more = bool(first.get("more_body", False))
        self.received = len(body)
        self.conv.push(wire.H_HTTP, encode_scope(scope, more_body=more), body)
        if not more:
            self._watch_disconnect()
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

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError()
        return left

    async def _pump(self) -> None:
        q = self.conv.queue
        while True:
            msg = await asyncio.wait_for(q.get(), self._left())
            if isinstance(msg, IsolateLost):
                await self._lost(msg)
                return
            kind = msg.kind
            if kind == wire.G_START:
                self.started = True
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
                    return  # background work goes on in the guest; G_DONE is logged there
            elif kind == wire.G_NEED_BODY:
                await self._next_body()
            elif kind == wire.G_DONE:
                await self._done(msg)
                return

    async def _send(self, message: dict) -> None:
        """Send to the client within the request deadline (a client that does not read holds
        only this request, and only until then)."""
        await asyncio.wait_for(self.send(message), self._left())

    async def _next_body(self) -> None:
        ev = await asyncio.wait_for(self.receive(), self._left())
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
        """Once the body is in, uvicorn's receive() only reports a disconnect: pass it on."""
        async def watch() -> None:
            ev = await self.receive()
            if ev["type"] == "http.disconnect" and not self.complete:
                self.conv.push(wire.H_DISCONNECT)

        self.watcher = asyncio.ensure_future(watch())

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
            await _plain(self.send, 500, "Internal Server Error\n", fault)
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
            await _plain(self.send, status, _STATUS_TEXT.get(status, "Error") + "\n", fault,
                         close=status in (413, 504))
        elif not self.complete:
            if self.abort is not None:  # do not wait for a client that may never read
                asyncio.get_running_loop().call_soon(self.abort)
            raise ResponseAborted(f"{self.where}: {message}")


class _Finished(Exception):
    pass


class _WebSocketExchange:
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


def _has(scope: dict, name: bytes) -> bool:
    return any(k == name for k, _ in scope.get("headers", ()))


def _content_length(scope: dict) -> int | None:
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


async def _plain(send: Callable, status: int, text: str, fault: str | None,
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


__all__ = ["HttpExchange", "ResponseAborted", "ServerApp"]
