"""A plain ASGI app (no dependencies) with lifespan state, used by the pool tests.

- lifespan: startup puts a counter in ``state`` and prints ``startup ran``; shutdown prints
  ``shutdown ran``;
- ``/count``: increments the lifespan counter (state persists across requests of an isolate);
- ``/chunks``: reads the request body message by message and answers with the size of each
  ``http.request`` message, streaming one line per message it received;
- ``/to-thread``: ``asyncio.to_thread`` (would start a thread; runs inline in the sandbox);
- ``/version``: the ``VERSION`` environment variable and this isolate's random token.
"""
import asyncio
import os

TOKEN = os.urandom(8).hex()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["counter"] = [0]
                print("startup ran", flush=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print("shutdown ran", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"][len(scope.get("root_path", "")):]
    if path == "/count":
        counter = scope["state"]["counter"]
        counter[0] += 1
        await _reply(send, f"{counter[0]}\n")
    elif path == "/to-thread":
        total = await asyncio.to_thread(sum, [1, 2, 3])
        await _reply(send, f"to_thread {total}\n")
    elif path == "/chunks":
        sizes = []
        while True:
            message = await receive()
            sizes.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for s in sizes:
            await send({"type": "http.response.body", "body": f"{s}\n".encode(),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await _reply(send, f"{os.environ.get('VERSION')} {TOKEN}\n")


async def _reply(send, text):
    body = text.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
