"""The HTTP front of ``pyworkers serve``: an ASGI app (run by uvicorn) that forwards every
request into an isolate of the deployment it is addressed to.

Entry point: :func:`make_server_app` ``(targets, *, min_idle, max_isolates, request_timeout,
queue_timeout, idle_timeout, memory_limit, ...) -> ServerApp`` where ``targets`` maps deployment
names to :data:`~pyworkers.runtime.pool.IsolateFactory` callables (one
:class:`~pyworkers.runtime.pool.Pool` each). :meth:`ServerApp.swap` redeploys one of them.

Routing (:meth:`ServerApp.route`), first rule that matches:

1. ``Host: <name>.localhost[:port]`` -> deployment ``name``; ``path`` and ``root_path`` as
   received.
2. Path ``/<name>`` or ``/<name>/...`` -> deployment ``name`` with ``root_path`` ``/<name>``
   (the ASGI convention uvicorn's ``--root-path`` follows: ``path`` and ``raw_path`` keep the
   prefix, the app's router strips ``root_path``).
3. Exactly one deployment served -> that one, unchanged (``pyworkers serve app/`` answers at
   ``/`` like ``uvicorn main:app``).
4. Otherwise ``404`` listing the deployments.

Per request (ASGI HTTP, https://asgi.readthedocs.io/en/latest/specs/www.html): read the first
``http.request`` message, take an isolate from the pool (``503`` if none is free within
``queue_timeout``), start the app in the guest with the scope (see
``runtime/guest/_pyworkers_asgi.py``), then alternate: forward what the app sent
(``http.response.start`` / ``http.response.body``, chunk by chunk as it is produced), feed it the
next body chunk when it asks, sleep on the host while its loop waits on a timer, and pass on
``http.disconnect``. Faults stay local to the request:

- the app raised: traceback logged (``pyworkers.serve``, tagged ``[deployment#n]``); ``500``
  if no response started (the isolate is kept; a ``MemoryError`` recycles it);
- the isolate trapped (abort, stack overflow, out of memory): ``500``, isolate replaced;
- ``request_timeout`` seconds passed (wall time from dispatch to the end of the response; the
  guest is interrupted by wasmtime epoch interruption): ``504``, isolate recycled;
- a fault after the response started closes the connection (the client sees a truncated
  response, as with uvicorn).

Responses made by the host carry ``x-pyworkers-fault: exception|crash|memory|timeout|
unavailable|startup`` so clients and tests can tell them from the app's own.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Callable, Mapping

from pyworkers.runtime.isolate import GuestError, IsolateCrashed
from pyworkers.runtime.pool import (IsolateFactory, Pool, PoolUnavailable, RequestTimeout,
                                    Worker)

log = logging.getLogger("pyworkers.serve")

#: Scope keys forwarded from the front server to the guest (the guest adds ``asgi``/``state``).
SCOPE_KEYS = ("http_version", "method", "scheme", "path", "raw_path", "query_string",
              "root_path", "headers", "client", "server")
#: Seconds the host waits past a deadline for the guest's own interrupt before giving up on it.
INTERRUPT_GRACE = 1.0


class ResponseAborted(Exception):
    """Raised to the front server when a response that already started cannot be completed:
    uvicorn then closes the connection."""


class ServerApp:
    """The ASGI app ``pyworkers serve`` runs under uvicorn (build it with
    :func:`make_server_app`). ``pools`` maps deployment names to their :class:`Pool`.
    Lifespan: startup boots every pool's ``min_idle`` isolates (a deployment that cannot
    boot fails the server's startup); shutdown runs the isolates' lifespan shutdown."""

    def __init__(self, targets: Mapping[str, IsolateFactory], *, min_idle: int = 1,
                 max_isolates: int = 4, request_timeout: float = 30.0,
                 queue_timeout: float = 30.0, idle_timeout: float = 300.0,
                 startup_timeout: float = 120.0, shutdown_timeout: float = 5.0,
                 memory_limit: int | None = None,
                 on_startup: list[Callable[["ServerApp"], Any]] | None = None):
        if not targets:
            raise ValueError("no deployments to serve")
        self.request_timeout = request_timeout
        self.queue_timeout = queue_timeout
        self.pool_options = dict(min_idle=min_idle, max_isolates=max_isolates,
                                 idle_timeout=idle_timeout, startup_timeout=startup_timeout,
                                 shutdown_timeout=shutdown_timeout, memory_limit=memory_limit)
        self.pools: dict[str, Pool] = {name: Pool(name, f, **self.pool_options)
                                       for name, f in targets.items()}
        self.on_startup = list(on_startup or [])
        self.started = False

    # ------------------------------------------------------------------ ASGI entry
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1003,
                        "reason": "pyworkers serve does not support WebSockets yet"})

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except BaseException as e:  # noqa: BLE001 - reported to uvicorn
                    cause = e.__cause__
                    if isinstance(cause, GuestError) and cause.traceback:
                        log.error("%s\n%s", e, cause.traceback.rstrip())
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Boot every deployment's ``min_idle`` isolates (concurrently); raise the first
        failure, naming the deployment."""
        names = list(self.pools)
        results = await asyncio.gather(*(self.pools[n].start() for n in names),
                                       return_exceptions=True)
        for name, r in zip(names, results):
            if isinstance(r, BaseException):
                raise RuntimeError(f"deployment {name!r} failed to start: "
                                   f"{_short(r)}") from r
        self.started = True
        for cb in self.on_startup:
            res = cb(self)
            if asyncio.iscoroutine(res):
                await res

    async def shutdown(self) -> None:
        """Close every pool (lifespan shutdown of their isolates)."""
        await asyncio.gather(*(p.close() for p in self.pools.values()),
                             return_exceptions=True)

    async def swap(self, name: str, factory: IsolateFactory) -> int:
        """Redeploy ``name`` with ``factory`` (a new deployment is added if ``name`` is new);
        in-flight requests finish on the old isolates. Returns the generation number. Raises
        what booting the new isolates raises (the old deployment keeps serving)."""
        pool = self.pools.get(name)
        if pool is None:
            pool = Pool(name, factory, **self.pool_options)
            await pool.start()
            self.pools[name] = pool
            log.info("[%s] deployment added", name)
            return pool.generation
        return await pool.swap(factory)

    # ------------------------------------------------------------------ routing
    def route(self, scope: dict) -> tuple[str, str] | None:
        """``(deployment, root_path)`` for an HTTP scope, or ``None`` (see module docstring)."""
        host = b""
        for k, v in scope.get("headers", ()):
            if k == b"host":
                host = v
                break
        hostname = host.decode("latin-1").lower().rsplit(":", 1)[0] if host else ""
        if hostname.endswith(".localhost"):
            name = hostname[: -len(".localhost")]
            if name in self.pools:
                return name, scope.get("root_path", "")
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        rel = path[len(root):] if root and path.startswith(root) else path
        first = rel.split("/", 2)[1] if rel.startswith("/") else ""
        if first in self.pools:
            return first, root + "/" + first
        if len(self.pools) == 1:
            return next(iter(self.pools)), root
        return None

    # ------------------------------------------------------------------ one request
    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        routed = self.route(scope)
        if routed is None:
            names = sorted(self.pools)
            body = ("no deployment matches this request: use /<name>/... or a Host header "
                    "<name>.localhost; deployments: " + ", ".join(names) + "\n")
            await _plain(send, 404, body, None)
            return
        name, root_path = routed
        pool = self.pools[name]
        first = await receive()
        if first["type"] != "http.request":
            return  # the client went away before sending its request body
        try:
            worker = await pool.acquire(self.queue_timeout)
        except PoolUnavailable as e:
            log.warning("[%s] 503 for %s %s: %s", name, scope["method"], scope["path"], e)
            await _plain(send, 503, "Service Unavailable\n",
                         "startup" if e.reason == "startup" else "unavailable")
            return
        fields = {k: scope[k] for k in SCOPE_KEYS if k in scope}
        fields["root_path"] = root_path
        fields["headers"] = [(bytes(k), bytes(v)) for k, v in scope.get("headers", ())]
        for k in ("client", "server"):
            if fields.get(k) is not None:
                fields[k] = tuple(fields[k])
        fwd = _Forward(self, pool, worker, fields, receive, send)
        try:
            await fwd.run(first)
        finally:
            pool.release(worker, fwd.disposition, fwd.reason)


