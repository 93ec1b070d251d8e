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
import collections
import gc
import logging
import time
from typing import Any, Callable, Mapping

from pyworkers.serve import connections
from pyworkers.serve.config import ServeConfig
from pyworkers.serve.errors import PoolUnavailable, ServeError
from pyworkers.serve.exchange import (HttpExchange, ResponseAborted, WebSocketExchange,
                                      content_length, has_header, plain_response)
from pyworkers.serve.phases import RequestTrace, arrived_ns, write_traces
from pyworkers.serve.pool import Pool
from pyworkers.serve.routing import route
from pyworkers.serve.factory import IsolateFactory

log = logging.getLogger("pyworkers.serve")


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
        #: :class:`~pyworkers.serve.phases.RequestTrace` of each HTTP request served, when
        #: ``config.trace_phases`` (the last 100,000)
        self.traces: collections.deque = collections.deque(maxlen=100_000)

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
        _freeze_host_heap()
        pending, self.pending_upgrades = self.pending_upgrades, []
        for name, current, factory in pending:
            asyncio.ensure_future(self._upgrade(name, current, factory))
        for cb in self.on_startup:
            res = cb(self)
            if asyncio.iscoroutine(res):
                await res

    async def shutdown(self) -> None:
        """Drain and stop every pool; write the request traces to ``config.trace_file``."""
        await asyncio.gather(*(p.close() for p in self.pools.values()), return_exceptions=True)
        if self.config.trace_phases and self.config.trace_file:
            n = write_traces(self.config.trace_file, self.traces)
            log.info("wrote %d request traces to %s", n, self.config.trace_file)

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
        trace = RequestTrace(arrived=arrived_ns.get()) if self.config.trace_phases else None
        routed = route(scope, self._names())
        if routed is None:
            names = ", ".join(sorted(self._names()))
            await plain_response(send, 404, "no deployment matches this request: use /<name>/... or a "
                         f"Host header <name>.localhost; deployments: {names}\n", None)
            return None
        name, root_path = routed
        if name in self.unavailable:
            await plain_response(send, 503, f"Service Unavailable: worker {name} cannot be served "
                         "now (see the server log)\n", "unavailable")
            return name
        length = content_length(scope)
        if length is not None and length > self.config.max_body_size:
            await plain_response(send, 413, f"request body over {self.config.max_body_size} bytes\n",
                         "too-large", close=True)
            return name
        if has_header(scope, b"transfer-encoding") and has_header(scope, b"content-length"):
            # RFC 9112 6.1: ambiguous framing (a request smuggling vector): refuse and close
            await plain_response(send, 400, "Bad Request: both Content-Length and Transfer-Encoding\n",
                         None, close=True)
            return name
        try:
            first = await asyncio.wait_for(receive(), self.config.request_timeout)
        except asyncio.TimeoutError:
            await plain_response(send, 408, "Request Timeout\n", "timeout", close=True)
            return name
        if first["type"] != "http.request":
            return name  # the client went away before its request arrived
        pool = self.pools[name]
        t_acquire = time.monotonic_ns()
        try:
            worker = await pool.acquire(self.config.queue_timeout)
        except PoolUnavailable as e:
            log.warning("[%s] 503 for %s %s: %s", name, scope["method"], scope["path"], e)
            await plain_response(send, 503, "Service Unavailable\n",
                         "startup" if e.reason == "startup" else "unavailable")
            return name
        if trace is not None:
            trace.queue_ns = time.monotonic_ns() - t_acquire
        conv = worker.open("http", f"{scope['method']} {scope['path']}")
        client = scope.get("client")
        ex = HttpExchange(conv, receive, send, request_timeout=self.config.request_timeout,
                          max_body_size=self.config.max_body_size,
                          abort=lambda: connections.abort(client), trace=trace)
        await ex.run(dict(scope, root_path=root_path), first)
        if trace is not None:
            self.traces.append(trace)
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
        await WebSocketExchange(conv, receive, send).run(dict(scope, root_path=root_path))


def _freeze_host_heap() -> None:
    """Collect, then move every object of the started server (modules, pools, isolates' host
    state) to the cyclic GC's permanent generation (``gc.freeze``): later collections only walk
    what requests allocate. Measured before: with ~62,000 host objects, a full collection took
    ~20 ms and young ones up to 14 ms, each landing on some request (p99)."""
    gc.collect()
    gc.freeze()


__all__ = ["HttpExchange", "ResponseAborted", "ServerApp"]
