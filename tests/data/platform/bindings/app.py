"""A plain ASGI app (no dependencies) using the platform: secrets, KV, SQL and objects.

Bindings are read from ``scope["env"]``, except ``/outside`` which uses the importable
``pyworkers_env.env`` (imported at the top: the module is in the deploy snapshot).

- ``GET /secret?name=N``: ``os.environ[N]`` and ``env.N`` ("-" when unset);
- ``/kv/{get,put,delete,list}?key=&ttl=&prefix=``; ``PUT`` body is the value;
- ``POST /kv/too-big``: a KV put over the limit (answers the ValueError message, 413);
- ``POST /sql/incr``: one SQL increment of counter 1 (creates the table on first use);
  ``GET /sql/get``; ``POST /sql/batch-fail``: a batch whose second statement fails (nothing of
  it may stay); ``GET /sql/rows``;
- ``PUT /obj/<key>``: the request body streamed into the objects binding (async iterator);
  ``GET /obj/<key>``: streamed back; ``GET /objlist?prefix=``; ``DELETE /obj/<key>``;
- ``GET /outside``: the bindings seen through ``pyworkers_env.env``;
- ``POST /tasks/tick?sleep=S`` (a cron trigger): sleeps S seconds, records the run in SQL;
  ``GET /cron-runs`` lists the runs.
"""
import json
import os
from urllib.parse import parse_qs

import pyworkers_env

INIT = [("CREATE TABLE IF NOT EXISTS counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)", []),
        ("INSERT INTO counters (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING", []),
        ("CREATE TABLE IF NOT EXISTS rows_ (v TEXT NOT NULL)", [])]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    env = scope["env"]
    path = scope["path"][len(scope.get("root_path", "")):]
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    method = scope["method"]
    try:
        if path == "/":
            return await reply(send, 200, "platform app\n")
        if path == "/secret":
            name = q["name"]
            return await reply(send, 200, f"{os.environ.get(name, '-')} "
                                          f"{getattr(env, name, '-')}")
        if path.startswith("/kv/"):
            op = path[4:]
            if op == "put":
                await env.CACHE.put(q["key"], await body(receive),
                                    ttl=float(q["ttl"]) if "ttl" in q else None)
                return await reply(send, 200, "ok")
            if op == "get":
                v = await env.CACHE.get(q["key"])
                return await reply(send, 404 if v is None else 200, v or "")
            if op == "delete":
                await env.CACHE.delete(q["key"])
                return await reply(send, 200, "ok")
            if op == "list":
                keys, cursor = [], None
                while True:
                    page = await env.CACHE.list(prefix=q.get("prefix", ""), cursor=cursor,
                                                limit=int(q.get("limit", 1000)))
                    keys += page["keys"]
                    cursor = page["cursor"]
                    if not cursor:
                        break
                return await reply(send, 200, json.dumps(keys))
            if op == "too-big":
                try:
                    await env.CACHE.put("big", b"x" * (25 * 1024 * 1024 + 1))
                except ValueError as e:
                    return await reply(send, 413, f"ValueError: {e}")
                return await reply(send, 200, "accepted?")
        if path.startswith("/sql/"):
            op = path[5:]
            await env.DB.batch(INIT)
            if op == "incr":
                await env.DB.execute("UPDATE counters SET n = n + 1 WHERE id = ?", [1])
                return await reply(send, 200, "ok")
            if op == "get":
                rows = await env.DB.execute("SELECT n FROM counters WHERE id = ?", [1])
                return await reply(send, 200, str(rows[0]["n"]))
            if op == "insert":
                r = await env.DB.execute("INSERT INTO rows_ (v) VALUES (?)", [q["v"]])
                return await reply(send, 200, str(r.rowcount))
            if op == "batch-fail":
                try:
                    await env.DB.batch([("INSERT INTO rows_ (v) VALUES (?)", ["in-batch"]),
                                        ("INSERT INTO no_such_table VALUES (1)", [])])
                except ValueError as e:
                    return await reply(send, 400, f"ValueError: {e}")
                return await reply(send, 200, "batch went through?")
            if op == "rows":
                rows = await env.DB.execute("SELECT v FROM rows_ ORDER BY v")
                return await reply(send, 200, json.dumps([r["v"] for r in rows]))
        if path.startswith("/obj/"):
            key = path[5:]
            if method == "PUT":
                head = await env.FILES.put(key, chunks(receive))
                return await reply(send, 200, json.dumps(head))
            if method == "DELETE":
                await env.FILES.delete(key)
                return await reply(send, 200, "ok")
            obj = await env.FILES.get(key)
            if obj is None:
                return await reply(send, 404, "no such object")
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream"),
                                    (b"x-etag", obj.etag.encode()),
                                    (b"content-length", str(obj.size).encode())]})
            async for c in obj:
                await send({"type": "http.response.body", "body": c, "more_body": True})
            return await send({"type": "http.response.body", "body": b""})
        if path == "/objlist":
            page = await env.FILES.list(prefix=q.get("prefix", ""))
            return await reply(send, 200, json.dumps([(o["key"], o["size"])
                                                      for o in page["objects"]]))
        if path == "/tasks/tick":  # a cron trigger: record the run (start, end, schedule)
            import asyncio
            import time

            started = time.time()
            info = json.loads(await body(receive))
            await asyncio.sleep(float(q.get("sleep", 0)))
            cron = dict(scope["headers"]).get(b"x-pyworkers-cron", b"").decode()
            await env.DB.batch([
                ("CREATE TABLE IF NOT EXISTS cron_runs (started REAL, ended REAL, "
                 "scheduled TEXT, header TEXT)", []),
                ("INSERT INTO cron_runs VALUES (?, ?, ?, ?)",
                 [started, time.time(), info["scheduled_time"], cron])])
            return await reply(send, 200, "ran")
        if path == "/cron-runs":
            rows = await env.DB.execute("SELECT * FROM cron_runs ORDER BY started")
            return await reply(send, 200, json.dumps(list(rows)))
        if path == "/slow-call":  # wait, then a binding call: bounded by the request deadline
            import asyncio
            import time

            await asyncio.sleep(float(q["wait"]))
            t0 = time.monotonic()
            try:
                await env.CACHE.get("x")
                outcome = "returned"
            except TimeoutError as e:
                outcome = f"TimeoutError: {e}"
            return await reply(send, 200, json.dumps(
                {"outcome": outcome, "call_s": round(time.monotonic() - t0, 2)}))
        if path == "/outside":
            e = pyworkers_env.env
            return await reply(send, 200, json.dumps(
                {"dir": dir(e), "kv": repr(e.CACHE), "has_db": "DB" in e}))
    except KeyError as e:
        return await reply(send, 404, f"KeyError: {e}")
    return await reply(send, 404, "not found")


async def body(receive):
    out = bytearray()
    async for c in chunks(receive):
        out += c
    return bytes(out)


async def chunks(receive):
    while True:
        m = await receive()
        if m.get("body"):
            yield m["body"]
        if not m.get("more_body"):
            return


async def reply(send, status, text):
    data = text.encode() if isinstance(text, str) else text
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
