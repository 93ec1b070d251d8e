"""A plain ASGI app (no dependencies) keeping its data in SQLite on a persistent volume.

- ``POST /add?who=W``: in one transaction, insert a row and increment the counter
  (``sqlite3`` on ``/data/app.db``: SQLite's own locking across isolates and processes);
- ``GET /count``: ``{"rows", "counter", "whos", "isolates"}`` (distinct writers and isolates);
- ``POST /write-app``: tries to write into the read-only app directory, answers the error;
- ``POST /fill?mb=N``: writes N MiB to ``/data/fill.bin`` then removes it (507 with the error
  past ``max_size``);
- ``GET /files``: ``os.listdir("/data")``.
"""
import json
import os
import sqlite3
from urllib.parse import parse_qs

DB = "/data/app.db"
_token = []


def token():
    """This isolate's random token (made at the first request: after the snapshot restore)."""
    if not _token:
        _token.append(os.urandom(8).hex())
    return _token[0]


def connect():
    c = sqlite3.connect(DB, timeout=60)
    c.execute("CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, who TEXT NOT NULL, "
              "iso TEXT NOT NULL)")
    c.execute("CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    c.execute("INSERT OR IGNORE INTO counter (id, n) VALUES (1, 0)")
    c.commit()
    return c


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"][len(scope.get("root_path", "")):]
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/add":
        c = connect()
        try:
            with c:
                c.execute("INSERT INTO entries (who, iso) VALUES (?, ?)", (q["who"], token()))
                n = c.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0]
                c.execute("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))  # read-modify-write
        finally:
            c.close()
        return await reply(send, 200, "ok")
    if path == "/count":
        c = connect()
        try:
            rows = c.execute("SELECT count(*), count(DISTINCT who), count(DISTINCT iso) "
                             "FROM entries").fetchone()
            n = c.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0]
        finally:
            c.close()
        return await reply(send, 200, json.dumps({"rows": rows[0], "whos": rows[1], "isolates": rows[2],
                                            "counter": n}))
    if path == "/write-app":
        try:
            with open("/app/notes.txt", "w") as f:
                f.write("x")
        except OSError as e:
            return await reply(send, 500, f"{type(e).__name__}: {e}")
        return await reply(send, 200, "written?")
    if path == "/fill":  # write MiB to /data/fill.bin (past max_size: ENOSPC)
        try:
            with open("/data/fill.bin", "wb") as f:
                for _ in range(int(q["mb"])):
                    f.write(b"x" * (1 << 20))
        except OSError as e:
            return await reply(send, 507, f"{type(e).__name__}: {e}")
        finally:
            if os.path.exists("/data/fill.bin"):
                os.remove("/data/fill.bin")
        return await reply(send, 200, "filled")
    if path == "/files":
        return await reply(send, 200, json.dumps(sorted(os.listdir("/data"))))
    return await reply(send, 200, "volume app\n")


async def reply(send, status, text):
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
