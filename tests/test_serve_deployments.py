"""`pyworkers serve` of real deployments (the README's main job): the example apps deployed into a
store, served from their snapshots, compared with native uvicorn; redeploy and rollback under load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from test_serve import Server, comparable, fresh_connections

pytestmark = [pytest.mark.slow, pytest.mark.network]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyworkers", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = tmp_path_factory.mktemp("store")
    for example in ("hello", "fastapi-full"):
        r = cli("deploy", str(EXAMPLES / example), "--store", str(st), "--json", "-q")
        assert r.returncode == 0, r.stderr
        rec = json.loads(r.stdout)
        assert rec["snapshot"]["type"] == "dedicated"
    return st


@pytest.fixture(scope="module")
def servers(store, tmp_path_factory):
    """(pyworkers serve of the store, native uvicorn of examples/fastapi-full on the same layer)."""
    from pyworkers.store import Store

    dep = Store(store).current("fastapi-full")
    version = next(p["version"] for p in dep.record["lock"]["packages"] if p["name"] == "pydantic-core")
    core = tmp_path_factory.mktemp("native-core")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--target", str(core), f"pydantic-core=={version}"], check=True, timeout=600)
    logs = tmp_path_factory.mktemp("logs")
    pyw = Server([sys.executable, "-m", "pyworkers", "serve", "--store", str(store), "--host", "127.0.0.1",
                  "--port", "0", "--min-idle", "1", "--max-isolates", "1", "--watch-interval", "0.3"],
                 logs / "pyw.log")
    native = Server([sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(EXAMPLES / "fastapi-full"),
                     "--host", "127.0.0.1", "--port", "0"], logs / "native.log",
                    env={"PYTHONPATH": os.pathsep.join([str(core), str(dep.layer_dir)])})
    try:
        yield pyw.wait_ready(), native.wait_ready()
    finally:
        pyw.stop()
        native.stop()


FULL = {"host": "fastapi-full.localhost"}
CASES = [
    ("GET", "/", {}),
    ("GET", "/items", {}),
    ("GET", "/items?q=HAM&limit=1", {}),
    ("GET", "/items?limit=0", {}),
    ("GET", "/items/2", {}),
    ("GET", "/items/999", {}),
    ("GET", "/items/not-a-number", {}),
    ("POST", "/items", {"json": {"name": "", "price": -3, "tags": ["x"] * 11}}),
    ("POST", "/items", {"json": {"name": "saw", "price": 9.5}}),
    ("GET", "/price?value=2.5", {}),
    ("GET", "/price?value=-1", {}),
    ("GET", "/stream?n=7", {}),
    ("GET", "/sync/sum?a=40&b=2", {}),
    ("GET", "/self", {}),
    ("GET", "/openapi.json", {}),
    ("GET", "/docs", {}),
]


def test_example_endpoints_match_native_uvicorn(servers):
    pyw, native = servers
    seen = set()
    with fresh_connections() as c:
        for method, path, kw in CASES:
            a = c.request(method, pyw.url + path, headers=FULL, **kw)
            b = c.request(method, native.url + path, **kw)
            assert comparable(a) == comparable(b), (method, path, a.text[:300], b.text[:300])
            seen.add(a.status_code)
    assert {200, 201, 404, 422} <= seen


def test_deployments_are_served_from_their_snapshots(servers):
    pyw, _ = servers
    assert httpx.get(pyw.url + "/", headers={"host": "hello.localhost"}).json()["message"].startswith("Hello")
    m = pyw.wait_log(r"\[fastapi-full#\d+\] isolate ready in (\d+) ms")
    assert int(m.group(1)) < 5000  # restored, not booted + imported (that takes seconds)


def test_redeploy_and_rollback_under_load_drop_nothing(servers, store):
    pyw, _ = servers
    url, host = pyw.url + "/", {"host": "hello.localhost"}
    before = httpx.get(url, headers=host).json()["message"]
    stop = threading.Event()
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                r = c.get(url, headers=host)
                with lock:
                    results.append((r.status_code, r.json().get("message", "")))

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    try:
        r = cli("deploy", str(EXAMPLES / "hello"), "--store", str(store), "--var", "GREETING=Redeployed", "-q")
        assert r.returncode == 0, r.stderr
        pyw.wait_log(r"\[hello\] switched from deployment \S+ to \S+ \(generation 2\)")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and httpx.get(url, headers=host).json()["message"] == before:
            time.sleep(0.2)
        r = cli("deployments", "rollback", "--name", "hello", "--store", str(store))
        assert r.returncode == 0, r.stderr
        pyw.wait_log(r"\[hello\] switched from deployment \S+ to \S+ \(generation 3\)")
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert results and all(status == 200 for status, _ in results), {s for s, _ in results}
    messages = {m for _, m in results}
    assert "Redeployed from pyworkers!" in messages and before in messages
    assert httpx.get(url, headers=host).json()["message"] == before  # rolled back


def test_a_worker_deployed_while_serving_is_picked_up(servers, store):
    """`pyworkers serve` with no names serves every worker, including ones deployed later."""
    pyw, _native = servers
    assert httpx.get(pyw.url + "/plain/version", timeout=30).status_code != 200  # not yet
    r = cli("deploy", str(ROOT / "tests" / "data" / "serve" / "plain"), "--store", str(store),
            "--json", "-q")
    assert r.returncode == 0, r.stderr
    pyw.wait_log(r"\[plain\] new worker: serving deployment \S+ at /plain/", timeout=120)
    r = httpx.get(pyw.url + "/plain/version", timeout=60)
    assert r.status_code == 200 and r.text.startswith("v1 ")
    r = httpx.get(pyw.url + "/", headers={"host": "plain.localhost"}, timeout=60)
    assert r.status_code == 200 and r.text.startswith("v1 ")
