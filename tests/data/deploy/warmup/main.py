"""A dependency-free ASGI app for the warm-up tests: counts the requests it has seen in a
module global (what warm-up requests leave in memory is in the snapshot), records the last
user-agent, and fails on /boom (500), /raise (an exception), /forbidden (403)."""
import asyncio

SEEN = {"requests": 0, "agents": [], "lifespan": False}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                SEEN["lifespan"] = True
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/raise":
        raise RuntimeError("warm-up breaks here")
    if path == "/linger":  # a task left running after the response
        asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="lingering-task")
    SEEN["requests"] += 1
    SEEN["agents"].append(dict(scope["headers"]).get(b"user-agent", b"").decode())
    status = {"/boom": 500, "/forbidden": 403}.get(path, 200)
    body = (f"{SEEN['requests']} {scope['method']} {scope['query_string'].decode()} "
            f"lifespan={SEEN['lifespan']} agents={','.join(SEEN['agents'])}").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