class _Forward:
    """State of one request being forwarded into one worker."""

    def __init__(self, app: ServerApp, pool: Pool, worker: Worker, fields: dict,
                 receive: Callable, send: Callable):
        self.app, self.pool, self.worker = app, pool, worker
        self.fields, self.receive, self.send = fields, receive, send
        self.started = self.complete = False
        self.body_complete = False
        self.disconnect_task: asyncio.Task | None = None
        self.disconnected = False
        self.deadline = time.monotonic() + app.request_timeout
        #: what the pool does with the worker afterwards (see Pool.release); until the
        #: request ends normally, a cancelled request leaves a guest call behind
        self.disposition: str | None = "abandon"
        self.reason = "request cancelled"

    @property
    def where(self) -> str:
        return f"[{self.worker.id}] {self.fields.get('method')} {self.fields.get('path')}"

    async def _call(self, fn: str, *args) -> dict:
        """Run ``worker.call(fn, *args)`` on the pool's executor, waiting at most until the
        deadline (+ :data:`INTERRUPT_GRACE` for the guest's own interrupt to land)."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self.pool.executor, functools.partial(
            self.worker.call, fn, *args, deadline=self.deadline))
        self.worker.inflight = fut
        timeout = self.deadline - time.monotonic() + INTERRUPT_GRACE
        done, _ = await asyncio.wait({fut}, timeout=max(0.0, timeout))
        if not done:
            raise _Abandoned()
        r = fut.result()
        if not isinstance(r, dict):
            raise GuestError("AdapterError", f"the guest adapter returned {r!r}", "")
        return r

    async def run(self, first: dict) -> None:
        """Forward the request; sets :attr:`disposition`/:attr:`reason` for
        :meth:`Pool.release`. Raises :class:`ResponseAborted` when a started response cannot
        be completed."""
        try:
            await self._run(first)
        finally:
            if self.disconnect_task is not None:
                self.disconnect_task.cancel()

    def _dispose(self, disposition: str | None, reason: str = "") -> None:
        self.disposition, self.reason = disposition, reason

    async def _run(self, first: dict) -> None:
        self.body_complete = not first.get("more_body", False)
        timeout = f"request timed out after {self.app.request_timeout:g} s"
        try:
            r = await self._call("start_http", self.fields, bytes(first.get("body", b"")),
                                 bool(first.get("more_body", False)))
            while True:
                await self._forward_messages(r["messages"])
                if r["done"]:
                    break
                events = await self._next_events(r)
                r = await self._call("step", r["cid"], events)
        except _Abandoned:
            self._dispose("abandon", "timed out, the guest did not stop")
            await self._fail(504, "timeout", timeout + " and the guest did not stop")
            return
        except RequestTimeout:
            self._dispose("recycle", "request timed out")
            await self._fail(504, "timeout", timeout)
            return
        except IsolateCrashed as e:
            if time.monotonic() >= self.deadline:
                self._dispose("discard", "interrupted at the request timeout")
                await self._fail(504, "timeout", timeout + " (guest interrupted)")
                return
            self._dispose("discard", f"crashed: {e.reason}")
            await self._fail(500, "crash", f"isolate crashed: {e.reason}")
            return
        except GuestError as e:  # the adapter itself failed (not the app)
            self._dispose("recycle", "guest adapter error")
            log.error("%s: guest adapter error\n%s", self.where, e.traceback.rstrip() or e)
            await self._fail(500, "exception", None)
            return
        await self._finish(r)

    async def _finish(self, r: dict) -> None:
        err = r.get("error")
        self._dispose(None)
        if err:
            log.error("%s: Exception in ASGI application\n%s", self.where,
                      err["traceback"].rstrip() or f"{err['type']}: {err['message']}")
            if err["type"] == "MemoryError":
                self._dispose("recycle", "MemoryError (memory limit reached)")
        if not self.started:
            if not err:
                log.error("%s: ASGI callable returned without starting response.", self.where)
            await _plain(self.send, 500, "Internal Server Error",
                         "memory" if self.disposition else "exception")
        elif not self.complete and not self.disconnected:
            if not err:
                log.error("%s: ASGI callable returned without completing response.",
                          self.where)
            raise ResponseAborted(f"{self.where}: the response was not completed")

    async def _forward_messages(self, messages: list[dict]) -> None:
        for m in messages:
            if m["type"] == "http.response.start":
                self.started = True
                await self.send({"type": "http.response.start", "status": m["status"],
                                 "headers": m["headers"]})
            elif m["type"] == "http.response.body":
                more = m.get("more_body", False)
                await self.send({"type": "http.response.body", "body": m.get("body", b""),
                                 "more_body": more})
                if not more:
                    self.complete = True

    async def _next_events(self, r: dict) -> list[dict]:
        """What to deliver at the next step (see ``_pyworkers_asgi`` step results)."""
        if r["input"]:
            ev = await self._until_deadline(self.receive())
            if ev["type"] == "http.request":
                self.body_complete = not ev.get("more_body", False)
                return [{"type": "http.request", "body": bytes(ev.get("body", b"")),
                         "more_body": bool(ev.get("more_body", False))}]
            self.disconnected = self.body_complete = True
            return [{"type": "http.disconnect"}]
        if self.body_complete and not self.disconnected and self.disconnect_task is None \
                and (self.started or r["idle"]):
            # the body is in: the front server's receive() now only reports a disconnect
            self.disconnect_task = asyncio.ensure_future(self.receive())
        if r["idle"]:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout()
            wait = remaining if r["wait"] is None else min(r["wait"], remaining)
            if self.disconnect_task is not None and not self.disconnected:
                await asyncio.wait({self.disconnect_task}, timeout=wait)
            else:
                await asyncio.sleep(wait)
            if r["wait"] is None and time.monotonic() >= self.deadline \
                    and not (self.disconnect_task and self.disconnect_task.done()):
                raise RequestTimeout()
        if self.disconnect_task is not None and self.disconnect_task.done() \
                and not self.disconnected:
            self.disconnected = True
            return [{"type": "http.disconnect"}]
        return []

    async def _until_deadline(self, aw):
        remaining = self.deadline - time.monotonic()
        try:
            return await asyncio.wait_for(aw, max(0.0, remaining))
        except asyncio.TimeoutError:
            raise RequestTimeout() from None

    async def _fail(self, status: int, fault: str, message: str | None) -> None:
        if message:
            (log.warning if status == 504 else log.error)("%s: %s", self.where, message)
        if not self.started:
            self.started = True
            await _plain(self.send, status, "Gateway Timeout" if status == 504
                         else "Internal Server Error", fault)
        elif not self.complete:
            raise ResponseAborted(f"{self.where}: {message or fault}")


class _Abandoned(Exception):
    """The guest call did not return by the deadline (+ grace)."""


def _short(e: BaseException) -> str:
    if isinstance(e, GuestError):
        return f"{e.type_name}: {e.message}"
    return str(e) or type(e).__name__


async def _plain(send: Callable, status: int, text: str, fault: str | None) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode())]
    if fault:
        headers.append((b"x-pyworkers-fault", fault.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def make_server_app(targets: Mapping[str, IsolateFactory], *, min_idle: int = 1,
                    max_isolates: int = 4, request_timeout: float = 30.0,
                    queue_timeout: float = 30.0, idle_timeout: float = 300.0,
                    startup_timeout: float = 120.0, shutdown_timeout: float = 5.0,
                    memory_limit: int | None = None,
                    on_startup: list[Callable[[ServerApp], Any]] | None = None) -> ServerApp:
    """The ASGI app serving ``targets`` (``{deployment name: IsolateFactory}``).

    Args:
        min_idle: isolates per deployment booted ahead of demand.
        max_isolates: live isolates per deployment (one request each at a time).
        request_timeout: seconds from dispatch to the end of the response (``504`` past it).
        queue_timeout: seconds a request may wait for a free isolate (``503`` past it).
        idle_timeout: seconds before an idle isolate beyond ``min_idle`` retires.
        startup_timeout / shutdown_timeout: seconds for each isolate's lifespan phases.
        memory_limit: the factories' memory cap in bytes (isolates near it are replaced).
        on_startup: callables ``(app) -> None | awaitable`` run after the pools started.

    Raises ``ValueError`` for an empty ``targets`` or inconsistent pool sizes.
    """
    return ServerApp(targets, min_idle=min_idle, max_isolates=max_isolates,
                     request_timeout=request_timeout, queue_timeout=queue_timeout,
                     idle_timeout=idle_timeout, startup_timeout=startup_timeout,
                     shutdown_timeout=shutdown_timeout, memory_limit=memory_limit,
                     on_startup=on_startup)


__all__ = ["ResponseAborted", "ServerApp", "make_server_app", "SCOPE_KEYS"]
