"""Outbound network from a deployed FastAPI app's request handlers (issue 12), end to end:
``pyworkers deploy`` of ``tests/data/net/clients_app`` (fastapi, httpx, requests, redis, pg8000,
websockets from the package index: ``network``), served by a real ``pyworkers serve --store``
process, each endpoint called over HTTP. The handlers reach real servers on 127.0.0.1 started
here (``_net``): plain HTTP, HTTPS with a CA made by the ``openssl`` CLI (trusted through the
app's ``[outbound] ca_certificates``), a WebSocket echo server, ``redis-server`` and a throwaway
PostgreSQL cluster; async clients from ``async def`` handlers, blocking ones from ``def``
handlers. A second deployment of the same app without ``ca_certificates`` shows the CA is
refused without it, and an HTTPS server whose certificate names another host is refused for the
hostname."""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from _net import (http_server, make_pki, postgres_server, redis_server, server_tls_context,
                  websocket_server)
from test_serve import Server

pytestmark = [pytest.mark.slow, pytest.mark.network]
APP = Path(__file__).parent / "data" / "net" / "clients_app"


def _sign_other_host(pki: dict, d: Path, hostname: str = "other.example") -> dict:
    """A server certificate signed by ``pki``'s CA that names only ``hostname`` (no IP)."""
    d.mkdir(parents=True, exist_ok=True)
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True, timeout=60)  # noqa: E731
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "server.key"),
        "-out", str(d / "server.csr"), "-subj", f"/CN={hostname}")
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{hostname}\nbasicConstraints=CA:FALSE\n"
                               "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(pki["ca"]),
        "-CAkey", str(Path(pki["ca"]).with_name("ca.key")), "-CAcreateserial",
        "-out", str(d / "server.pem"), "-days", "2", "-extfile", str(d / "ext.cnf"))
    return {"ca": pki["ca"], "cert": d / "server.pem", "key": d / "server.key"}


