"""Objects bindings: ``put`` (bytes in one call, or streamed: ``put_begin``/``put_part``/
``put_end``), ``get`` (a byte range per call: the guest streams it in :data:`CHUNK` pieces),
``head``, ``delete``, ``list(prefix, cursor, limit)``.

Embedded backend (:class:`DirObjects`): a directory ``<store>/data/<worker>/objects/<binding>/``
with ``blobs/<random hex>`` (the contents) and ``index.sqlite3`` (key -> blob, size, sha256,
upload time; WAL). A put writes a temporary file in ``uploads/``, ``fsync``s it, renames it into
``blobs/`` and then replaces the index row in one transaction (readers see the old object or the
new one), then removes the previous blob.

Limits: key 1..:data:`MAX_KEY` bytes of UTF-8; one put or part at most
:data:`MAX_PART` bytes per call (the guest splits larger values); an object at most
:data:`MAX_OBJECT` bytes (``ValueError``).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from pathlib import Path

from pyworkers.bindings._sqlite import shared

MAX_KEY = 1024
CHUNK = 1 << 20
MAX_PART = 16 << 20
MAX_OBJECT = 5 << 30
MAX_LIST = 1000


def _key(k) -> str:
    if not isinstance(k, str) or not k or len(k.encode("utf-8")) > MAX_KEY:
        raise ValueError(f"object key must be a non-empty string of at most {MAX_KEY} bytes")
    return k


def _head(row) -> dict:
    return {"key": row["key"], "size": row["size"], "etag": row["sha256"],
            "uploaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["uploaded"]))}


class _Upload:
    __slots__ = ("key", "path", "f", "size", "sha", "at")

    def __init__(self, key: str, path: Path):
        self.key, self.path = key, path
        self.f = open(path, "wb")
        self.size = 0
        self.sha = hashlib.sha256()
        self.at = time.monotonic()


class DirObjects:
    """Objects in a directory of the store (see the module docstring)."""

    SETUP = ("CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, blob TEXT NOT NULL, "
             "size INTEGER NOT NULL, sha256 TEXT NOT NULL, uploaded REAL NOT NULL)")

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        self.db = shared(self.root / "index.sqlite3", self.SETUP)
        self.uploads: dict[str, _Upload] = {}

    async def call(self, op: str, args: dict, body: bytes):
        loop = asyncio.get_running_loop()
        if op == "put":
            up = self._begin(_key(args.get("key")))
            try:
                await loop.run_in_executor(None, self._write, up, body)
            except BaseException:
                self._abort(up)
                raise
            return await self._commit(up), b""
        if op == "put_begin":
            self._expire_uploads()
            up = self._begin(_key(args.get("key")))
            token = secrets.token_hex(16)
            self.uploads[token] = up
            return {"upload": token}, b""
        if op in ("put_part", "put_end", "put_abort"):
            up = self.uploads.get(str(args.get("upload")))
            if up is None:
                raise KeyError("unknown or expired upload")
            if op == "put_part":
                try:
                    await loop.run_in_executor(None, self._write, up, body)
                except BaseException:
                    self.uploads.pop(str(args.get("upload")), None)
                    self._abort(up)
                    raise
                return None, b""
            del self.uploads[str(args.get("upload"))]
            if op == "put_abort":
                self._abort(up)
                return None, b""
            return await self._commit(up), b""
        if op == "get":
            key = _key(args.get("key"))
            offset = max(0, int(args.get("offset") or 0))
            length = max(0, min(MAX_PART, int(args.get("length") or CHUNK)))
            row = await self.db.run(lambda c: c.execute(
                "SELECT * FROM objects WHERE key = ?", (key,)).fetchone())
            if row is None:
                return {"found": False}, b""

            def read() -> bytes:
                with open(self.root / "blobs" / row["blob"], "rb") as f:
                    f.seek(offset)
                    return f.read(length)

            # a concurrent put may remove the blob: the reader then sees the new object
            try:
                data = await loop.run_in_executor(None, read)
            except FileNotFoundError:
                return await self.call(op, args, body)
            return {"found": True, **_head(row)}, data
        if op == "head":
            key = _key(args.get("key"))
            row = await self.db.run(lambda c: c.execute(
                "SELECT * FROM objects WHERE key = ?", (key,)).fetchone())
            return (None if row is None else _head(row)), b""
        if op == "delete":
            key = _key(args.get("key"))

            def delete(c):
                row = c.execute("SELECT blob FROM objects WHERE key = ?", (key,)).fetchone()
                c.execute("DELETE FROM objects WHERE key = ?", (key,))
                return row["blob"] if row else None

            blob = await self.db.run(delete)
            if blob:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.root / "blobs" / blob)
            return None, b""
        if op == "list":
            prefix = str(args.get("prefix") or "")
            after = str(args.get("cursor") or "")
            limit = max(1, min(MAX_LIST, int(args.get("limit") or MAX_LIST)))
            rows = await self.db.run(lambda c: c.execute(
                "SELECT * FROM objects WHERE key > ? AND substr(key, 1, ?) = ? ORDER BY key "
                "LIMIT ?", (after, len(prefix), prefix, limit + 1)).fetchall())
            more = len(rows) > limit
            heads = [_head(r) for r in rows[:limit]]
            return {"objects": heads, "cursor": heads[-1]["key"] if more else None}, b""
        raise ValueError(f"unknown objects operation {op!r}")

    # ------------------------------------------------------------------ puts
    def _begin(self, key: str) -> _Upload:
        return _Upload(key, self.root / "uploads" / secrets.token_hex(16))

    @staticmethod
    def _write(up: _Upload, data: bytes) -> None:
        if len(data) > MAX_PART:
            raise ValueError(f"an object part is at most {MAX_PART} bytes per call")
        if up.size + len(data) > MAX_OBJECT:
            raise ValueError(f"object {up.key!r} would exceed {MAX_OBJECT} bytes")
        up.f.write(data)
        up.sha.update(data)
        up.size += len(data)

    def _abort(self, up: _Upload) -> None:
        with contextlib.suppress(OSError):
            up.f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(up.path)

    async def _commit(self, up: _Upload) -> dict:
        def finish() -> str:
            up.f.flush()
            os.fsync(up.f.fileno())
            up.f.close()
            blob = up.path.name
            os.replace(up.path, self.root / "blobs" / blob)
            return blob

        loop = asyncio.get_running_loop()
        try:
            blob = await loop.run_in_executor(None, finish)
        except BaseException:
            self._abort(up)
            raise
        now = time.time()

        def index(c):
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute("SELECT blob FROM objects WHERE key = ?", (up.key,)).fetchone()
                c.execute("INSERT INTO objects (key, blob, size, sha256, uploaded) VALUES "
                          "(?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET blob = excluded.blob, "
                          "size = excluded.size, sha256 = excluded.sha256, "
                          "uploaded = excluded.uploaded",
                          (up.key, blob, up.size, up.sha.hexdigest(), now))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return row["blob"] if row else None

        old = await self.db.run(index)
        if old:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / "blobs" / old)
        return {"key": up.key, "size": up.size, "etag": up.sha.hexdigest(),
                "uploaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}

    def _expire_uploads(self, max_age: float = 3600.0) -> None:
        """Drop streamed uploads left unfinished for an hour (a guest that died mid-put)."""
        now = time.monotonic()
        for token, up in list(self.uploads.items()):
            if now - up.at > max_age:
                del self.uploads[token]
                self._abort(up)
