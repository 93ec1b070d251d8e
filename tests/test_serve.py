"""End-to-end: a real ``pyworkers serve`` process on 127.0.0.1, driven with httpx.

- The FastAPI example (``tests/data/serve/demo``: fastapi + pydantic + the pydantic-core
  pyemscripten wheel, resolved against the real index: ``network``) is compared response by
  response with the same app, the same pure-Python package versions and a native
  pydantic-core of the same version, under plain uvicorn.
- Faults (``tests/data/serve/faults``), lifespan state and redeploys
  (``tests/data/serve/plain``) and a failing lifespan startup (``tests/data/serve/badstart``)
  need no network.
All traffic goes to 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "serve"
DEMO, FAULTS, PLAIN, BADSTART = (DATA / n for n in ("demo", "faults", "plain", "badstart"))
READY = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class Server:
    """A server subprocess whose stderr goes to a file; ``url`` once it listens."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None,
                 cwd: Path | None = None):
        self.log = log
        self.out = log.with_suffix(".stdout")
        with open(log, "wb") as err, open(self.out, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd,
                                         env={**os.environ, **(env or {})})
        self.url = ""

    def wait_ready(self, timeout: float = 300) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = READY.search(self.log.read_bytes())
            if m:
                self.url = f"http://127.0.0.1:{int(m.group(1))}"
                return self
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"server not ready after {timeout} s:\n{self.text()[-4000:]}")

    def text(self) -> str:
        return self.log.read_bytes().decode("utf-8", "replace")

    @property
    def ws(self) -> str:
        """The WebSocket URL of :attr:`url`."""
        return "ws" + self.url[len("http"):]

    def wait_log(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m
            time.sleep(0.1)
        pytest.fail(f"{pattern!r} not in the server log after {timeout} s:\n{self.text()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def pyworkers_serve(*args: str, log: Path) -> Server:
    return Server([sys.executable, "-m", "pyworkers", "serve", "--host", "127.0.0.1",
                   "--port", "0", *args], log)


# ---------------------------------------------------------------------------- FastAPI vs native
@pytest.fixture(scope="module")
def demo_factory():
    """Builds the demo's layer exactly as ``pyworkers serve`` does (same cache, same lock)."""
    from pyworkers.serve.targets import build_target

    name, factory = build_target(DEMO, memory_limit=None, cache_dir=None)
    assert name == "demo" and factory.site_packages is not None
    return factory


@pytest.fixture(scope="module")
def native_env(demo_factory, tmp_path_factory):
    """PYTHONPATH for native uvicorn: a native pydantic-core of the layer's version first,
    then the sandbox's own layer (so fastapi/starlette/pydantic are the very same files)."""
    manifest = json.loads((demo_factory.site_packages / ".pyworkers-layer.json").read_text())
    version = next(w["version"] for w in manifest["wheels"] if w["name"] == "pydantic-core")
    core = tmp_path_factory.mktemp("native-core")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--target", str(core), f"pydantic-core=={version}"],
                   check=True, timeout=600)
    return {"PYTHONPATH": os.pathsep.join([str(core), str(demo_factory.site_packages)]),
            **demo_factory.env}


@pytest.fixture(scope="module")
def servers(demo_factory, native_env, tmp_path_factory):
    """(pyworkers serve demo, native uvicorn, native uvicorn --root-path /demo)."""
    logs = tmp_path_factory.mktemp("demo-logs")
    uv = [sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(DEMO), "--host",
          "127.0.0.1", "--port", "0"]
    started = [
        pyworkers_serve(str(DEMO), "--min-idle", "1", "--max-isolates", "3",
                        "--request-timeout", "60", "--queue-timeout", "120", log=logs / "pyw.log"),
        Server(uv, logs / "native.log", env=native_env),
        Server(uv + ["--root-path", "/demo"], logs / "rooted.log", env=native_env),
    ]
    try:
        yield tuple(s.wait_ready() for s in started)
    finally:
        for s in started:
            s.stop()
    assert started[0].out.read_bytes() == b""  # serve writes nothing to stdout


DEMO_HOST = {"host": "demo.localhost"}
CASES = [
    ("GET", "/", {}, 200),
    ("GET", "/items/42?q=abc", {}, 200),
    ("GET", "/items/not-a-number", {}, 422),
    ("POST", "/items", {"json": {"name": "pen", "price": 2.5, "tags": ["a"]}}, 200),
    ("POST", "/items", {"json": {"name": "", "price": -1}}, 422),
    ("POST", "/items", {"content": b"{not json", "headers": {"content-type": "application/json"}},
     422),
    ("GET", "/sync?n=100", {}, 200),
    ("GET", "/openapi.json", {}, 200),
    ("GET", "/docs", {}, 200),
    ("GET", "/text", {}, 200),
    ("GET", "/missing", {}, 404),
    ("GET", "/error", {}, 500),
    ("GET", "/scope?a=1&b=%20x", {"headers": {"x-test": "yes", "user-agent": "t"}}, 200),
    ("GET", "/stream-sync?n=4", {}, 200),
    ("GET", "/stream?n=3&delay=0.05", {}, 200),
    ("GET", "/big?kb=300", {}, 200),
    ("HEAD", "/text", {}, 405),
    ("DELETE", "/items", {}, 405),
]


def fresh_connections() -> httpx.Client:
    """A client that opens a new connection per request: a test talks to two servers in turn,
    and a pooled connection left idle past uvicorn's keep-alive timeout (5 s, reachable on a
    loaded machine) can be reset by the server just as the client reuses it."""
    return httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))


