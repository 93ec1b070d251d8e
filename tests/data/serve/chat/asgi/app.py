"""A plain ASGI WebSocket app (no dependencies) for tests/test_serve_websocket.py: the raw
``websocket`` scope and messages, without a framework in between.

- ``/scope``: on ``websocket.connect`` accepts (subprotocol ``raw.v1`` if offered, header
  ``x-accepted: yes``), sends the scope as JSON text, then echoes text as text and bytes as bytes;
- ``/room?name=N``: broadcast room: ``N joined`` to all, every text ``T`` to all as ``N: T``, on
  ``websocket.disconnect`` (code C) ``N left (C)`` to the others;
- ``/close?code=C``: accepts, then sends ``websocket.close`` with code C and reason ``custom``;
- ``/deny``: ``websocket.close`` before accepting (the handshake gets HTTP 403);
- ``/abort``: accepts, sends ``armed``, and calls ``os.abort()`` on the first message (the
  isolate crashes with every connection in it);
- every ``websocket.disconnect`` the app receives is recorded: ``GET /stats`` answers
  ``{"disconnects": [[path, code], ...], "members": [...], "token"}``.
"""
import json
import os
from urllib.parse import parse_qs

TOKEN = os.urandom(8).hex()
DISCONNECTS: list = []
ROOM: dict = {}  # name -> send


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    path = scope["path"][len(scope.get("root_path", "")):]
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if scope["type"] == "http":
        body = json.dumps({"disconnects": DISCONNECTS, "members": sorted(ROOM),
                           "token": TOKEN}).encode()
        await send({"type": "http.response.start", "status": 200 if path == "/stats" else 404,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    assert scope["type"] == "websocket", scope["type"]
    message = await receive()
    assert message["type"] == "websocket.connect", message
    if path == "/deny":
        await send({"type": "websocket.close", "code": 1008})
        return
    if path == "/scope":
        sub = "raw.v1" if "raw.v1" in scope.get("subprotocols", []) else None
        await send({"type": "websocket.accept", "subprotocol": sub,
                    "headers": [(b"x-accepted", b"yes")]})
        await send({"type": "websocket.send", "text": json.dumps(describe(scope))})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                DISCONNECTS.append([path, message.get("code", 1005)])
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    elif path == "/room":
        name = q["name"]
        await send({"type": "websocket.accept"})
        ROOM[name] = send
        await broadcast(f"{name} joined")
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                ROOM.pop(name, None)
                DISCONNECTS.append([path, message.get("code", 1005)])
                await broadcast(f"{name} left ({message.get('code', 1005)})")
                return
            await broadcast(f"{name}: {message.get('text')}")
    elif path == "/abort":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "armed"})
        await receive()
        os.abort()
    elif path == "/close":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": int(q.get("code", 4001)),
                    "reason": "custom"})
    else:
        await send({"type": "websocket.close", "code": 1003})


async def broadcast(text: str) -> None:
    for send in list(ROOM.values()):
        try:
            await send({"type": "websocket.send", "text": text})
        except Exception:  # a member that left meanwhile
            pass


def describe(scope) -> dict:
    return {
        "type": scope["type"], "asgi": scope.get("asgi"), "scheme": scope.get("scheme"),
        "http_version": scope.get("http_version"), "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1") if scope.get("raw_path") else None,
        "root_path": scope.get("root_path"),
        "query_string": scope["query_string"].decode("latin-1"),
        "subprotocols": scope.get("subprotocols"),
        "x_test": [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-test"],
        "client_host": scope["client"][0] if scope.get("client") else None,
        "server_host": scope["server"][0] if scope.get("server") else None,
        "state_is_dict": isinstance(scope.get("state"), dict),
    }
