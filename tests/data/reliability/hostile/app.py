"""A plain ASGI app (no dependencies) that misbehaves on request, for the reliability tests of
``pyworkers serve`` (``tests/test_reliability_serve.py``). Everything it records lives in this
isolate's module globals (the tests run one isolate when they read it back).

- ``/ok``: a short text response;
- ``/big?mb=N&parts=P&send=1``: builds an N MB body, then sends it in P ``send()`` calls of
  N/P MB each (``parts=1``: one single send of the whole body); ``send=0`` builds and slices the
  body exactly the same way but answers 1 byte (the control run for host memory);
- ``/stream``: streams 1 MiB chunks until the client disconnects or the task is cancelled;
  ``/streams`` reports how many such tasks run, and how each one ended;
- ``/upload``: reads the whole request body, recording that it ran and the most bytes it saw;
  ``/uploads`` reports that record; ``/seen`` lists every path this isolate was asked for;
- ``/bad-status``: ``http.response.start`` with status 42; ``/bad-header``: a header value with
  CR/LF (response splitting); ``/bad-header-name``: a header name with a colon;
- ``/flood-bytes?mb=N``: prints N MB without a newline (1 MiB writes), then one newline;
  ``/flood-lines?n=N``: prints N short lines.
"""
import asyncio
import sys

MB = 1 << 20
SEEN = []
STREAMS = {"active": 0, "ended": []}
UPLOADS = {"entered": 0, "completed": 0, "max_seen": 0}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    SEEN.append(path)
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    if path == "/big":
        await big(send, int(query.get("mb", 200)), int(query.get("parts", 4)),
                  query.get("send", "1") == "1")
    elif path == "/stream":
        await stream(receive, send)
    elif path == "/streams":
        await text(send, f"{STREAMS['active']} {','.join(STREAMS['ended'])}")
    elif path == "/upload":
        await upload(receive, send)
    elif path == "/uploads":
        await text(send, "{entered} {completed} {max_seen}".format(**UPLOADS))
    elif path == "/seen":
        await text(send, "\n".join(SEEN))
    elif path == "/bad-status":
        await send({"type": "http.response.start", "status": 42, "headers": []})
        await send({"type": "http.response.body", "body": b"never"})
    elif path == "/bad-header":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-evil", b"a\r\nSet-Cookie: session=stolen")]})
        await send({"type": "http.response.body", "body": b"never"})
    elif path == "/bad-header-name":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-evil: injected", b"1")]})
        await send({"type": "http.response.body", "body": b"never"})
    elif path == "/flood-bytes":
        chunk = "x" * MB
        for _ in range(int(query.get("mb", 50))):
            sys.stdout.write(chunk)
        sys.stdout.write("\n")
        sys.stdout.flush()
        await text(send, "flooded")
    elif path == "/flood-lines":
        for i in range(int(query.get("n", 500_000))):
            print("flood line", i)
        sys.stdout.flush()
        await text(send, "flooded")
    else:
        await text(send, "ok")


async def text(send, body):
    data = body.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def big(send, mb, parts, really):
    body = b"x" * (mb * MB)
    step = len(body) // parts
    headers = [(b"content-type", b"application/octet-stream"),
               (b"content-length", str(len(body) if really else 1).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(parts):
        piece = body if parts == 1 else body[i * step:(i + 1) * step]
        if really:
            await send({"type": "http.response.body", "body": piece, "more_body": i < parts - 1})
        del piece
    if not really:
        await send({"type": "http.response.body", "body": b"y"})


async def stream(receive, send):
    STREAMS["active"] += 1
    how = "returned"
    try:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        chunk = b"s" * MB
        for _ in range(100_000):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except asyncio.CancelledError:
        how = "cancelled"
        raise
    except BaseException as e:
        how = type(e).__name__
        raise
    finally:
        STREAMS["active"] -= 1
        STREAMS["ended"].append(how)


async def upload(receive, send):
    UPLOADS["entered"] += 1
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away (or the server gave up on the body)
        total += len(message.get("body", b""))
        UPLOADS["max_seen"] = max(UPLOADS["max_seen"], total)
        if not message.get("more_body"):
            break
    UPLOADS["completed"] += 1
    await text(send, f"got {total}")