def comparable(r: httpx.Response) -> tuple:
    return (r.status_code, [(k, v) for k, v in r.headers.multi_items() if k != "date"],
            r.content)


@pytest.mark.network
def test_every_endpoint_matches_native_uvicorn(servers):
    pyw, native, _ = servers
    mismatches = []
    with fresh_connections() as c:
        for method, path, kw, status in CASES:
            kw = dict(kw)
            headers = {**kw.pop("headers", {})}
            a = c.request(method, pyw.url + path, headers={**headers, **DEMO_HOST}, **kw)
            b = c.request(method, native.url + path, headers={**headers, **DEMO_HOST}, **kw)
            assert b.status_code == status, (method, path, b.text)  # the case tests what it says
            if comparable(a) != comparable(b):
                mismatches.append((method, path, comparable(a), comparable(b)))
    assert not mismatches, "\n".join(map(repr, mismatches))


@pytest.mark.network
def test_validation_error_body(servers):
    pyw, native, _ = servers
    r = httpx.post(pyw.url + "/demo/items", json={"name": "", "price": -1}, timeout=60)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [(d["type"], d["loc"]) for d in detail] == [
        ("string_too_short", ["body", "name"]), ("greater_than", ["body", "price"])]
    assert r.content == httpx.post(native.url + "/items", json={"name": "", "price": -1}).content


@pytest.mark.network
def test_path_prefix_routing_matches_native_root_path(servers):
    pyw, _, rooted = servers
    with fresh_connections() as c:
        for path in ("/scope?x=1", "/openapi.json", "/items/7", "/docs", "/missing"):
            a = c.get(pyw.url + "/demo" + path)
            b = c.get(rooted.url + path)
            assert comparable(a) == comparable(b), path
        scope = c.get(pyw.url + "/demo/scope").json()
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/demo", "/demo/scope",
                                                                      "/demo/scope")
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}


@pytest.mark.network
def test_one_megabyte_upload(servers):
    pyw, native, _ = servers
    data = os.urandom(1 << 20)
    headers = {**DEMO_HOST, "content-type": "application/octet-stream"}
    a = httpx.post(pyw.url + "/upload", content=data, headers=headers, timeout=60)
    b = httpx.post(native.url + "/upload", content=data, headers=headers, timeout=60)
    assert a.status_code == 200
    assert a.json() == {"size": 1 << 20, "sha256": hashlib.sha256(data).hexdigest(),
                        "content_type": "application/octet-stream"}
    assert comparable(a) == comparable(b)


@pytest.mark.network
def test_streaming_response_arrives_incrementally(servers):
    pyw, native, _ = servers
    arrivals: list[tuple[float, bytes]] = []
    with fresh_connections() as c:
        t0 = time.monotonic()
        with c.stream("GET", pyw.url + "/demo/stream?n=4&delay=0.4") as r:
            for chunk in r.iter_raw():
                arrivals.append((time.monotonic() - t0, chunk))
        whole = c.get(native.url + "/stream?n=4&delay=0.4").content
    assert b"".join(c for _, c in arrivals) == whole == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"
    # the first chunk is out long before the generator produced the last one (4 x 0.4 s)
    first = next(t for t, c in arrivals if b"chunk 0" in c)
    last = next(t for t, c in arrivals if b"chunk 3" in c)
    assert last - first >= 1.0, arrivals
    assert b"chunk 3" not in next(c for _, c in arrivals if b"chunk 0" in c)


