"""A plain ASGI app (no dependencies, so no package index) for the admin/probe tests
(tests/test_admin.py) and the three-node simulation (tests/test_cluster.py).

``VERSION`` is the deployment's version: tests copy this directory and change the line
``VERSION = "v1"`` to make a new deployment. ``TOKEN`` names the isolate.

- lifespan: startup and shutdown print ``lifespan startup VERSION`` / ``lifespan shutdown
  VERSION``;
- ``/`` and ``/version``: 200, ``VERSION TOKEN``;
- ``/slow?s=1``: awaits ``asyncio.sleep(s)`` (default 1), then 200 ``slow VERSION TOKEN``;
- anything else: 404 ``not found by the cluster app: PATH``.
"""
import asyncio
import os
from urllib.parse import parse_qs

VERSION = "v1"
TOKEN = os.urandom(8).hex()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                print(f"lifespan startup {VERSION}", flush=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print(f"lifespan shutdown {VERSION}", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']}")
    path = scope["path"][len(scope.get("root_path", "")):]
    if path in ("/", "/version"):
        await reply(send, 200, f"{VERSION} {TOKEN}\n")
    elif path == "/slow":
        q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        await asyncio.sleep(float(q.get("s", 1)))
        await reply(send, 200, f"slow {VERSION} {TOKEN}\n")
    else:
        await reply(send, 404, f"not found by the cluster app: {path}\n")


async def reply(send, status, text):
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
