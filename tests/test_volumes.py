"""Persistent volumes through a real `pyworkers serve` (issue 15): SQLite on /data shared by
isolates and by two server processes (record locks mapped to host locks), size cap, the
read-only app directory's hint, persistence across restarts and redeploys."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from test_serve import Server

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "data" / "platform" / "volume"


def cli(*args: str):
    return subprocess.run([sys.executable, "-m", "pyworkers", *args], capture_output=True,
                          text=True, timeout=600)


def serve(store: Path, log: Path) -> Server:
    # one request per isolate at a time: concurrent writers land in different isolates
    return Server([sys.executable, "-m", "pyworkers", "serve", "--store", str(store), "--host",
                   "127.0.0.1", "--port", "0", "--min-idle", "3", "--max-isolates", "4",
                   "--max-concurrency", "1"], log).wait_ready()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = tmp_path_factory.mktemp("store")
    r = cli("deploy", str(APP), "--store", str(st), "-q", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["config"]["volumes"] == [{"mount": "/data", "max_size": 64 << 20}]
    return st


def test_sqlite_on_a_volume_twenty_writers_across_isolates_and_processes(store, tmp_path):
    a, b = serve(store, tmp_path / "a.log"), serve(store, tmp_path / "b.log")
    errors: list = []
    try:
        def writer(i: int) -> None:
            url = (a if i % 2 else b).url
            with httpx.Client(timeout=120) as c:
                for j in range(3):
                    r = c.post(f"{url}/add?who=w{i}.{j}")
                    if r.status_code != 200:
                        errors.append((r.status_code, r.text[:300]))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        count = httpx.get(a.url + "/count", timeout=60).json()
        # every row there, and the read-modify-write counter lost no update: SQLite's locks held
        assert count["rows"] == 60 and count["whos"] == 60 and count["counter"] == 60, count
        assert count["isolates"] >= 4, count  # isolates of both servers wrote
        assert httpx.get(b.url + "/count", timeout=60).json() == count
        assert (store / "data" / "vol" / "volumes" / "data" / "app.db").is_file()
    finally:
        a.stop()
        b.stop()
    r = cli("deploy", str(APP), "--store", str(store), "-q")  # a redeploy, then a fresh server
    assert r.returncode == 0, r.stderr
    c = serve(store, tmp_path / "c.log")
    try:
        assert httpx.get(c.url + "/count", timeout=60).json()["counter"] == 60
    finally:
        c.stop()


def test_volume_size_cap_and_read_only_app_dir(store, tmp_path):
    s = serve(store, tmp_path / "s.log")
    try:
        assert httpx.post(s.url + "/fill?mb=8", timeout=60).text == "filled"
        r = httpx.post(s.url + "/fill?mb=80", timeout=60)  # max_size = "64MiB"
        assert r.status_code == 507 and "No space left on device" in r.text
        assert httpx.get(s.url + "/files", timeout=60).json() in ([], ["app.db"])
        r = httpx.post(s.url + "/write-app", timeout=60)
        assert r.status_code == 500 and "Read-only file system" in r.text
        m = s.wait_log(r"\[vol#\d+ stderr\] pyworkers: cannot write /app/notes.txt: (.*)")
        assert "/tmp" in m.group(1) and "[[volumes]]" in m.group(1)
    finally:
        s.stop()


@pytest.mark.network
def test_sqlmodel_on_a_volume_twenty_concurrent_writers_across_isolates(tmp_path):
    """SQLModel (from the package index) on sqlite:////data/app.db: 20 concurrent requests, one
    per isolate at a time, each a row and a read-modify-write of a counter."""
    store = tmp_path / "store"
    r = cli("deploy", str(APP.parent / "sqlmodel-volume"), "--store", str(store), "-q")
    assert r.returncode == 0, r.stderr
    s = serve(store, tmp_path / "s.log")
    codes: list[int] = []
    try:
        def writer(i: int) -> None:
            codes.append(httpx.post(f"{s.url}/add?who=w{i}", timeout=120).status_code)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200] * 20
        count = httpx.get(s.url + "/count", timeout=60).json()
        assert count["rows"] == 20 and count["counter"] == 20 and count["isolates"] >= 2, count
    finally:
        s.stop()
