"""SQLModel on ``sqlite:////data/app.db`` in a persistent volume (a plain ASGI app around it, so
only sqlmodel is needed from the package index).

- ``POST /add?who=W``: one ``Entry`` row and a read-modify-write of ``Counter`` 1, one session
  and transaction (``BEGIN IMMEDIATE``: SQLite's write lock first, so no update is lost);
- ``GET /count``: ``{"rows", "counter", "isolates"}``.
"""
import json
import os
from urllib.parse import parse_qs

from sqlalchemy import event
from sqlmodel import Field, Session, SQLModel, create_engine, func, select


class Entry(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    who: str
    iso: str


class Counter(SQLModel, table=True):
    id: int = Field(primary_key=True)
    n: int = 0


engine = create_engine("sqlite:////data/app.db", connect_args={"timeout": 60})


@event.listens_for(engine, "connect")
def _connect(dbapi_conn, _record):
    dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN (below), not the driver


@event.listens_for(engine, "begin")
def _begin(conn):
    conn.exec_driver_sql("BEGIN IMMEDIATE")


_ready = []
_token = []


def setup():
    if not _ready:
        SQLModel.metadata.create_all(engine)
        with Session(engine) as s:
            if s.get(Counter, 1) is None:
                s.add(Counter(id=1, n=0))
                s.commit()
        _ready.append(True)
        _token.append(os.urandom(8).hex())


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    setup()
    path = scope["path"][len(scope.get("root_path", "")):]
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/add":
        with Session(engine) as s:
            s.add(Entry(who=q["who"], iso=_token[0]))
            c = s.get(Counter, 1)
            c.n += 1
            s.add(c)
            s.commit()
        body = "ok"
    elif path == "/count":
        with Session(engine) as s:
            rows = s.exec(select(func.count()).select_from(Entry)).one()
            isos = s.exec(select(func.count(func.distinct(Entry.iso)))).one()
            body = json.dumps({"rows": rows, "counter": s.get(Counter, 1).n, "isolates": isos})
    else:
        body = "sqlmodel volume app"
    data = body.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