def _deploy(app: Path, store: Path, *extra: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "pyworkers", "deploy", str(app), "--store",
                        str(store), "--json", *extra], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The upstream servers, the two deployments and one ``pyworkers serve`` of the store."""
    tmp = tmp_path_factory.mktemp("served-clients")
    pki = make_pki(tmp / "pki")
    other = _sign_other_host(pki, tmp / "other")
    # the app as deployed: a copy with the test's CA, and a copy without ca_certificates
    with_ca = tmp / "apps" / "clients"
    shutil.copytree(APP, with_ca)
    (with_ca / "certs").mkdir()
    shutil.copy(pki["ca"], with_ca / "certs" / "ca.pem")
    no_ca = tmp / "apps" / "clients-noca"
    shutil.copytree(APP, no_ca)
    toml = (no_ca / "pyworkers.toml").read_text()
    (no_ca / "pyworkers.toml").write_text(re.sub(r"(?m)^ca_certificates = .*\n", "", toml))
    store = tmp / "store"
    deps = {"clients": _deploy(with_ca, store),
            "clients-noca": _deploy(no_ca, store, "--name", "clients-noca")}
    with contextlib.ExitStack() as st:
        ups = {
            "http": st.enter_context(http_server()),
            "https": st.enter_context(http_server(tls=server_tls_context(pki))),
            "https_other": st.enter_context(http_server(tls=server_tls_context(other))),
            "redis": st.enter_context(redis_server(tmp)),
            "pg": st.enter_context(postgres_server(tmp / "pg")),
            "ws": st.enter_context(websocket_server()),
        }
        srv = Server([sys.executable, "-m", "pyworkers", "serve", "--store", str(store),
                      "--port", "0", "--max-isolates", "1", "--min-idle", "1"],
                     tmp / "serve.log").wait_ready()
        st.callback(srv.stop)
        client = st.enter_context(httpx.Client(base_url=srv.url, timeout=60))
        yield {"ups": ups, "deps": deps, "server": srv, "client": client}


def get(env, route: str, worker: str = "clients", **params) -> httpx.Response:
    """``GET route?params`` on ``worker`` (routed by the Host header ``<worker>.localhost``)."""
    return env["client"].get(route, params=params, headers={"host": f"{worker}.localhost"})


def ok(r: httpx.Response, env) -> httpx.Response:
    assert r.status_code == 200, (r.status_code, r.text, env["server"].text()[-4000:])
    return r


def test_deployments_record_the_outbound_policy(env):
    assert env["deps"]["clients"]["config"]["outbound"] == {
        "allow": ["127.0.0.1:*"], "ca_certificates": "certs/ca.pem"}
    assert env["deps"]["clients-noca"]["config"]["outbound"] == {"allow": ["127.0.0.1:*"]}
    for dep in env["deps"].values():
        assert dep["smoke"]["status"] == 200
    assert ok(get(env, "/"), env).json()["clients"][0] == "httpx"


def test_httpx_async_client_http_and_https(env):
    u = env["ups"]
    r = ok(get(env, "/httpx-async", url=f"http://127.0.0.1:{u['http']}/plain-async"), env)
    assert r.text == "httpx.AsyncClient HTTP/1.1: hello from /plain-async"
    r = ok(get(env, "/httpx-async", url=f"https://localhost:{u['https']}/tls-async"), env)
    assert r.text == "httpx.AsyncClient HTTP/1.1: hello from /tls-async"


def test_httpx_sync_client(env):
    u = env["ups"]
    r = ok(get(env, "/httpx-sync", url=f"http://127.0.0.1:{u['http']}/echo"), env)
    assert r.text == "httpx.Client: posted by httpx.Client"
    r = ok(get(env, "/httpx-sync", url=f"https://localhost:{u['https']}/echo"), env)
    assert r.text == "httpx.Client: posted by httpx.Client"


def test_requests(env):
    u = env["ups"]
    r = ok(get(env, "/requests", url=f"http://127.0.0.1:{u['http']}/req"), env)
    assert r.text == "requests: hello from /req"
    r = ok(get(env, "/requests", url=f"https://localhost:{u['https']}/req-tls"), env)
    assert r.text == "requests: hello from /req-tls"


def test_urllib_request_and_http_client(env):
    u = env["ups"]
    r = ok(get(env, "/urllib", url=f"http://127.0.0.1:{u['http']}/urllib"), env)
    assert r.text == "urllib.request 200: hello from /urllib"
    r = ok(get(env, "/urllib", url=f"https://localhost:{u['https']}/urllib-tls"), env)
    assert r.text == "urllib.request 200: hello from /urllib-tls"
    r = ok(get(env, "/http-client", host="localhost", port=u["https"], path="/hc", tls="true"),
           env)
    assert r.text == "http.client 200: hello from /hc"


def test_asyncio_open_connection_plain_and_with_ssl(env):
    u = env["ups"]
    r = ok(get(env, "/open-connection", host="127.0.0.1", port=u["http"], path="/oc"), env)
    assert r.text == "asyncio.open_connection plain 200: hello from /oc"
    r = ok(get(env, "/open-connection", host="localhost", port=u["https"], path="/oc-tls",
               tls="true"), env)
    assert re.fullmatch(r"asyncio\.open_connection TLSv1\.[23] 200: hello from /oc-tls",
                        r.text), r.text


def test_websockets_client(env):
    r = ok(get(env, "/websocket", url=f"ws://127.0.0.1:{env['ups']['ws']}", msg="ping"), env)
    assert r.json() == {"replies": ["echo: ping 0", "echo: ping 1", "echo: ping 2"]}


def test_redis_sync_and_asyncio(env):
    port = env["ups"]["redis"]
    r = ok(get(env, "/redis-sync", port=port, key="k-sync"), env)
    assert r.json() == {"get": "set by redis-py", "incr": [1, 2]}
    r = ok(get(env, "/redis-async", port=port, key="k-async"), env)
    assert r.json() == {"lrange": ["a", "b", "c"], "llen": 3}


def test_pg8000(env):
    port, user, password = env["ups"]["pg"]
    r = ok(get(env, "/pg", port=port, user=user, password=password, name="row"), env)
    body = r.json()
    assert body["rows"] == [[1, "row"], [2, "row!"]]
    assert body["server_version_num"] >= 100000


def _fails(env, worker: str, route: str, needle: str, **params) -> str:
    """``GET route`` on ``worker`` fails in the handler: Starlette's 500 goes out, then the
    server logs the exception, whose text includes ``needle``. Returns that log part."""
    srv = env["server"]
    start = len(srv.text())
    r = get(env, route, worker, **params)
    assert (r.status_code, r.text) == (500, "Internal Server Error"), (r.status_code, r.text)
    # the log lines follow the response: wait for this request's traceback
    line = re.compile(rf"\[{re.escape(worker)}#\d+\] GET {re.escape(route)}: "
                      "exception after the response was sent\n")
    deadline = time.monotonic() + 30
    part = srv.text()[start:]
    while not (line.search(part) and needle in part) and time.monotonic() < deadline:
        time.sleep(0.1)
        part = srv.text()[start:]
    assert line.search(part), f"{line.pattern!r} not in the server log:\n{part[-4000:]}"
    assert needle in part, f"{needle!r} not in the server log:\n{part[-4000:]}"
    return part


def test_a_certificate_for_another_host_is_refused(env):
    port = env["ups"]["https_other"]
    _fails(env, "clients", "/httpx-async",
           "httpx.ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
           "Hostname mismatch, certificate is not valid for 'localhost'",
           url=f"https://localhost:{port}/wrong-host")
    _fails(env, "clients", "/requests",
           "requests.exceptions.SSLError: HTTPSConnectionPool(host='localhost', "
           f"port={port}): Max retries exceeded with url: /wrong-host-sync (Caused by "
           "SSLError(SSLCertVerificationError(1, \"[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
           "verify failed: Hostname mismatch, certificate is not valid for 'localhost'",
           url=f"https://localhost:{port}/wrong-host-sync")


def test_without_ca_certificates_the_test_ca_is_refused(env):
    u = env["ups"]
    # the same app without the CA still reaches plain HTTP ...
    r = ok(get(env, "/httpx-async", "clients-noca", url=f"http://127.0.0.1:{u['http']}/p"), env)
    assert r.text == "httpx.AsyncClient HTTP/1.1: hello from /p"
    # ... but not the HTTPS server whose CA only the other deployment trusts
    _fails(env, "clients-noca", "/httpx-async",
           "httpx.ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
           "unable to get local issuer certificate",
           url=f"https://localhost:{u['https']}/noca")
    _fails(env, "clients-noca", "/open-connection",
           # (the guest names it _ssl.SSLCertVerificationError, native CPython ssl.…)
           "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
           "failed: unable to get local issuer certificate",
           host="localhost", port=u["https"], path="/noca-oc", tls="true")
