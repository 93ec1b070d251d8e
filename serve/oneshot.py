"""One request through a worker without HTTP: the same isolate driver (:class:`Worker`) and the
same request path (:class:`~pyworkers.serve.front.HttpExchange`) as ``pyworkers serve``, with
in-memory ASGI ``receive``/``send`` on the client side. Used by ``pyworkers deploy``'s smoke
test and by the benchmarks."""
from __future__ import annotations

import asyncio
import dataclasses
import itertools

from pyworkers.serve.errors import StartupFailed
from pyworkers.serve.front import HttpExchange, ResponseAborted
from pyworkers.serve.factory import IsolateFactory
from pyworkers.serve.worker import Worker

_numbers = itertools.count(1)


@dataclasses.dataclass
class Response:
    """What the client side saw: ``status`` (``None``: no response started), ``headers``,
    ``body`` (bytes), ``complete`` (the last body chunk arrived), ``fault`` (the
    ``x-pyworkers-fault`` the host added, if it answered for the app), ``error`` (the app's
    exception as guest data, when it raised before responding)."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    fault: str | None = None
    error: dict | None = None


async def request(worker: Worker, method: str = "GET", path: str = "/", *,
                  headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b"",
                  timeout: float = 60.0, max_body_size: int = 100 << 20) -> Response:
    """Send one HTTP/1.1 request into ``worker`` (ready) and collect the response. Never
    raises for the app's faults: they show in :attr:`Response.fault`/``status``."""
    resp = Response()
    sent_body = False

    async def receive() -> dict:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the exchange cancels this
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            resp.status = message["status"]
            resp.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            resp.body += message.get("body", b"")
            resp.complete = not message.get("more_body", False)

    hdrs = [(b"host", b"localhost")] + list(headers or [])
    scope = {"type": "http", "http_version": "1.1", "method": method, "scheme": "http",
             "path": path.split("?", 1)[0], "raw_path": path.split("?", 1)[0].encode(),
             "query_string": path.partition("?")[2].encode(), "root_path": "",
             "headers": hdrs, "client": ("127.0.0.1", 0), "server": ("localhost", 80)}
    conv = worker.open("http", f"{method} {path}")
    ex = HttpExchange(conv, receive, send, request_timeout=timeout, max_body_size=max_body_size)
    try:
        await ex.run(scope, {"type": "http.request", "body": body, "more_body": False})
    except ResponseAborted:
        pass
    resp.fault, resp.error = ex.fault, ex.error
    return resp


async def start_worker(factory: IsolateFactory, name: str = "oneshot", *,
                       startup_timeout: float = 120.0, cpu_limit: float | None = 60.0,
                       env: dict | None = None, bindings=None) -> Worker:
    """A started :class:`Worker` for ``factory`` (lifespan startup done); ``env`` and
    ``bindings`` as for :class:`Worker`. Raises :class:`StartupFailed`."""
    w = Worker(name, next(_numbers), 1, factory, cpu_limit=cpu_limit, env=env,
               bindings=bindings)
    return await w.start(startup_timeout)


async def smoke(factory: IsolateFactory, path: str = "/", *, startup_timeout: float = 120.0,
                request_timeout: float = 60.0, shutdown_timeout: float = 10.0,
                env: dict | None = None, bindings=None) -> dict:
    """Lifespan startup, ``GET path``, lifespan shutdown (``env``/``bindings``: what the
    worker's isolates get when served, e.g. scratch bindings). Returns ``{"lifespan":
    "complete" | "unsupported", "status", "body_bytes", "error": None | str}``. Raises
    :class:`StartupFailed` when lifespan startup fails."""
    w = await start_worker(factory, "deploy-smoke", startup_timeout=startup_timeout, env=env,
                           bindings=bindings)
    res: dict = {"lifespan": "complete" if w.lifespan == "on" else "unsupported",
                 "status": None, "body_bytes": 0, "error": None}
    try:
        r = await request(w, "GET", path, headers=[(b"user-agent", b"pyworkers-deploy-smoke")],
                          timeout=request_timeout)
        res["status"], res["body_bytes"] = r.status, len(r.body)
        if r.error:
            res["error"] = r.error.get("traceback") or f"{r.error['type']}: {r.error['message']}"
        elif r.fault == "timeout":
            res["error"] = f"GET {path} did not finish within {request_timeout:.0f} s"
        elif r.fault in ("crash", "memory"):
            res["error"] = f"GET {path} crashed the isolate: {w.death}"
    finally:
        await w.stop(0.0, shutdown_timeout)
    return res


__all__ = ["Response", "StartupFailed", "request", "smoke", "start_worker"]
