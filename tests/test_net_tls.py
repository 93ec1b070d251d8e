"""TLS in the guest, done by the host's OpenSSL: an HTTPS server on 127.0.0.1 with a CA made
in the test — verified with the worker's CA, refused without it and for a wrong host name;
SNI, ALPN, ``wrap_socket``, ``SSLObject``/``MemoryBIO`` and asyncio."""
from __future__ import annotations

import ssl

import pytest

from _net import http_server, make_pki, server_tls_context
from pyworkers.runtime import Isolate
from pyworkers.runtime.egress import Policy

pytestmark = pytest.mark.slow
ALLOW = ["127.0.0.1", "localhost"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https(pki):
    ctx = server_tls_context(pki)
    seen = []
    ctx.sni_callback = lambda sslobj, name, c: seen.append(name)
    with http_server(tls=ctx) as port:
        yield port, seen


def _iso(runtime, pki, with_ca=True):
    ca = pki["ca"].read_text() if with_ca else ""
    return Isolate(runtime, egress=Policy.build(allow=ALLOW, ca_pem=ca))


def test_https_verified_with_the_workers_ca(runtime_314, pki, https):
    port, seen = https
    with _iso(runtime_314, pki) as iso:
        iso.run(f"""
import ssl, socket, urllib.request
ctx = ssl.create_default_context()
ctx.set_alpn_protocols(["h2", "http/1.1"])
with socket.create_connection(("localhost", {port}), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        info = (s.version(), s.selected_alpn_protocol(), s.getpeercert()["subject"],
                len(s.getpeercert(binary_form=True)) > 100)
        s.sendall(b"GET /tls HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n")
        body = b""
        while chunk := s.recv(4096):
            body += chunk
got = urllib.request.urlopen("https://localhost:{port}/urllib", timeout=10).read()
""")
        assert iso.eval("info") == ("('TLSv1.3', 'http/1.1', ((('commonName', 'localhost'),),), "
                                    "True)")
        assert iso.eval("body.endswith(b'hello from /tls')") == "True"
        assert iso.eval("got") == "b'hello from /urllib'"
        assert "localhost" in seen  # SNI reached the server
        assert iso.eval("ssl.OPENSSL_VERSION") == repr(ssl.OPENSSL_VERSION)


def test_https_refused_without_the_ca_and_for_a_wrong_hostname(runtime_314, pki, https):
    port, _ = https
    code = f"""
import ssl, socket
def attempt(host, name):
    ctx = ssl.create_default_context()
    try:
        with socket.create_connection((host, {port}), timeout=10) as raw:
            ctx.wrap_socket(raw, server_hostname=name).close()
        return "ok"
    except ssl.SSLCertVerificationError as e:
        return f"{{type(e).__name__}}|{{e.reason}}|{{e.verify_message}}|{{e}}"
"""
    with _iso(runtime_314, pki, with_ca=False) as iso:
        iso.run(code)
        out = iso.call("__main__:attempt", "localhost", "localhost")
        assert out.startswith("SSLCertVerificationError|CERTIFICATE_VERIFY_FAILED|"
                              "unable to get local issuer certificate|"), out
    with _iso(runtime_314, pki) as iso:
        iso.run(code)
        assert iso.call("__main__:attempt", "localhost", "localhost") == "ok"
        out = iso.call("__main__:attempt", "127.0.0.1", "wrong.example")
        assert "Hostname mismatch" in out and "wrong.example" in out, out


def test_a_ca_file_loaded_by_the_guest_and_unverified_contexts(runtime_314, pki, https):
    port, _ = https
    with _iso(runtime_314, pki, with_ca=False) as iso:
        iso.run(f"""
import ssl, socket
with open("/tmp/ca.pem", "w") as f:
    f.write({pki["ca"].read_text()!r})
ctx = ssl.create_default_context(cafile="/tmp/ca.pem")
with socket.create_connection(("127.0.0.1", {port}), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        v1 = s.version()
un = ssl._create_unverified_context()
with socket.create_connection(("127.0.0.1", {port}), timeout=10) as raw:
    with un.wrap_socket(raw) as s:
        v2 = (s.version(), s.getpeercert())
""")
        assert iso.eval("v1") == "'TLSv1.3'"
        assert iso.eval("v2") == "('TLSv1.3', {})"


def test_sslobject_memorybio_and_asyncio(runtime_314, pki, https):
    port, _ = https
    with _iso(runtime_314, pki) as iso:
        iso.run(f"""
import ssl, socket, asyncio
# SSLObject over MemoryBIOs, driven by hand over a blocking socket
ctx = ssl.create_default_context()
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
raw = socket.create_connection(("127.0.0.1", {port}), timeout=10)
def pump(fn, *a):
    while True:
        try:
            r = fn(*a)
            raw.sendall(out.read())
            return r
        except ssl.SSLWantReadError:
            raw.sendall(out.read())
            data = raw.recv(65536)
            if data:
                inc.write(data)
            else:
                inc.write_eof()
pump(obj.do_handshake)
pump(obj.write, b"GET /bio HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n")
body = b""
while True:
    try:
        chunk = pump(obj.read, 4096)
    except ssl.SSLError:
        break
    if not chunk:
        break
    body += chunk
raw.close()
bio = (obj.version(), obj.cipher()[1], body.endswith(b"hello from /bio"))

async def main():
    r, w = await asyncio.open_connection("localhost", {port}, ssl=ssl.create_default_context())
    w.write(b"GET /asyncio HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n")
    await w.drain()
    data = await r.read()
    w.close()
    return data.endswith(b"hello from /asyncio"), w.get_extra_info("ssl_object").version()
aio = asyncio.run(main())
""")
        assert iso.eval("bio") == "('TLSv1.3', 'TLSv1.3', True)"
        assert iso.eval("aio") == "(True, 'TLSv1.3')"


def test_default_trust_is_the_certifi_bundle():
    import certifi

    from pyworkers.runtime.tls import _context

    ctx = _context({"verify_mode": 2, "check_hostname": True, "default_certs": True}, "", "")
    n = ctx.cert_store_stats()["x509_ca"]
    with open(certifi.where()) as f:
        assert n == f.read().count("BEGIN CERTIFICATE")
    bare = _context({"verify_mode": 2, "check_hostname": True, "default_certs": False}, "", "")
    assert bare.cert_store_stats()["x509_ca"] == 0


def test_tls_in_an_isolate_restored_from_a_snapshot(runtime_314, pki, https, tmp_path):
    """``ssl`` imported before the snapshot; the restored isolate gets its own TLS device,
    policy and worker CA."""
    from pyworkers.snapshot import Restorer, take_snapshot

    port, _ = https
    with Isolate(runtime_314) as iso:
        iso.run("import ssl, urllib.request")
        take_snapshot(iso, tmp_path / "s.pyws")
    r = Restorer(tmp_path / "s.pyws")
    pol = Policy.build(allow=ALLOW, ca_pem=pki["ca"].read_text())
    with r.new_isolate(egress=pol) as iso2:
        iso2.run(f"v = urllib.request.urlopen('https://localhost:{port}/restored').read()")
        assert iso2.eval("v") == "b'hello from /restored'"