@pytest.mark.network
def test_lifespan_state_persists_across_requests_of_an_isolate(servers):
    pyw = servers[0]
    seen: dict[str, list[int]] = {}
    with httpx.Client(timeout=60) as c:
        for _ in range(12):
            s = c.get(pyw.url + "/demo/state").json()
            assert s["started"] == "lifespan ran"
            seen.setdefault(s["isolate"], []).append(s["hits"])
    for hits in seen.values():
        assert hits == list(range(hits[0], hits[0] + len(hits))), seen
    assert max(len(h) for h in seen.values()) >= 2


@pytest.mark.network
def test_200_concurrent_requests_from_20_clients(servers):
    pyw = servers[0]

    async def client(k: int) -> list[tuple[int, str, bytes]]:
        out = []
        async with httpx.AsyncClient(base_url=pyw.url, timeout=120) as c:
            for i in range(10):
                path = f"/items/{k * 10 + i}?q=c{k}"
                r = await (c.get("/demo" + path) if i % 2 else c.get(path, headers=DEMO_HOST))
                out.append((r.status_code, path, r.content))
        return out

    async def main():
        return [x for part in await asyncio.gather(*(client(k) for k in range(20))) for x in part]

    results = asyncio.run(main())
    assert len(results) == 200
    for status, path, body in results:
        item, q = re.match(r"/items/(\d+)\?q=(c\d+)", path).groups()
        assert status == 200 and json.loads(body) == {"item_id": int(item), "q": q}, path


# ---------------------------------------------------------------------------- faults, redeploy
@pytest.fixture(scope="module")
def fault_server(tmp_path_factory):
    """faults + plain (copies: the redeploy test edits plain), short timeouts, 96 MiB cap."""
    root = tmp_path_factory.mktemp("apps")
    shutil.copytree(FAULTS, root / "faults")
    shutil.copytree(PLAIN, root / "plain")
    s = pyworkers_serve(str(root / "faults"), str(root / "plain"), "--min-idle", "1",
                        "--max-isolates", "3", "--request-timeout", "2", "--memory-limit", "96",
                        "--queue-timeout", "60", log=root / "serve.log").wait_ready()
    s.apps = root
    yield s
    assert s.stop() == 0
    assert "Application shutdown complete." in s.text()


FAULT_CASES = [  # path, status, x-pyworkers-fault, what the log says
    ("/faults/crash", 500, "crash", r"\[faults#\d+\] GET /faults/crash: isolate crashed: guest "
                                    r"called abort\(\)"),
    ("/faults/hang", 504, "timeout", r"GET /faults/hang: request timed out after 2 s"),
    ("/faults/sleep", 504, "timeout", r"GET /faults/sleep: request timed out after 2 s"),
    ("/faults/bomb", 500, "memory", r"GET /faults/bomb: Exception in ASGI application\n"
                                    r"(.*\n)*MemoryError"),
    ("/faults/raise", 500, "exception", r"Exception in ASGI application\n(.*\n)*"
                                        r"ValueError: raised by the faults app"),
]


@pytest.mark.parametrize("path,status,fault,logged", FAULT_CASES,
                         ids=[c[0].rsplit("/", 1)[1] for c in FAULT_CASES])
