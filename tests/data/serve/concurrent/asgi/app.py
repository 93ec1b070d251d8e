"""A plain ASGI app (no dependencies) for the concurrency tests (tests/test_serve_concurrency.py).

Module-level state lives as long as the isolate, so with ``--max-isolates 1`` every request
sees what earlier ones (and background jobs) left there. ``TOKEN`` names the isolate.

- lifespan: startup stores ``{"inflight": [0], "peak": [0], "hits": [0]}`` in ``state`` and
  counts startups of this isolate in ``STARTUPS``;
- ``/sleep?s=0.5``: awaits ``asyncio.sleep(s)``, answers this isolate's token;
- ``/overlap?s=0.3``: lifespan state: ``inflight`` +1, ``peak`` = max, sleep, ``inflight`` -1;
  answers ``{"peak", "hits", "startups", "token"}`` (``hits``: this call's number in a
  counter across requests);
- ``/job?id=X&s=1``: starts ``asyncio.create_task(job)`` and answers at once; the job sleeps
  ``s`` seconds, then sets ``JOBS[X] = "done"`` and prints ``job X done`` (``cancelled`` and
  ``job X cancelled`` if it is cancelled);
- ``/jobs?id=X``: ``JOBS[X]`` (``pending``, ``done``, ``cancelled``; ``unknown``);
- ``/slow?s=5``: awaits ``asyncio.sleep(s)``; if the request's task is cancelled, records it
  in ``CANCELLED`` and re-raises;
- ``/stats``: ``{"token", "cancelled", "jobs"}``;
- ``/crash?after=1``: sleeps ``after`` seconds, then ``os.abort()``;
- ``/push?block=1``: sends the response start and a first chunk, then blocks in
  ``time.sleep(block)`` (no await) before the last chunk;
- ``/spin?s=30``: busy loop for ``s`` seconds without awaiting (a guest stuck in CPU);
- ``/recurse``: unbounded recursion with the recursion limit lifted (exhausts the C stack).
"""
import asyncio
import json
import os
import sys
import time
from urllib.parse import parse_qs

TOKEN = os.urandom(8).hex()
STARTUPS = [0]
JOBS: dict[str, str] = {}
CANCELLED: list[str] = []
TASKS: set = set()  # strong references to running jobs (asyncio keeps only weak ones)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                STARTUPS[0] += 1
                scope["state"].update(inflight=[0], peak=[0], hits=[0])
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']}")
    path = scope["path"][len(scope.get("root_path", "")):]
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/sleep":
        await asyncio.sleep(float(q.get("s", 0.5)))
        await reply(send, TOKEN)
    elif path == "/overlap":
        st = scope["state"]
        st["hits"][0] += 1
        mine = st["hits"][0]
        st["inflight"][0] += 1
        st["peak"][0] = max(st["peak"][0], st["inflight"][0])
        try:
            await asyncio.sleep(float(q.get("s", 0.3)))
        finally:
            st["inflight"][0] -= 1
        await reply(send, json.dumps({"peak": st["peak"][0], "hits": mine,
                                      "startups": STARTUPS[0], "token": TOKEN}))
    elif path == "/job":
        jid = q["id"]
        JOBS[jid] = "pending"
        task = asyncio.create_task(job(jid, float(q.get("s", 1))))
        TASKS.add(task)
        task.add_done_callback(TASKS.discard)
        await reply(send, f"started {jid}")
    elif path == "/jobs":
        await reply(send, JOBS.get(q["id"], "unknown"))
    elif path == "/slow":
        try:
            await asyncio.sleep(float(q.get("s", 5)))
        except asyncio.CancelledError:
            CANCELLED.append(path)
            raise
        await reply(send, "slept")
    elif path == "/stats":
        await reply(send, json.dumps({"token": TOKEN, "cancelled": CANCELLED, "jobs": JOBS}))
    elif path == "/crash":
        await asyncio.sleep(float(q.get("after", 1)))
        os.abort()
    elif path == "/push":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        time.sleep(float(q.get("block", 1)))
        await send({"type": "http.response.body", "body": b"last\n"})
    elif path == "/spin":
        end = time.monotonic() + float(q.get("s", 30))
        while time.monotonic() < end:
            pass
        await reply(send, "spun")
    elif path == "/recurse":
        sys.setrecursionlimit(10**7)
        await reply(send, str(deep(0)))
    else:
        await reply(send, "not found", 404)


def deep(n: int) -> int:
    return deep(n + 1) + 1


async def job(jid: str, seconds: float):
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        JOBS[jid] = "cancelled"
        print(f"job {jid} cancelled", flush=True)
        raise
    JOBS[jid] = "done"
    print(f"job {jid} done", flush=True)


async def reply(send, text: str, status: int = 200):
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
