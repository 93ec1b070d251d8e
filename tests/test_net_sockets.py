"""Guest TCP sockets through the host, against real servers on 127.0.0.1: the stdlib clients,
asyncio, blocking/non-blocking/timeout semantics as in CPython, the socket cap, the request
deadline, and cleanup when the isolate closes."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from _net import http_server
from pyworkers.runtime import Isolate, IsolateError
from pyworkers.runtime.egress import Policy

pytestmark = pytest.mark.slow
LOCAL = Policy.build(allow=["127.0.0.1", "localhost", "[::1]"])


@pytest.fixture
def iso(runtime_314):
    with Isolate(runtime_314, egress=LOCAL) as i:
        yield i


@pytest.fixture
def silent_server():
    """A TCP server that accepts and then says nothing (until told to send ``b"late"``)."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                conns.append(c)
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1], conns
    stop.set()
    t.join(2)
    for c in conns:
        c.close()
    srv.close()


def test_urllib_and_http_client_reach_a_local_http_server(iso):
    with http_server() as port:
        iso.run(f"""
import urllib.request, http.client, json
r = urllib.request.urlopen("http://127.0.0.1:{port}/via-urllib", timeout=10)
a = (r.status, r.read())
c = http.client.HTTPConnection("localhost", {port}, timeout=10)
c.request("POST", "/echo", body=b"x" * 100000)
resp = c.getresponse()
b = (resp.status, len(resp.read()))
c.request("GET", "/keepalive")  # same connection, HTTP/1.1 keep-alive
d = c.getresponse().read()
""")
        assert iso.eval("a") == "(200, b'hello from /via-urllib')"
        assert iso.eval("b") == "(200, 100000)"
        assert iso.eval("d") == "b'hello from /keepalive'"


def test_asyncio_open_connection_waits_on_many_sockets_in_one_isolate(iso):
    """50 concurrent upstream calls that each take 200 ms complete together: the guest's loop
    waits for all its sockets in one host-side poll."""
    with http_server() as port:
        iso.run(f"""
import asyncio, time
async def one(i):
    r, w = await asyncio.open_connection("localhost", {port})
    w.write(f"GET /slow HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n".encode())
    await w.drain()
    data = await r.read()
    w.close()
    await w.wait_closed()
    return data.endswith(b"hello from /slow")
async def main():
    t0 = time.monotonic()
    ok = await asyncio.gather(*(one(i) for i in range(50)))
    return sum(ok), time.monotonic() - t0
n, took = asyncio.run(main())
""")
        assert iso.eval("n") == "50"
        took = float(iso.eval("took"))
        assert took < 1.0, took


def test_blocking_nonblocking_and_timeout_semantics(iso, silent_server):
    port, conns = silent_server
    iso.run(f"""
import socket, errno, select, time
out = {{}}
s = socket.create_connection(("127.0.0.1", {port}))
s.settimeout(0.3)
t0 = time.monotonic()
try:
    s.recv(10)
except TimeoutError as e:
    out["timeout"] = (str(e), round(time.monotonic() - t0, 1))
s.setblocking(False)
try:
    s.recv(10)
except BlockingIOError as e:
    out["nonblocking"] = e.errno == errno.EAGAIN
s.close()
n = socket.socket()
n.setblocking(False)
out["connect_ex"] = errno.errorcode[n.connect_ex(("127.0.0.1", {port}))]
_, w, _ = select.select([], [n], [], 5)
out["writable"] = bool(w) and n.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
out["peer"] = n.getpeername()[1] == {port}
n.close()
closed = socket.socket()
closed.bind(("127.0.0.1", 0)) if False else None
""")
    out = iso.eval("out")
    assert "'timeout': ('timed out', 0.3)" in out
    assert "'nonblocking': True" in out
    assert "'connect_ex': 'EINPROGRESS'" in out
    assert "'writable': True" in out and "'peer': True" in out


def test_blocking_recv_waits_for_late_data_and_refused_connect(iso, silent_server):
    port, conns = silent_server
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    closed_port = free.getsockname()[1]
    free.close()

    def later():
        end = time.monotonic() + 10
        while not conns and time.monotonic() < end:
            time.sleep(0.005)
        time.sleep(0.3)  # 0.3 s after the guest's connection was accepted
        for c in list(conns):
            c.sendall(b"late")

    threading.Thread(target=later, daemon=True).start()
    iso.run(f"""
import socket, time
s = socket.create_connection(("127.0.0.1", {port}))
t0 = time.monotonic()
got = s.recv(10)          # a blocking socket: waits on the host until data arrives
waited = time.monotonic() - t0
s.close()
try:
    socket.create_connection(("127.0.0.1", {closed_port}))
    refused = None
except ConnectionRefusedError as e:
    refused = type(e).__name__
""")
    assert iso.eval("got") == "b'late'"
    assert 0.15 < float(iso.eval("waited")) < 5
    assert iso.eval("refused") == "'ConnectionRefusedError'"


