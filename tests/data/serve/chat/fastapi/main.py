"""FastAPI WebSocket app for tests/test_serve_websocket.py (the same code runs under uvicorn).

- ``/echo``: accepts, echoes every message back as it came (text as text, bytes as bytes)
  until the client disconnects; counts disconnects in ``STATS["echo_disconnects"]``;
- ``/room?name=N``: broadcast room: on connect everyone gets ``N joined``, every text message
  ``T`` reaches every member (the sender too) as ``N: T``, a disconnect (``WebSocketDisconnect``)
  removes the member and everyone left gets ``N left``;
- ``/close``: accepts, waits for one text ``T``, then closes with code 4001 and reason ``bye T``;
- ``/proto``: picks the first of the server's subprotocols (``chat.v2``, ``chat.v1``) the client
  offered, accepts with it and sends ``proto <chosen>`` (``proto none`` without a match);
- ``/reject``: closes before accepting (uvicorn answers the handshake with HTTP 403);
- ``GET /stats``: ``{"members", "left", "echo_disconnects", "token"}``.
"""
import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

TOKEN = os.urandom(8).hex()
MEMBERS: dict[WebSocket, str] = {}
STATS = {"left": [], "echo_disconnects": 0}
SERVER_PROTOCOLS = ("chat.v2", "chat.v1")

app = FastAPI()


@app.websocket("/echo")
async def echo(ws: WebSocket):
    await ws.accept()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("text") is not None:
                await ws.send_text(message["text"])
            else:
                await ws.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        STATS["echo_disconnects"] += 1


async def broadcast(text: str) -> None:
    for member in list(MEMBERS):
        try:
            await member.send_text(text)
        except Exception:  # a member that went away meanwhile: its own handler cleans up
            pass


@app.websocket("/room")
async def chat(ws: WebSocket, name: str):
    await ws.accept()
    MEMBERS[ws] = name
    await broadcast(f"{name} joined")
    try:
        while True:
            await broadcast(f"{name}: {await ws.receive_text()}")
    except WebSocketDisconnect:
        pass
    finally:
        MEMBERS.pop(ws, None)
        STATS["left"].append(name)
    await broadcast(f"{name} left")


@app.websocket("/close")
async def close(ws: WebSocket):
    await ws.accept()
    text = await ws.receive_text()
    await ws.close(code=4001, reason=f"bye {text}")


@app.websocket("/proto")
async def proto(ws: WebSocket):
    offered = ws.scope.get("subprotocols", [])
    chosen = next((p for p in SERVER_PROTOCOLS if p in offered), None)
    await ws.accept(subprotocol=chosen)
    await ws.send_text(f"proto {chosen or 'none'}")
    await ws.close()


@app.websocket("/reject")
async def reject(ws: WebSocket):
    await ws.close(code=1008)


@app.get("/stats")
async def stats():
    return {"members": sorted(MEMBERS.values()), "left": STATS["left"],
            "echo_disconnects": STATS["echo_disconnects"], "token": TOKEN}
