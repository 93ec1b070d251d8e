"""A deployment that cannot be restored affects only its worker (issue 17): a corrupt snapshot
beside a healthy deployment gives 503 ``x-pyworkers-fault: unavailable`` for that worker while
the other serves; ``--fallback previous`` serves the newest earlier deployment that verifies;
a later good deployment of the broken worker is picked up by the store watcher."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from test_serve import Server

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "serve"


def deploy(app: Path, store: Path, *extra: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "pyworkers", "deploy", str(app), "--store",
                        str(store), "--json", "-q", *extra], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def corrupt(store: Path, rec: dict) -> None:
    from pyworkers.store import Store

    snap = Path(Store(store).get(rec["id"]).snapshot_path)
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a compressed section
    snap.chmod(0o644)
    snap.write_bytes(bytes(data))


def serve(store: Path, log: Path, *extra: str) -> Server:
    return Server([sys.executable, "-m", "pyworkers", "serve", "--store", str(store), "--port",
                   "0", "--watch-interval", "0.3", *extra], log).wait_ready()


def test_corrupt_deployment_beside_a_healthy_one(tmp_path):
    store = tmp_path / "store"
    deploy(DATA / "plain", store)
    first = deploy(DATA / "faults", store)
    second = deploy(DATA / "faults", store, "--var", "X=2")
    corrupt(store, second)

    s = serve(store, tmp_path / "serve.log")
    try:
        with httpx.Client(timeout=60) as c:
            assert c.get(s.url + "/plain/version").status_code == 200
            r = c.get(s.url + "/faults/ok")
            assert (r.status_code, r.headers.get("x-pyworkers-fault")) == (503, "unavailable")
            c.get(s.url + "/faults/ok")
        assert s.text().count("[faults] cannot be served") == 1  # one line per failure
        assert second["id"] in s.text()
        # a rollback to the good deployment is picked up: the worker serves again
        r = subprocess.run([sys.executable, "-m", "pyworkers", "deployments", "rollback",
                            first["id"], "--store", str(store)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        s.wait_log(r"\[faults\] new worker: serving deployment", timeout=120)
        assert httpx.get(s.url + "/faults/ok", timeout=60).text.startswith("ok ")
    finally:
        assert s.stop() == 0


def test_fallback_previous_serves_the_newest_earlier_deployment(tmp_path):
    store = tmp_path / "store"
    deploy(DATA / "plain", store, "--var", "VERSION=v1")
    bad = deploy(DATA / "plain", store, "--var", "VERSION=v2")
    corrupt(store, bad)
    s = serve(store, tmp_path / "serve.log", "--fallback", "previous")
    try:
        r = httpx.get(s.url + "/version", timeout=60)
        assert r.status_code == 200 and r.text.startswith("v1 ")
        assert "--fallback previous: serving deployment" in s.text()
    finally:
        assert s.stop() == 0
    # without --fallback, the only worker cannot be served: the server says why and exits
    r = subprocess.run([sys.executable, "-m", "pyworkers", "serve", "--store", str(store),
                        "--port", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "nothing can be served" in r.stderr and bad["id"] in r.stderr
