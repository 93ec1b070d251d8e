"""A plain ASGI app (no dependencies, no lifespan support) whose endpoints misbehave.

``/ok`` returns this isolate's token (random, made at import) so the tests can tell whether an
isolate was replaced; the other paths crash, hang, sleep, exhaust memory or raise.
"""
import asyncio
import os
import sys

TOKEN = os.urandom(8).hex()


async def app(scope, receive, send):
    if scope["type"] != "http":
        # no lifespan support: raising here is how an app says so (uvicorn's "auto" mode)
        raise RuntimeError(f"unsupported scope type {scope['type']}")
    # ASGI: "path" includes "root_path" (the /faults prefix when routed by path)
    path = scope["path"][len(scope.get("root_path", "")):]
    if path == "/crash":
        os.abort()
    if path == "/hang":
        while True:
            pass
    if path == "/sleep":
        await asyncio.sleep(3600)
    if path == "/bomb":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    if path == "/raise":
        raise ValueError("raised by the faults app")
    if path == "/print":
        print("hello on stdout")
        print("hello on stderr", file=sys.stderr)
    body = f"ok {TOKEN}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
