"""KV bindings: ``get``/``put`` (value ``bytes``, optional TTL in seconds)/``delete``/
``list(prefix, cursor, limit)``.

Backends: :class:`SqliteKV` (embedded default, ``<store>/data/<worker>/kv/<binding>.sqlite3``)
and :class:`RedisKV` (``url = "redis://..."``: redis-py, keys prefixed
``pyworkers:<worker>:<binding>:``, TTL as ``SET ... EX``).

Limits: key 1..:data:`MAX_KEY` bytes of UTF-8, value at most :data:`MAX_VALUE` bytes (25 MiB),
TTL at least 1 s (``ValueError`` otherwise); ``list`` returns at most 1000 keys per call.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pyworkers.bindings._sqlite import shared

MAX_KEY = 512
MAX_VALUE = 25 << 20
MAX_LIST = 1000


def check_key(key) -> str:
    if not isinstance(key, str) or not key or len(key.encode("utf-8")) > MAX_KEY:
        raise ValueError(f"KV key must be a non-empty string of at most {MAX_KEY} bytes")
    return key


def check_value(value: bytes, ttl) -> float | None:
    if len(value) > MAX_VALUE:
        raise ValueError(f"KV value is {len(value)} bytes: the limit is {MAX_VALUE} bytes "
                         "(25 MiB); use an objects binding for larger data")
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl < 1:
        raise ValueError(f"KV ttl must be a number of seconds >= 1, got {ttl!r}")
    return float(ttl)


def _limit(v) -> int:
    return max(1, min(MAX_LIST, int(v or MAX_LIST)))


class SqliteKV:
    """Embedded KV: one SQLite file (WAL), table ``kv(key, value, expires)``; expired keys are
    hidden at once and deleted lazily."""

    SETUP = ("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
             "expires REAL)")

    def __init__(self, path: Path):
        self.db = shared(path, self.SETUP)

    async def call(self, op: str, args: dict, body: bytes):
        now = time.time()
        if op == "get":
            key = check_key(args.get("key"))

            def get(c):
                row = c.execute("SELECT value, expires FROM kv WHERE key = ?", (key,)).fetchone()
                if row is None:
                    return None
                if row["expires"] is not None and row["expires"] <= now:
                    c.execute("DELETE FROM kv WHERE key = ? AND expires <= ?", (key, now))
                    return None
                return bytes(row["value"])

            v = await self.db.run(get)
            return ({"found": False}, b"") if v is None else ({"found": True}, v)
        if op == "put":
            key = check_key(args.get("key"))
            ttl = check_value(body, args.get("ttl"))
            exp = now + ttl if ttl else None
            await self.db.run(lambda c: c.execute(
                "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) ON CONFLICT(key) DO "
                "UPDATE SET value = excluded.value, expires = excluded.expires",
                (key, body, exp)))
            return None, b""
        if op == "delete":
            key = check_key(args.get("key"))
            await self.db.run(lambda c: c.execute("DELETE FROM kv WHERE key = ?", (key,)))
            return None, b""
        if op == "list":
            prefix = str(args.get("prefix") or "")
            after = str(args.get("cursor") or "")
            limit = _limit(args.get("limit"))

            def lst(c):
                rows = c.execute(
                    "SELECT key FROM kv WHERE key > ? AND substr(key, 1, ?) = ? AND "
                    "(expires IS NULL OR expires > ?) ORDER BY key LIMIT ?",
                    (after, len(prefix), prefix, now, limit + 1)).fetchall()
                return [r["key"] for r in rows]

            keys = await self.db.run(lst)
            more = len(keys) > limit
            keys = keys[:limit]
            return {"keys": keys, "cursor": keys[-1] if more else None}, b""
        raise ValueError(f"unknown KV operation {op!r}")


class RedisKV:
    """KV on a Redis/Valkey server (redis-py's asyncio client), keys prefixed per worker and
    binding so workers sharing a server never see each other's keys."""

    def __init__(self, url: str, prefix: str):
        import redis.asyncio as aioredis

        self.url = url
        self.prefix = prefix
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=5)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _client(self):
        # a redis.asyncio client is bound to the loop it first ran on
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            import redis.asyncio as aioredis

            self.client = aioredis.Redis.from_url(self.url, socket_connect_timeout=5)
            self.loop = loop
        return self.client

    async def call(self, op: str, args: dict, body: bytes):
        r = self._client()
        if op == "get":
            v = await r.get(self.prefix + check_key(args.get("key")))
            return ({"found": False}, b"") if v is None else ({"found": True}, bytes(v))
        if op == "put":
            key = check_key(args.get("key"))
            ttl = check_value(body, args.get("ttl"))
            await r.set(self.prefix + key, body, px=int(ttl * 1000) if ttl else None)
            return None, b""
        if op == "delete":
            await r.delete(self.prefix + check_key(args.get("key")))
            return None, b""
        if op == "list":
            prefix = str(args.get("prefix") or "")
            limit = _limit(args.get("limit"))
            cursor = int(args.get("cursor") or 0)
            pattern = _glob_escape(self.prefix + prefix) + "*"
            keys: list[str] = []
            while True:
                cursor, batch = await r.scan(cursor=cursor, match=pattern, count=max(limit, 100))
                keys += [k.decode("utf-8")[len(self.prefix):] for k in batch]
                if cursor == 0 or len(keys) >= limit:
                    break
            return {"keys": sorted(keys), "cursor": str(cursor) if cursor else None}, b""
        raise ValueError(f"unknown KV operation {op!r}")


def _glob_escape(s: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)


def check_redis(url: str, timeout: float = 5.0) -> None:
    """Connect and ``PING`` (deploy's reachability check). Raises ``OSError``/redis errors."""
    import redis

    c = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        c.ping()
    finally:
        c.close()
