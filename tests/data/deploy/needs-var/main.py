import os

if os.environ.get("MODE") != "production":
    raise RuntimeError(f"MODE must be 'production', got {os.environ.get('MODE')!r}")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