def test_a_fault_takes_down_only_its_request(fault_server, path, status, fault, logged):
    url = fault_server.url
    bad: dict = {}

    def fault_request():
        t = bad["start"] = time.monotonic()
        bad["r"] = httpx.get(url + path, timeout=60)
        bad["t"] = time.monotonic() - t

    th = threading.Thread(target=fault_request)
    th.start()
    ok = []
    with httpx.Client(timeout=60) as c:
        while th.is_alive() or len(ok) < 4:  # other requests, during and after the fault
            sent = time.monotonic()
            ok.append((sent, c.get(url + ("/faults/ok" if len(ok) % 2 else "/plain/version"))))
            time.sleep(0.05)
    th.join()
    # An isolate runs many requests at once: a guest stuck in CPU (/hang) takes down the
    # requests already on its isolate (504, the CPU watchdog), but it takes no new ones once
    # its loop has been blocked for BLOCKED_AFTER (0.1 s): of these sequential requests at most
    # the one dispatched before that may share its fate; every other request succeeds.
    def excused(sent, r):
        return (path == "/faults/hang" and r.request.url.path == "/faults/ok"
                and (r.status_code, r.headers.get("x-pyworkers-fault")) == (504, "timeout"))

    assert [r.status_code for sent, r in ok if not excused(sent, r)] == \
        [200] * sum(1 for sent, r in ok if not excused(sent, r))
    assert sum(1 for sent, r in ok if excused(sent, r)) <= 1
    r = bad["r"]
    assert (r.status_code, r.headers.get("x-pyworkers-fault")) == (status, fault), r.text
    if status == 504:
        assert 2.0 <= bad["t"] < 6.0
    fault_server.wait_log(logged, timeout=10)


def test_crashed_isolate_is_replaced(fault_server):
    with httpx.Client(timeout=60) as c:
        assert c.get(fault_server.url + "/faults/crash").status_code == 500
        fault_server.wait_log(r"\[faults#\d+\] retiring \(crashed: guest called abort\(\)\)")
        assert c.get(fault_server.url + "/faults/ok").text.startswith("ok ")


def test_guest_output_is_logged_tagged_with_deployment_and_isolate(fault_server):
    assert httpx.get(fault_server.url + "/faults/print", timeout=60).status_code == 200
    fault_server.wait_log(r"\[faults#\d+ stdout\] hello on stdout")
    fault_server.wait_log(r"\[faults#\d+ stderr\] hello on stderr")


def test_unrouted_request_is_404_naming_the_deployments(fault_server):
    r = httpx.get(fault_server.url + "/nothing-here", timeout=60)
    assert r.status_code == 404 and "deployments: faults, plain" in r.text
    r = httpx.get(fault_server.url + "/version", headers={"host": "plain.localhost"}, timeout=60)
    assert r.status_code == 200 and r.text.startswith("v1 ")


def test_redeploy_under_load_drops_nothing(fault_server):
    """20 clients hammer /plain/version while plain's pyworkers.toml changes and SIGHUP
    redeploys it: every request succeeds, and once a client saw the new version it never
    sees the old one again (new requests only go to the new generation)."""
    toml = fault_server.apps / "plain" / "pyworkers.toml"
    url = fault_server.url
    done = threading.Event()
    state = {"v2_at": None, "hup": False}

    async def client(k: int) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            while len(out) < 200 and not done.is_set():
                r = await c.get("/plain/version")
                out.append((r.status_code, r.text.split(" ")[0]))
                if k == 0 and len(out) == 5 and not state["hup"]:
                    toml.write_text(toml.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
                    os.kill(fault_server.proc.pid, signal.SIGHUP)
                    state["hup"] = True
                if out[-1][1] == "v2" and state["v2_at"] is None:
                    state["v2_at"] = time.monotonic()
                if state["v2_at"] and time.monotonic() - state["v2_at"] > 1.0:
                    done.set()
        return out

    async def main():
        return await asyncio.gather(*(client(k) for k in range(20)))

    per_client = asyncio.run(main())
    flat = [x for part in per_client for x in part]
    assert state["hup"] and len(flat) >= 200
    assert {s for s, _ in flat} == {200}, [x for x in flat if x[0] != 200][:5]
    assert {v for _, v in flat} == {"v1", "v2"}
    for seq in per_client:
        versions = [v for _, v in seq]
        if "v2" in versions:
            assert "v1" not in versions[versions.index("v2"):], versions
    fault_server.wait_log(r"\[plain\] redeployed from .* \(generation 2\)")


def test_failing_lifespan_startup_stops_the_server(tmp_path):
    s = pyworkers_serve(str(BADSTART), log=tmp_path / "bad.log")
    rc = s.proc.wait(120)
    assert rc != 0
    text = s.text()
    assert "deployment 'badstart' failed to start: lifespan.startup.failed: database " \
           "unreachable (on purpose)" in text
    assert not READY.search(text.encode())
