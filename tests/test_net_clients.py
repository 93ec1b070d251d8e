"""Real client libraries in the sandbox, unchanged, against real servers on 127.0.0.1:
httpx (sync and async, HTTP and HTTPS), requests (urllib3 on its socket path), redis-py (sync
and asyncio), pg8000 (PostgreSQL) and websockets. The wheels are resolved from the package
index into a layer (``network``)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from _net import (http_server, make_pki, postgres_server, redis_server, server_tls_context,
                  websocket_server)
from pyworkers.runtime import Isolate
from pyworkers.runtime.egress import Policy

pytestmark = [pytest.mark.slow, pytest.mark.network]
CLIENTS = ["httpx", "requests", "redis", "pg8000", "websockets"]
LOCK314 = Path(__file__).parent / "data" / "packages" / "pyodide-lock-314.json"


@pytest.fixture(scope="module")
def client_layer(tmp_path_factory):
    from pyworkers.compat import select
    from pyworkers.packages import install_layer, resolve

    res = resolve(CLIENTS, select("2026-11-15"), pyodide_lock=LOCK314)
    return install_layer(res, tmp_path_factory.mktemp("layer") / "site-packages").path


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("servers")
    pki = make_pki(tmp / "pki")
    with contextlib.ExitStack() as st:
        yield {
            "pki": pki,
            "http": st.enter_context(http_server()),
            "https": st.enter_context(http_server(tls=server_tls_context(pki))),
            "redis": st.enter_context(redis_server(tmp)),
            "pg": st.enter_context(postgres_server(tmp / "pg")),
            "ws": st.enter_context(websocket_server()),
        }


@pytest.fixture
def iso(runtime_314, client_layer, servers):
    pol = Policy.build(allow=["127.0.0.1", "localhost"], ca_pem=servers["pki"]["ca"].read_text())
    with Isolate(runtime_314, site_packages=client_layer, egress=pol) as i:
        yield i


def test_httpx_sync_and_async_over_http_and_https(iso, servers):
    iso.run(f"""
import asyncio, httpx
sync = [httpx.get("http://127.0.0.1:{servers['http']}/sync").text,
        httpx.post("https://localhost:{servers['https']}/post", content=b"x" * 70000).content == b"x" * 70000]
async def main():
    async with httpx.AsyncClient() as c:
        rs = await asyncio.gather(*(c.get(f"https://localhost:{servers['https']}/a{{i}}") for i in range(5)),
                                  c.get("http://127.0.0.1:{servers['http']}/plain"))
        return [r.text for r in rs]
asy = asyncio.run(main())
try:
    httpx.get("https://127.0.0.1:{servers['https']}/", verify=False)
    unverified = "ok"
except Exception as e:
    unverified = repr(e)
""")
    assert iso.eval("sync") == "['hello from /sync', True]"
    assert iso.eval("asy") == repr([f"hello from /a{i}" for i in range(5)] + ["hello from /plain"])
    assert iso.eval("unverified") == "'ok'"


def test_requests_takes_urllib3s_socket_path(iso, servers):
    iso.run(f"""
import requests, urllib3, urllib3.connectionpool
r1 = requests.get("http://127.0.0.1:{servers['http']}/req")
r2 = requests.post("https://localhost:{servers['https']}/p", data=b"payload")
out = (r1.status_code, r1.text, r2.text,
       urllib3.connectionpool.HTTPConnectionPool.ConnectionCls.__module__)
""")
    assert iso.eval("out") == "(200, 'hello from /req', 'payload', 'urllib3.connection')"


def test_redis_sync_and_asyncio(iso, servers):
    iso.run(f"""
import asyncio, redis, redis.asyncio
r = redis.Redis(host="127.0.0.1", port={servers['redis']})
r.set("greeting", "hi")
sync = (r.get("greeting"), r.incr("n"), r.incr("n"))
async def main():
    a = redis.asyncio.Redis(host="localhost", port={servers['redis']})
    await a.rpush("q", "x", "y")
    got = await a.lrange("q", 0, -1)
    await a.aclose()
    return got
asy = asyncio.run(main())
""")
    assert iso.eval("sync") == "(b'hi', 1, 2)"
    assert iso.eval("asy") == "[b'x', b'y']"


def test_pg8000_queries_a_postgres_cluster(iso, servers):
    port, user, password = servers["pg"]
    iso.run(f"""
import pg8000.native
con = pg8000.native.Connection({user!r}, host="127.0.0.1", port={port}, password={password!r},
                               database="postgres")
con.run("create temporary table t (id int, name text)")
con.run("insert into t values (:i, :n)", i=1, n="one")
rows = con.run("select id, name from t")
ver = con.run("select current_setting('server_version_num')::int")[0][0]
con.close()
""")
    assert iso.eval("rows") == "[[1, 'one']]"
    assert int(iso.eval("ver")) >= 100000


def test_websockets_client(iso, servers):
    iso.run(f"""
import asyncio
from websockets.asyncio.client import connect
async def main():
    async with connect("ws://127.0.0.1:{servers['ws']}") as ws:
        await ws.send("ping")
        return await ws.recv()
ws_reply = asyncio.run(main())
""")
    assert iso.eval("ws_reply") == "'echo: ping'"
