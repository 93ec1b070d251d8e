"""Secrets and bindings through a real `pyworkers serve` (issue 15): a plain-ASGI app
(tests/data/platform/bindings, no package index needed) deployed into a store, served from its
snapshot; KV, SQL and objects with the embedded defaults, Redis (a real redis-server started
here) and PostgreSQL (a throwaway initdb cluster)."""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from test_serve import Server

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "data" / "platform" / "bindings"
SECRET = "s3cr3t-4b1d-value-never-in-a-file"
ROTATED = "r0tated-9c2e-value-never-in-a-file"


def cli(*args: str, stdin: str | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "pyworkers", *args], capture_output=True,
                          text=True, input=stdin, timeout=timeout)


def deploy(app_dir: Path, store: Path, *extra: str) -> dict:
    r = cli("deploy", str(app_dir), "--store", str(store), "--json", "-q", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def app_copy(dest: Path, toml: str) -> Path:
    """tests/data/platform/bindings with another pyworkers.toml."""
    shutil.copytree(APP, dest)
    (dest / "pyworkers.toml").write_text(toml)
    return dest


def serve(store: Path, log: Path, *extra: str) -> Server:
    return Server([sys.executable, "-m", "pyworkers", "serve", "--store", str(store), "--host",
                   "127.0.0.1", "--port", "0", "--min-idle", "1", "--max-isolates", "4",
                   "--max-concurrency", "5", "--watch-interval", "0.3", *extra],
                  log).wait_ready()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = tmp_path_factory.mktemp("store")
    # the secret exists before the deploy: nothing of the deploy may capture it
    r = cli("secret", "put", "API_TOKEN", "--name", "plat", "--store", str(st), stdin=SECRET + "\n")
    assert r.returncode == 0, r.stderr
    deploy(APP, st)
    deploy(APP, st, "--name", "other")  # same bindings, another worker: isolated data
    return st


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    s = serve(store, tmp_path_factory.mktemp("logs") / "serve.log")
    yield s
    s.stop()


def get(server: Server, path: str, worker: str = "plat", **kw) -> httpx.Response:
    return httpx.request(kw.pop("method", "GET"), server.url + path,
                         headers={"host": f"{worker}.localhost"}, timeout=60, **kw)


def _files_except_secrets(root: Path):
    for p in sorted(root.rglob("*")):
        if p.is_file() and "secrets" not in p.relative_to(root).parts:
            yield p


def _snapshot_memory(path: Path) -> list[bytes]:
    from pyworkers.snapshot.format import SnapshotError, read_snapshot

    try:
        snap = read_snapshot(path)
    except SnapshotError:
        return []
    return [snap.section(s["name"]) for s in snap.metadata["sections"]]


# ---------------------------------------------------------------------------- secrets
def test_secret_reaches_the_app_and_no_file_of_the_store_but_the_secret_store(server, store):
    r = get(server, "/secret?name=API_TOKEN")
    assert r.status_code == 200 and r.text == f"{SECRET} {SECRET}"  # os.environ and env.X
    assert get(server, "/secret?name=GREETING").text == "hello hello"  # [vars] too
    assert get(server, "/secret?name=API_TOKEN", worker="other").text == "- -"  # per worker
    sec = store / "secrets" / "plat.json"
    assert sec.stat().st_mode & 0o777 == 0o600
    assert (store / "secrets").stat().st_mode & 0o777 == 0o700
    assert SECRET.encode() in sec.read_bytes()
    needle = SECRET.encode()
    scanned = snapshots = 0
    for p in _files_except_secrets(store):
        data = p.read_bytes()
        assert needle not in data, p
        for section in _snapshot_memory(p):  # the decompressed memory image
            snapshots += 1
            assert needle not in section, f"{p}: a snapshot section holds the secret"
        scanned += 1
    assert scanned > 5 and snapshots >= 2
    assert needle not in server.log.read_bytes() and needle not in server.out.read_bytes()
    listed = cli("secret", "list", "--store", str(store), "--json")
    assert json.loads(listed.stdout)["secrets"] == {"plat": ["API_TOKEN"]}
    assert SECRET not in listed.stdout + listed.stderr


def test_rotated_secret_reaches_isolates_started_afterwards(store, tmp_path):
    s = serve(store, tmp_path / "serve.log", "--min-idle", "0", "--idle-timeout", "0.5")
    try:
        assert get(s, "/secret?name=API_TOKEN").text == f"{SECRET} {SECRET}"
        r = cli("secret", "put", "API_TOKEN", "--name", "plat", "--store", str(store),
                stdin=ROTATED)
        assert r.returncode == 0, r.stderr
        s.wait_log(r"\[plat#1\] retiring \(idle\)")  # the isolate that saw the old value
        assert get(s, "/secret?name=API_TOKEN").text == f"{ROTATED} {ROTATED}"
        assert cli("secret", "delete", "API_TOKEN", "--name", "plat", "--store",
                   str(store)).returncode == 0
        s.wait_log(r"\[plat#2\] retiring \(idle\)")
        assert get(s, "/secret?name=API_TOKEN").text == "- -"
    finally:
        s.stop()
        cli("secret", "put", "API_TOKEN", "--name", "plat", "--store", str(store), stdin=SECRET)


def test_deploy_refuses_a_var_named_like_a_secret(store, tmp_path):
    toml = (APP / "pyworkers.toml").read_text().replace('GREETING = "hello"',
                                                       'GREETING = "hello"\nAPI_TOKEN = "x"')
    app = app_copy(tmp_path / "app", toml)
    r = cli("deploy", str(app), "--store", str(store), "-q")
    assert r.returncode != 0
    assert "vars.API_TOKEN" in r.stderr and "secret" in r.stderr and "pyworkers.toml" in r.stderr


# ---------------------------------------------------------------------------- bindings
def test_kv_sql_objects_round_trip(server):
    assert get(server, "/kv/put?key=greeting", method="PUT", content=b"hi there").text == "ok"
    assert get(server, "/kv/get?key=greeting").text == "hi there"
    assert get(server, "/kv/put?key=tmp&ttl=1", method="PUT", content=b"soon gone").text == "ok"
    assert get(server, "/kv/get?key=tmp").text == "soon gone"
    for i in range(3):
        get(server, f"/kv/put?key=page:{i}", method="PUT", content=str(i).encode())
    assert json.loads(get(server, "/kv/list?prefix=page:&limit=2").text) == \
        ["page:0", "page:1", "page:2"]  # paged with the cursor
    assert get(server, "/kv/delete?key=page:1").text == "ok"
    assert get(server, "/kv/get?key=page:1").status_code == 404
    time.sleep(1.3)
    assert get(server, "/kv/get?key=tmp").status_code == 404  # TTL passed

    before = int(get(server, "/sql/get").text)
    assert get(server, "/sql/incr", method="POST").text == "ok"
    assert int(get(server, "/sql/get").text) == before + 1
    assert get(server, "/sql/insert?v=a", method="POST").text == "1"
    r = get(server, "/sql/batch-fail", method="POST")
    assert r.status_code == 400 and "no_such_table" in r.text
    assert json.loads(get(server, "/sql/rows").text) == ["a"]  # the batch left nothing

    blob = os.urandom(3 * (1 << 20) + 12345)  # several 1 MiB parts each way
    r = get(server, "/obj/photos/a.bin", method="PUT", content=blob)
    head = r.json()
    assert head["size"] == len(blob) and head["key"] == "photos/a.bin"
    r = get(server, "/obj/photos/a.bin")
    assert r.content == blob and r.headers["x-etag"] == head["etag"]
    get(server, "/obj/photos/b.txt", method="PUT", content=b"small")
    get(server, "/obj/other", method="PUT", content=b"")
    assert json.loads(get(server, "/objlist?prefix=photos/").text) == \
        [["photos/a.bin", len(blob)], ["photos/b.txt", 5]]
    assert get(server, "/obj/photos/b.txt", method="DELETE").text == "ok"
    assert get(server, "/obj/photos/b.txt").status_code == 404
    seen = json.loads(get(server, "/outside").text)  # pyworkers_env.env outside the scope
    assert {"CACHE", "DB", "FILES", "GREETING"} <= set(seen["dir"]) and seen["has_db"]


def test_kv_value_over_the_limit_is_a_value_error(server):
    r = get(server, "/kv/too-big", method="POST")
    assert r.status_code == 413 and "ValueError" in r.text and "25 MiB" in r.text


def test_workers_see_only_their_own_bindings(server, store):
    get(server, "/kv/put?key=mine", method="PUT", content=b"plat's")
    get(server, "/obj/mine", method="PUT", content=b"plat's")
    assert get(server, "/kv/get?key=mine", worker="other").status_code == 404
    assert get(server, "/obj/mine", worker="other").status_code == 404
    n = int(get(server, "/sql/get").text)
    assert get(server, "/sql/get", worker="other").text == "0"
    get(server, "/sql/incr", worker="other", method="POST")
    assert int(get(server, "/sql/get").text) == n
    assert (store / "data" / "plat").is_dir() and (store / "data" / "other").is_dir()


def test_twenty_concurrent_writers_lose_no_update(server):
    start = int(get(server, "/sql/get").text)
    errors: list = []

    def writer(i: int) -> None:
        with httpx.Client(timeout=120, headers={"host": "plat.localhost"}) as c:
            for j in range(5):
                for r in (c.post(server.url + "/sql/incr"),
                          c.put(server.url + f"/kv/put?key=w:{i}:{j}", content=f"{i}.{j}")):
                    if r.status_code != 200:
                        errors.append((r.status_code, r.text[:200]))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert int(get(server, "/sql/get").text) == start + 100
    keys = json.loads(get(server, "/kv/list?prefix=w:").text)
    assert sorted(keys) == sorted(f"w:{i}:{j}" for i in range(20) for j in range(5))
    assert all(get(server, f"/kv/get?key=w:{i}:4").text == f"{i}.4" for i in range(20))
    assert len(set(re_isolates(server))) >= 2  # the writers were spread over isolates


def re_isolates(server: Server) -> list[str]:
    import re

    return re.findall(r"\[(plat#\d+)\] isolate ready", server.text())


def test_data_survives_a_server_restart_and_a_redeploy(store, server, tmp_path):
    get(server, "/kv/put?key=durable", method="PUT", content=b"still here")
    get(server, "/obj/durable", method="PUT", content=b"file still here")
    n = int(get(server, "/sql/get").text)
    deploy(APP, store)  # a new deployment of the same worker
    s2 = serve(store, tmp_path / "serve2.log")
    try:
        assert get(s2, "/kv/get?key=durable").text == "still here"
        assert get(s2, "/obj/durable").text == "file still here"
        assert int(get(s2, "/sql/get").text) == n
    finally:
        s2.stop()


# ---------------------------------------------------------------------------- bad input
def test_bad_binding_config_fails_the_deploy_naming_file_and_key(tmp_path):
    base = (APP / "pyworkers.toml").read_text()
    cases = {
        "unknown": (base + '\n[[kv]]\nbinding = "X"\nttl = 5\n', "kv[1].ttl: unknown key"),
        "dup": (base + '\n[[objects]]\nbinding = "CACHE"\n',
                "objects[1].binding: 'CACHE' is also kv[0].binding"),
        "var": (base.replace('GREETING = "hello"', 'GREETING = "hello"\nDB = "x"'),
                "sql[0].binding: 'DB' is also vars.DB"),
        "scheme": (base + '\n[[sql]]\nbinding = "PG"\nurl = "mysql://x"\n',
                   "sql[1].url: must be a postgresql:// or postgres:// URL"),
        "unreachable": (base + f'\n[[kv]]\nbinding = "R"\nurl = "redis://u:pw@127.0.0.1:{_free_port()}/0"\n',
                        "kv[1].url: cannot reach redis://u:***@127.0.0.1"),
        "pg-unreachable": (base + f'\n[[sql]]\nbinding = "PG"\nurl = "postgresql://u:pw@127.0.0.1:{_free_port()}/db"\n',
                           "sql[1].url: cannot reach postgresql://u:***@127.0.0.1"),
        "no-secret": (base + '\n[[kv]]\nbinding = "R"\nurl = "redis://:${NOPE}@127.0.0.1/0"\n',
                      "kv[1].url: redis://:***@127.0.0.1/0 uses ${NOPE}, but the worker has no secret NOPE"),
        "cron": (base + '\n[[crons]]\nschedule = "every minute"\npath = "/t"\n',
                 "crons[0].schedule: 'every minute' is not a cron schedule"),
    }
    for name, (toml, expected) in cases.items():
        app = app_copy(tmp_path / name, toml)
        r = cli("deploy", str(app), "--store", str(tmp_path / "store"), "-q")
        assert r.returncode != 0, name
        assert expected in r.stderr and str(app / "pyworkers.toml") in r.stderr, (name, r.stderr)
        assert ":pw@" not in r.stderr  # a password never reaches a log
    assert not (tmp_path / "store" / "deployments").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- Redis, PostgreSQL
@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    d = tmp_path_factory.mktemp("redis")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                             "--save", "", "--appendonly", "no", "--requirepass", "pw-1234"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:pw-1234@127.0.0.1:{port}/0"
    import redis

    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def postgres_url():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    bindir = Path(bins[-1]).parent
    d = Path(tempfile.mkdtemp(prefix="pyworkers-pg-"))
    os.chmod(d, 0o755)
    user = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as nobody
        shutil.chown(d, "nobody")
        user = ["runuser", "-u", "nobody", "--"]
    port = _free_port()
    data, sock = d / "data", d / "sock"
    subprocess.run([*user, "mkdir", str(sock)], check=True)
    subprocess.run([*user, str(bindir / "initdb"), "-D", str(data), "-U", "app", "-A", "trust",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(d / "pg.log"),
                    "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
                    "start"], check=True, capture_output=True, timeout=120)
    try:
        subprocess.run([*user, str(bindir / "createdb"), "-h", str(sock), "-p", str(port), "-U",
                        "app", "appdb"], check=True, capture_output=True, timeout=60)
        yield f"postgresql://app@127.0.0.1:{port}/appdb"
    finally:
        subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


def test_redis_and_postgresql_backends(redis_url, postgres_url, tmp_path):
    store = tmp_path / "store"
    # the Redis password lives in a secret; the config and the record only name it
    placeholder = redis_url.replace(":pw-1234@", ":${REDIS_PASSWORD}@")
    for w in ("remote", "remote2"):
        assert cli("secret", "put", "REDIS_PASSWORD", "--name", w, "--store", str(store),
                   stdin="pw-1234").returncode == 0
    toml = (APP / "pyworkers.toml").read_text()
    toml = toml.replace('[[kv]]\nbinding = "CACHE"', f'[[kv]]\nbinding = "CACHE"\nurl = "{placeholder}"')
    toml = toml.replace('[[sql]]\nbinding = "DB"', f'[[sql]]\nbinding = "DB"\nurl = "{postgres_url}"')
    app = app_copy(tmp_path / "app", toml.replace('name = "plat"', 'name = "remote"'))
    rec = deploy(app, store)
    assert rec["config"]["bindings"]["kv"] == [{"binding": "CACHE", "url": placeholder}]
    deploy(app, store, "--name", "remote2")
    for p in _files_except_secrets(store):
        assert b"pw-1234" not in p.read_bytes(), p
    s = serve(store, tmp_path / "serve.log")
    try:
        assert "pw-1234" not in s.text()
        w = "remote"
        assert get(s, "/kv/put?key=k1", w, method="PUT", content=b"in redis").text == "ok"
        assert get(s, "/kv/get?key=k1", w).text == "in redis"
        assert get(s, "/kv/get?key=k1", "remote2").status_code == 404  # key prefix per worker
        import redis

        assert redis.Redis.from_url(redis_url).get("pyworkers:remote:CACHE:k1") == b"in redis"
        get(s, "/kv/put?key=t&ttl=1", w, method="PUT", content=b"x")
        assert 0 < redis.Redis.from_url(redis_url).pttl("pyworkers:remote:CACHE:t") <= 1000
        assert json.loads(get(s, "/kv/list?prefix=k", w).text) == ["k1"]

        start = int(get(s, "/sql/get", w).text)
        errors: list = []

        def writer(i: int) -> None:
            with httpx.Client(timeout=120, headers={"host": f"{w}.localhost"}) as c:
                for j in range(5):
                    for r in (c.post(s.url + "/sql/incr"),
                              c.put(s.url + f"/kv/put?key=w:{i}:{j}", content=f"{i}.{j}")):
                        if r.status_code != 200:
                            errors.append((r.status_code, r.text[:200]))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert int(get(s, "/sql/get", w).text) == start + 100
        assert len(json.loads(get(s, "/kv/list?prefix=w:", w).text)) == 100
        r = get(s, "/sql/batch-fail", w, method="POST")
        assert r.status_code == 400 and "no_such_table" in r.text
        assert get(s, "/sql/insert?v=pg", w, method="POST").text == "1"
        assert json.loads(get(s, "/sql/rows", w).text) == ["pg"]  # the failed batch left nothing
    finally:
        s.stop()
    s2 = serve(store, tmp_path / "serve2.log")  # restart: the data is in the servers
    try:
        assert get(s2, "/kv/get?key=k1", "remote").text == "in redis"
        assert int(get(s2, "/sql/get", "remote").text) == start + 100
    finally:
        s2.stop()


# ---------------------------------------------------------------------------- cron triggers
def test_cron_trigger_fires_on_schedule_without_overlap(tmp_path):
    """Every 2 s (croniter's seconds field) a handler that takes 3 s: it runs on schedule, two
    runs never overlap, and the times it was busy are skipped (logged), not caught up."""
    toml = (APP / "pyworkers.toml").read_text().replace('name = "plat"', 'name = "crony"') + \
        '\n[[crons]]\nschedule = "* * * * * */2"\npath = "/tasks/tick?sleep=3"\n'
    store = tmp_path / "store"
    rec = deploy(app_copy(tmp_path / "app", toml), store)
    assert rec["config"]["crons"] == [{"schedule": "* * * * * */2", "path": "/tasks/tick?sleep=3"}]
    s = serve(store, tmp_path / "serve.log")
    try:
        s.wait_log(r"cron '\* \* \* \* \* \*/2' POST /tasks/tick\?sleep=3 \(scheduled "
                   r"[0-9T:-]+Z\) -> 200", timeout=30)
        s.wait_log(r"skipped: the previous run is still going", timeout=30)
        deadline = time.monotonic() + 30
        while True:
            runs = json.loads(get(s, "/cron-runs", "crony").text)
            if len(runs) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        s.stop()
    assert len(runs) >= 3, runs
    assert all(r["header"] == "* * * * * */2" for r in runs)
    for a, b in zip(runs, runs[1:]):
        assert b["started"] >= a["ended"] - 0.05, (a, b)  # never two at once
        assert b["scheduled"] > a["scheduled"]
    from datetime import datetime, timezone

    for r in runs:  # started at its scheduled (even) second, give or take the dispatch
        at = datetime.strptime(r["scheduled"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert at.second % 2 == 0 and 0 <= r["started"] - at.timestamp() < 1.5, r


def test_cron_runner_with_an_injected_clock():
    """No catch-up after a pause, one run at a time, the first time after the start."""
    import asyncio

    from pyworkers.bindings.cron import CronRunner

    now = [1_800_000_000.0]  # 2027-01-15T08:00:00Z
    sent: list = []
    gate = asyncio.Event()

    async def send(worker, path, headers, body):
        sent.append((worker, path, dict(headers), json.loads(body)))
        await gate.wait()
        return 204

    async def scenario():
        r = CronRunner(lambda: {"w": [{"schedule": "*/5 * * * *", "path": "/t"}]}, send,
                       clock=lambda: now[0])
        assert r.check() == 300  # the next multiple of 5 minutes
        now[0] += 300
        r.check()
        await asyncio.sleep(0)
        assert len(sent) == 1 and sent[0][3]["scheduled_time"] == "2027-01-15T08:05:00Z"
        assert sent[0][2][b"x-pyworkers-cron"] == b"*/5 * * * *"
        now[0] += 300  # still running: skipped
        r.check()
        await asyncio.sleep(0)
        assert len(sent) == 1 and r.skipped == 1
        gate.set()
        await asyncio.sleep(0.01)
        now[0] += 3600  # an hour stalled (09:10): nothing caught up
        r.check()
        await asyncio.sleep(0.01)
        assert len(sent) == 1 and r.missed == 1
        now[0] += 299
        r.check()
        await asyncio.sleep(0.01)
        assert len(sent) == 1
        now[0] += 1  # 09:15
        r.check()
        await asyncio.sleep(0.01)
        assert len(sent) == 2 and sent[1][3]["scheduled_time"] == "2027-01-15T09:15:00Z"
        assert r.history[-1][4] == 204

    asyncio.run(scenario())


def test_app_directory_served_in_development_mode_gets_its_platform(tmp_path):
    store = tmp_path / "store"
    r = cli("secret", "put", "API_TOKEN", "--name", "plat", "--store", str(store), stdin="dev")
    assert r.returncode == 0, r.stderr
    s = Server([sys.executable, "-m", "pyworkers", "serve", str(APP), "--store", str(store),
                "--host", "127.0.0.1", "--port", "0"], tmp_path / "dev.log").wait_ready()
    try:
        assert httpx.get(s.url + "/secret?name=API_TOKEN").text == "dev dev"
        assert httpx.put(s.url + "/kv/put?key=k", content=b"v").text == "ok"
        assert httpx.get(s.url + "/kv/get?key=k").text == "v"
    finally:
        s.stop()
    assert (store / "data" / "plat" / "kv" / "CACHE.sqlite3").is_file()


def test_a_binding_call_ends_by_its_request_deadline():
    """A request 2 s into a 3 s deadline makes a call the host would take 10 s for: the app
    gets TimeoutError after the ~1 s left, not after a fresh 3 s (serve.worker)."""
    import asyncio

    from pyworkers.serve.oneshot import request
    from pyworkers.serve.worker import AppFactory, Worker

    class SlowHost:
        def declared(self):
            return [{"name": "CACHE", "kind": "kv"}]

        async def call(self, binding, op, args, body):
            await asyncio.sleep(10)
            return {"found": False}, b""

    async def scenario():
        w = Worker("slow", 1, 1, AppFactory(release="314.0.7", app_dir=APP, main="app:app"),
                   bindings=SlowHost(), call_timeout=3.0)
        await w.start(120)
        try:
            r = await request(w, "GET", "/slow-call?wait=2", timeout=30)
        finally:
            await w.stop(0, 5)
        return json.loads(r.body)

    out = asyncio.run(scenario())
    assert out["outcome"] == "TimeoutError: CACHE.get passed the request's deadline", out
    assert 0.5 < out["call_s"] < 1.8, out
