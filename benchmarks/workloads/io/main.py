"""I/O-bound workload for ``pyworkers bench concurrency`` (plain ASGI, no dependencies, so the
very same file runs under ``pyworkers serve`` and under native uvicorn).

- ``/io``: ``await asyncio.sleep(0.05)`` (an ``async def`` endpoint waiting 50 ms on I/O);
- ``/block``: ``time.sleep(0.05)`` in the handler (a ``def`` endpoint run inline, as the
  sandbox runs them: blocks the event loop, like a sync endpoint under uvicorn without a
  thread pool);
- ``/thread``: ``await asyncio.to_thread(time.sleep, 0.05)`` (what Starlette does with a ``def``
  endpoint: a worker thread natively; inline in the sandbox, which cannot start threads).

Each answers ``ok <path>`` (plain text, Content-Length).
"""
import asyncio
import time

DELAY = 0.05


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    path = scope["path"][len(scope.get("root_path", "")):]
    if path == "/io":
        await asyncio.sleep(DELAY)
    elif path == "/block":
        time.sleep(DELAY)
    elif path == "/thread":
        await asyncio.to_thread(time.sleep, DELAY)
    body = f"ok {path}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
