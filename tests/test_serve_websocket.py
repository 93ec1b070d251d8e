"""End-to-end WebSockets through ``pyworkers serve`` (issue 11), driven by a real WebSocket
client (the ``websockets`` package's sync client) against a real ``python -m pyworkers serve
APP_DIR --port 0`` subprocess on 127.0.0.1.

- ``tests/data/serve/chat/asgi`` (plain ASGI, no network): the raw ``websocket`` scope and
  messages; run against ``pyworkers serve`` and, as the reference the contract follows
  ("through uvicorn's WebSocket support"), against native uvicorn running the same file;
- ``tests/data/serve/chat/fastapi`` (FastAPI from the package index: ``network``): a
  ``@app.websocket`` echo and a broadcast chat, close codes, subprotocols, a rejected handshake.

Both servers run one isolate (``--max-isolates 1``): a broadcast room lives in one isolate's
memory, so its members must share the isolate.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from test_serve import Server, pyworkers_serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "serve" / "chat"
RAW_APP, FASTAPI_APP = DATA / "asgi", DATA / "fastapi"


def ws_connect(url: str, **kw):
    """A client connection (no proxy from the environment, generous timeouts)."""
    kw.setdefault("open_timeout", 60)
    return connect(url, proxy=None, close_timeout=10, **kw)


def recv(ws, timeout: float = 20):
    return ws.recv(timeout=timeout)


def poll_json(url: str, until, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(url, timeout=60).json()
        if until(body) or time.monotonic() > deadline:
            assert until(body), f"GET {url}: still {body} after {timeout} s"
            return body
        time.sleep(0.1)


# ---------------------------------------------------------------------------- raw ASGI
@pytest.fixture(scope="module", params=["pyworkers", "native"])
def raw(request, tmp_path_factory):
    """The plain ASGI app under ``pyworkers serve`` and, as reference, native uvicorn."""
    log = tmp_path_factory.mktemp(f"raw-{request.param}") / "serve.log"
    if request.param == "pyworkers":
        # a WebSocket is not a request with a deadline: it outlives --request-timeout
        s = pyworkers_serve(str(RAW_APP), "--max-isolates", "1", "--min-idle", "1",
                            "--request-timeout", "1", log=log)
    else:
        s = Server([sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(RAW_APP),
                    "--host", "127.0.0.1", "--port", "0"], log)
    s.kind = request.param
    s.wait_ready()
    yield s
    assert s.stop() == 0


def test_websocket_scope_handshake_and_echo(raw):
    with ws_connect(raw.ws + "/scope?a=1&b=%20x", subprotocols=["raw.v1", "other"],
                    additional_headers={"x-test": "yes"}) as ws:
        assert ws.subprotocol == "raw.v1"
        assert ws.response.headers["x-accepted"] == "yes"  # headers from websocket.accept
        scope = json.loads(recv(ws))
        ws.send("héllo ✓")
        assert recv(ws) == "héllo ✓"  # text stays text
        ws.send(b"\x00\xff bytes")
        assert recv(ws) == b"\x00\xff bytes"  # bytes stay bytes
        big = os.urandom(512 * 1024)
        ws.send(big)
        assert recv(ws) == big
    assert scope == {
        "type": "websocket", "asgi": scope["asgi"], "scheme": "ws", "http_version": "1.1",
        "path": "/scope", "raw_path": "/scope", "root_path": "", "query_string": "a=1&b=%20x",
        "subprotocols": ["raw.v1", "other"], "x_test": ["yes"], "client_host": "127.0.0.1",
        "server_host": "127.0.0.1", "state_is_dict": True}
    assert scope["asgi"]["version"] == "3.0"


def test_burst_of_messages_arrives_in_order(raw):
    with ws_connect(raw.ws + "/scope") as ws:
        recv(ws)
        for i in range(300):
            ws.send(f"m{i}" if i % 3 else f"m{i}".encode())
        got = [recv(ws) for _ in range(300)]
    assert got == [f"m{i}" if i % 3 else f"m{i}".encode() for i in range(300)]


def test_websocket_outlives_the_request_timeout(raw):
    """``pyworkers serve --request-timeout 1``: a connection open for 2.5 s keeps working."""
    with ws_connect(raw.ws + "/scope") as ws:
        recv(ws)
        ws.send("before")
        assert recv(ws) == "before"
        time.sleep(2.5)
        ws.send("after")
        assert recv(ws) == "after"
    assert httpx.get(raw.url + "/stats", timeout=60).status_code == 200


def test_websocket_routed_by_path_prefix_gets_root_path(raw):
    if raw.kind == "native":
        pytest.skip("routing by deployment name is pyworkers serve's")
    with ws_connect(raw.ws + "/wsraw/scope") as ws:
        scope = json.loads(recv(ws))
    assert (scope["root_path"], scope["path"]) == ("/wsraw", "/wsraw/scope")


def test_client_close_code_reaches_the_app_as_websocket_disconnect(raw):
    with ws_connect(raw.ws + "/scope") as ws:
        recv(ws)
        ws.close(code=4100, reason="client leaves")
    poll_json(raw.url + "/stats", lambda b: ["/scope", 4100] in b["disconnects"])


def test_dropped_connection_reaches_the_app_as_websocket_disconnect(raw):
    """The client's TCP connection goes away without a close frame: the app's ``receive()``
    returns ``websocket.disconnect`` (uvicorn reports code 1005 or 1006, "no close frame")."""
    before = len(httpx.get(raw.url + "/stats", timeout=60).json()["disconnects"])
    with ws_connect(raw.ws + "/scope") as ws:
        recv(ws)
        ws.socket.shutdown(socket.SHUT_RDWR)
        ws.socket.close()
    body = poll_json(raw.url + "/stats", lambda b: len(b["disconnects"]) == before + 1)
    assert body["disconnects"][-1] in (["/scope", 1005], ["/scope", 1006]), body


def test_broadcast_room_and_leave(raw):
    names = ["alice", "bob", "carol"]
    with ExitStack() as stack:
        clients = {}
        for i, n in enumerate(names):
            clients[n] = stack.enter_context(ws_connect(raw.ws + f"/room?name={n}"))
            for m in names[:i + 1]:  # everyone already in hears the join
                assert recv(clients[m]) == f"{n} joined"
        clients["alice"].send("hi all")
        for n in names:
            assert recv(clients[n]) == "alice: hi all"
        clients.pop("bob").close(code=1000)
        for n in ("alice", "carol"):
            assert recv(clients[n]) == "bob left (1000)"
        assert httpx.get(raw.url + "/stats", timeout=60).json()["members"] == ["alice", "carol"]
    poll_json(raw.url + "/stats", lambda b: b["members"] == [])


def test_server_side_close_code_and_reason_reach_the_client(raw):
    with ws_connect(raw.ws + "/close?code=4001") as ws:
        with pytest.raises(ConnectionClosed) as e:
            recv(ws)
    assert (e.value.rcvd.code, e.value.rcvd.reason) == (4001, "custom")


def test_close_before_accept_is_http_403(raw):
    with pytest.raises(InvalidStatus) as e:
        ws_connect(raw.ws + "/deny")
    assert e.value.response.status_code == 403


def test_many_websockets_at_once_on_one_isolate(raw):
    """20 connections open together on the one isolate, each echoing in its own thread."""
    errors: list[BaseException] = []
    tokens = []

    def client(k: int) -> None:
        try:
            with ws_connect(raw.ws + "/scope") as ws:
                recv(ws)
                for i in range(5):
                    ws.send(f"{k}:{i}")
                    assert recv(ws) == f"{k}:{i}"
                    time.sleep(0.05)
                tokens.append(k)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert sorted(tokens) == list(range(20))


def test_isolate_crash_closes_its_websockets_and_a_new_isolate_takes_over(raw):
    """The app aborts while two connections are open in its isolate: both are closed at once
    (1011 internal error, or 1006 if the connection just drops), not left hanging, and a new
    connection is served by a fresh isolate. Last raw test: it replaces the isolate."""
    if raw.kind == "native":
        pytest.skip("os.abort() ends the native server process")
    token = httpx.get(raw.url + "/stats", timeout=60).json()["token"]
    with ws_connect(raw.ws + "/scope") as bystander, ws_connect(raw.ws + "/abort") as bomb:
        recv(bystander)
        assert recv(bomb) == "armed"
        t0 = time.monotonic()
        bomb.send("go")
        codes = []
        for ws in (bomb, bystander):
            with pytest.raises(ConnectionClosed) as e:
                recv(ws, timeout=10)
            codes.append(e.value.rcvd.code if e.value.rcvd else 1006)
        assert time.monotonic() - t0 < 10
    assert all(c in (1011, 1006) for c in codes), codes
    with ws_connect(raw.ws + "/scope", open_timeout=20) as ws:
        recv(ws)
        ws.send("alive")
        assert recv(ws) == "alive"
    assert httpx.get(raw.url + "/stats", timeout=60).json()["token"] != token


# ---------------------------------------------------------------------------- FastAPI
@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    log = tmp_path_factory.mktemp("chat") / "serve.log"
    s = pyworkers_serve(str(FASTAPI_APP), "--max-isolates", "1", "--min-idle", "1",
                        log=log).wait_ready(timeout=900)
    yield s
    assert s.stop() == 0


@pytest.mark.network
def test_fastapi_echo_text_and_bytes(chat):
    before = httpx.get(chat.url + "/stats", timeout=60).json()["echo_disconnects"]
    with ws_connect(chat.ws + "/echo") as ws:
        for message in ("hello", "ünïcode ✓", b"\x00\x01binary\xff", "", b"x" * 100_000):
            ws.send(message)
            got = recv(ws)
            assert (type(got), got) == (type(message), message)
    # the client's close reached the endpoint as WebSocketDisconnect
    poll_json(chat.url + "/stats", lambda b: b["echo_disconnects"] == before + 1)


@pytest.mark.network
def test_fastapi_chat_broadcast_join_message_leave(chat):
    names = ["ann", "ben", "cid"]
    with ExitStack() as stack:
        clients = {}
        for i, n in enumerate(names):
            clients[n] = stack.enter_context(ws_connect(chat.ws + f"/room?name={n}"))
            for m in names[:i + 1]:
                assert recv(clients[m]) == f"{n} joined"
        assert httpx.get(chat.url + "/stats", timeout=60).json()["members"] == names
        clients["ben"].send("hello from ben")
        clients["cid"].send("and cid")
        for n in names:
            assert [recv(clients[n]), recv(clients[n])] == ["ben: hello from ben", "cid: and cid"]
        clients.pop("ann").close()  # a client disconnect reaches the app
        for n in ("ben", "cid"):
            assert recv(clients[n]) == "ann left"
        stats = httpx.get(chat.url + "/stats", timeout=60).json()
        assert stats["members"] == ["ben", "cid"] and "ann" in stats["left"]
    poll_json(chat.url + "/stats", lambda b: b["members"] == [])


@pytest.mark.network
def test_fastapi_server_close_code_4001_with_reason(chat):
    with ws_connect(chat.ws + "/close") as ws:
        ws.send("now")
        with pytest.raises(ConnectionClosed) as e:
            recv(ws)
    assert (e.value.rcvd.code, e.value.rcvd.reason) == (4001, "bye now")


@pytest.mark.network
@pytest.mark.parametrize("offered,chosen", [(["chat.v1", "chat.v2"], "chat.v2"),
                                            (["chat.v1"], "chat.v1"),
                                            (["other"], None)])
def test_fastapi_subprotocol_negotiation(chat, offered, chosen):
    with ws_connect(chat.ws + "/proto", subprotocols=offered) as ws:
        assert ws.subprotocol == chosen
        assert recv(ws) == f"proto {chosen or 'none'}"


@pytest.mark.network
def test_fastapi_close_before_accept_is_http_403(chat):
    with pytest.raises(InvalidStatus) as e:
        ws_connect(chat.ws + "/reject")
    assert e.value.response.status_code == 403
    # and the server keeps serving WebSockets
    with ws_connect(chat.ws + "/echo") as ws:
        ws.send("still here")
        assert recv(ws) == "still here"
