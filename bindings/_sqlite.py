"""A SQLite connection owned by one thread (the embedded backends' shared helper).

Every embedded backend (KV, SQL, the objects index) keeps one connection per file in this
process, used only from its own single-thread executor; WAL and a busy timeout make the file
safe to share with other processes (``pyworkers serve --workers``, a second server). See
https://www.sqlite.org/wal.html."""
from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

#: milliseconds a writer waits for another connection's lock before SQLITE_BUSY
BUSY_TIMEOUT_MS = 30_000


class ThreadConnection:
    """``await run(fn)`` runs ``fn(conn)`` on this file's own thread (``conn``: an
    autocommit ``sqlite3.Connection`` in WAL mode, rows as ``sqlite3.Row``)."""

    def __init__(self, path: Path, setup: str = ""):
        self.path = Path(path)
        self.setup = setup
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"sqlite {path.name}")
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                timeout=BUSY_TIMEOUT_MS / 1000)
            c.row_factory = sqlite3.Row
            c.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            c.execute("PRAGMA journal_mode = WAL")
            c.execute("PRAGMA synchronous = NORMAL")
            if self.setup:
                c.executescript(self.setup)
            self._conn = c
        return self._conn

    def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` on the connection's thread and wait (blocking)."""
        return self.pool.submit(lambda: fn(self._connect())).result()

    async def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(self._connect()))


_open: dict[str, ThreadConnection] = {}
_lock = threading.Lock()


def shared(path: Path, setup: str = "") -> ThreadConnection:
    """The process's one :class:`ThreadConnection` for ``path``."""
    key = str(Path(path).resolve())
    with _lock:
        tc = _open.get(key)
        if tc is None:
            tc = _open[key] = ThreadConnection(Path(path), setup)
        return tc