def test_name_resolution_gives_ipv4_to_a_guest_built_without_ipv6(iso):
    """Pyodide's CPython has no IPv6 (``has_ipv6`` False, no AF_INET6 sockaddr): names resolve
    to IPv4 addresses so clients never try an address family they cannot use."""
    iso.run("""
import socket
v6 = socket.has_ipv6
infos = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
fams = sorted({i[0].name for i in infos})
addr = socket.gethostbyname("localhost")
try:
    socket.getaddrinfo("no-such-host.invalid", 80)
    bad = None
except socket.gaierror as e:
    bad = e.errno == socket.EAI_NONAME
""")
    assert iso.eval("v6") == "False"
    assert iso.eval("fams") == "['AF_INET']"
    assert iso.eval("addr") == "'127.0.0.1'"
    assert iso.eval("bad") == "True"


def test_socket_cap_is_emfile_and_sockets_close_with_the_isolate(runtime_314, silent_server):
    port, conns = silent_server
    iso = Isolate(runtime_314, egress=Policy.build(allow=["127.0.0.1"], max_sockets=4))
    iso.run(f"""
import socket, errno
socks = [socket.create_connection(("127.0.0.1", {port})) for _ in range(4)]
try:
    socket.socket()
    fifth = None
except OSError as e:
    fifth = errno.errorcode[e.errno]
""")
    assert iso.eval("fifth") == "'EMFILE'"
    host_socks = [s.sock for s in iso.host.net.open]
    assert len(host_socks) == 4
    deadline = time.monotonic() + 5
    while len(conns) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    iso.close()
    assert all(s.fileno() == -1 for s in host_socks)
    for c in conns:  # the peers see the connections end
        c.settimeout(5)
        assert c.recv(10) == b""


def test_the_deadline_interrupts_a_blocked_recv(runtime_314, silent_server):
    port, _ = silent_server
    iso = Isolate(runtime_314, egress=LOCAL)
    iso.run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))")
    iso.set_timeout(0.5)
    t0 = time.monotonic()
    with pytest.raises(IsolateError) as ei:
        iso.run("s.recv(10)")
    assert time.monotonic() - t0 < 3
    assert "time limit" in str(ei.value) or "interrupted" in str(ei.value)
    iso.close()


def test_udp_and_unix_sockets_are_refused_clearly(iso):
    iso.run("""
import socket, errno
res = []
for fam, typ in ((socket.AF_INET, socket.SOCK_DGRAM), (getattr(socket, "AF_UNIX", 1), socket.SOCK_STREAM)):
    try:
        socket.socket(fam, typ)
        res.append(None)
    except OSError as e:
        res.append(errno.errorcode[e.errno])
""")
    assert iso.eval("res") == "['EPROTONOSUPPORT', 'EAFNOSUPPORT']"


def test_shutdown_write_half_then_read_the_reply(iso):
    """``shutdown(SHUT_WR)`` (Pyodide's ``_try_shutdown`` hook) sends FIN; the peer answers."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        c, _ = srv.accept()
        with c:
            data = b""
            while chunk := c.recv(100):
                data += chunk
            c.sendall(b"got " + data)

    threading.Thread(target=serve, daemon=True).start()
    with srv:
        iso.run(f"""
import socket
s = socket.create_connection(("127.0.0.1", {srv.getsockname()[1]}), timeout=10)
s.sendall(b"all of it")
s.shutdown(socket.SHUT_WR)
peek = s.recv(3, socket.MSG_PEEK)
reply = s.recv(100)
s.close()
""")
        assert iso.eval("(peek, reply)") == "(b'got', b'got all of it')"


def test_a_socket_open_at_snapshot_time_is_refused_naming_the_destination(iso, silent_server,
                                                                         tmp_path):
    from pyworkers.snapshot import SnapshotError, take_snapshot

    port, _ = silent_server
    iso.run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))")
    with pytest.raises(SnapshotError) as ei:
        take_snapshot(iso, tmp_path / "s.pyws")
    assert f"HostSocket connected to 127.0.0.1:{port}" in str(ei.value)


def test_the_deadline_interrupts_a_slow_name_lookup(runtime_314, monkeypatch):
    real = socket.getaddrinfo

    def slow(host, *a, **k):
        if host == "slow.example":
            time.sleep(3)
        return real(host, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    iso = Isolate(runtime_314, egress=LOCAL)
    iso.run("import socket\nfast = socket.getaddrinfo('localhost', 80)[0][4]")
    assert iso.eval("fast") == "('127.0.0.1', 80)"
    iso.set_timeout(0.5)
    t0 = time.monotonic()
    with pytest.raises(IsolateError) as ei:
        iso.run("socket.getaddrinfo('slow.example', 80)")
    assert time.monotonic() - t0 < 2
    assert "time limit" in str(ei.value)
    iso.close()


def test_the_deadline_interrupts_a_blocked_connect(runtime_314):
    """A blocking connect that never completes (the server's accept queue is full, so its SYNs
    are dropped) is stopped by the deadline."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # fills the accept queue
    iso = Isolate(runtime_314, egress=LOCAL)
    try:
        iso.run("import socket")
        iso.set_timeout(0.5)
        t0 = time.monotonic()
        with pytest.raises(IsolateError) as ei:
            iso.run(f"socket.create_connection(('127.0.0.1', {port}))")
        assert time.monotonic() - t0 < 3
        assert "time limit" in str(ei.value)
    finally:
        iso.close()
        filler.close()
        srv.close()
