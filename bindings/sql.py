"""SQL bindings: ``execute(sql, params)`` and ``batch([(sql, params), ...])``.

Backends: :class:`SqliteSQL` (embedded default, ``<store>/data/<worker>/sql/<binding>.sqlite3``,
WAL, one host-side connection per process on its own thread) and :class:`PostgresSQL`
(``url = "postgresql://user:password@host:port/db"``, or ``?host=/socket/dir``; pg8000 on the
host). Parameters are positional, written ``?`` in the SQL for both backends (pg8000's
``qmark`` style).

Results: ``{"rows": [{column: value}], "rowcount": int, "last_row_id": int | None}``; values
are JSON scalars, ``bytes`` (tagged ``{"$b64": ...}`` on the wire), or their ``str()`` for other
types (dates, decimals). ``batch`` runs every statement in one transaction: all or nothing.
SQL errors reach the app as ``ValueError`` with the database's message. Limit: a result of at
most :data:`MAX_RESULT` bytes.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pyworkers.bindings._sqlite import shared

MAX_RESULT = 64 << 20


def _param(v):
    if isinstance(v, dict) and set(v) == {"$b64"}:
        return base64.b64decode(v["$b64"])
    return v


def _params(p) -> list:
    if p is None:
        return []
    if not isinstance(p, list):
        raise ValueError("SQL params must be a list (positional, ? placeholders)")
    return [_param(v) for v in p]


def _value(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(v)).decode()}
    return str(v)


def _statements(args: dict, op: str) -> list[tuple[str, list]]:
    if op == "execute":
        items = [(args.get("sql"), args.get("params"))]
    elif op == "batch":
        items = args.get("statements")
        if not isinstance(items, list) or not items:
            raise ValueError("batch needs a non-empty list of (sql, params)")
    else:
        raise ValueError(f"unknown SQL operation {op!r}")
    out = []
    for sql, params in items:
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError("SQL must be a non-empty string")
        out.append((sql, _params(params)))
    return out


def _encode(results: list[dict], op: str) -> tuple[None, bytes]:
    data = json.dumps(results[0] if op == "execute" else results,
                      separators=(",", ":")).encode()
    if len(data) > MAX_RESULT:
        raise ValueError(f"SQL result is {len(data)} bytes: the limit is {MAX_RESULT}; "
                         "select fewer rows (LIMIT/OFFSET)")
    return None, data


def _rows(cur) -> list[dict]:
    if cur.description is None:
        return []
    names = [d[0] for d in cur.description]
    return [{n: _value(v) for n, v in zip(names, row)} for row in cur.fetchall()]


class SqliteSQL:
    """Embedded SQL: one SQLite database (WAL, busy timeout) per worker and binding."""

    def __init__(self, path: Path):
        self.db = shared(path)

    async def call(self, op: str, args: dict, body: bytes):
        stmts = _statements(args, op)

        def run(c: sqlite3.Connection) -> list[dict]:
            out = []
            c.execute("BEGIN IMMEDIATE" if op == "batch" else "BEGIN")
            try:
                for sql, params in stmts:
                    cur = c.execute(sql, params)
                    rows = _rows(cur)
                    out.append({"rows": rows, "rowcount": cur.rowcount,
                                "last_row_id": cur.lastrowid})
                c.execute("COMMIT")
            except sqlite3.Error as e:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise ValueError(f"SQL error: {e}") from None
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            return out

        return _encode(await self.db.run(run), op)


def pg_connect_kwargs(url: str) -> dict:
    """pg8000 ``connect()`` keyword arguments from a ``postgresql://`` URL (``host`` query
    parameter: a unix socket directory)."""
    u = urlsplit(url)
    q = parse_qs(u.query)
    kw = {"user": unquote(u.username or "postgres"),
          "database": unquote(u.path.lstrip("/")) or None}
    if u.password is not None:
        kw["password"] = unquote(u.password)
    sock_dir = (q.get("host") or [None])[0]
    port = u.port or 5432
    if sock_dir and sock_dir.startswith("/"):
        kw["unix_sock"] = f"{sock_dir}/.s.PGSQL.{port}"
    else:
        kw["host"] = u.hostname or "127.0.0.1"
        kw["port"] = port
    return kw


class PostgresSQL:
    """SQL on a PostgreSQL server: one pg8000 connection per binding and process, used from
    its own thread (statements of one binding run one at a time; a lost connection is
    reopened on the next call)."""

    def __init__(self, url: str):
        self.url = url
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="postgres")
        self.conn = None

    def _connect(self):
        import pg8000.dbapi

        # pg8000 reads its module-level paramstyle at each execute: "?" like SQLite
        pg8000.dbapi.paramstyle = "qmark"
        if self.conn is None:
            self.conn = pg8000.dbapi.connect(timeout=30, **pg_connect_kwargs(self.url))
        return self.conn

    def _run(self, stmts: list[tuple[str, list]]) -> list[dict]:
        import pg8000.dbapi

        conn = self._connect()
        out = []
        try:
            cur = conn.cursor()
            for sql, params in stmts:
                cur.execute(sql, params)
                out.append({"rows": _rows(cur), "rowcount": cur.rowcount, "last_row_id": None})
            conn.commit()
        except pg8000.dbapi.DatabaseError as e:
            self._rollback()
            info = e.args[0] if e.args else e
            msg = info.get("M", str(info)) if isinstance(info, dict) else str(info)
            raise ValueError(f"SQL error: {msg}") from None
        except BaseException:
            self._rollback()
            raise
        return out

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception:  # noqa: BLE001 - the connection is broken: reopen next time
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
            self.conn = None

    async def call(self, op: str, args: dict, body: bytes):
        stmts = _statements(args, op)
        loop = asyncio.get_running_loop()
        return _encode(await loop.run_in_executor(self.pool, self._run, stmts), op)


def check_postgres(url: str, timeout: float = 5.0) -> None:
    """Connect and run ``SELECT 1`` (deploy's reachability check). Raises the client's
    error."""
    import pg8000.dbapi

    conn = pg8000.dbapi.connect(timeout=timeout, **pg_connect_kwargs(url))
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
    finally:
        conn.close()
