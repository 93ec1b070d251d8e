"""An ASGI app whose request handler calls an upstream HTTP server (``UPSTREAM`` var,
``host:port``) with the standard library and returns its body (502/403 on errors)."""
import os
import urllib.error
import urllib.request


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    try:
        url = f"http://{os.environ['UPSTREAM']}{scope['path']}"
        with urllib.request.urlopen(url, timeout=10) as r:
            status, body = 200, b"upstream said: " + r.read()
    except urllib.error.URLError as e:
        reason = e.reason
        status = 403 if isinstance(reason, PermissionError) else 502
        body = f"{type(reason).__name__}: {reason}".encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
