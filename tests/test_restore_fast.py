"""Cheaper cold starts (issue 13): the reseed riding on the first request, the loaded ASGI app a
snapshot records (so a server can skip the load call), hot-page pre-faulting. Against the real
runtime; no timings are asserted (benchmarks measure them)."""
from __future__ import annotations

import json

import pytest

from pyworkers.runtime import Isolate
from pyworkers.snapshot import Restorer, read_snapshot, take_snapshot
from pyworkers.snapshot.format import write_snapshot
from pyworkers.snapshot import hotpages
from pyworkers.snapshot.hotpages import PAGE, _coalesce, memory_range, touched_ranges

APP = '''
import random
STATE = {"requests": 0}

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    STATE["requests"] += 1
    STATE["junk"] = [bytes(4096) for _ in range(64)]  # writes fresh memory per request
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

other = app
'''

# drives the ASGI app once inside the guest (no server): the kind of work a first request does
REQUEST = '''
import asyncio, main
async def _go():
    out = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(m):
        out.append(m)
    await main.app({"type": "http", "method": "GET", "path": "/", "headers": []}, receive, send)
    return out
print(asyncio.new_event_loop().run_until_complete(_go())[0]["status"])
'''


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("app")
    (d / "main.py").write_text(APP)
    return d


@pytest.fixture(scope="module")
def loaded_snapshot(runtime_314, app_dir, tmp_path_factory):
    """A dedicated snapshot taken after ``_pyworkers_asgi.load("main:app", "/app")``."""
    iso = Isolate(runtime_314, mounts={"/app": app_dir}, cwd="/app")
    iso.call("_pyworkers_asgi:load", "main:app", "/app")
    assert iso.loaded_app == ("main:app", "/app")
    path = tmp_path_factory.mktemp("snap") / "dedicated.pyws"
    meta = take_snapshot(iso, path, snapshot_type="dedicated", app_hash="app-1")
    iso.close()
    return path, meta


@pytest.mark.slow
def test_dedicated_snapshot_records_the_loaded_app(loaded_snapshot, app_dir):
    path, meta = loaded_snapshot
    assert meta["asgi_app"] == {"main": "main:app", "path": "/app"}
    r = Restorer(path, mounts={"/app": app_dir}, copy=True)
    assert r.loaded_app == ("main:app", "/app")
    iso = r.new_isolate()
    assert iso.loaded_app == ("main:app", "/app")
    # what the record claims holds in the restored guest (and the check can say no)
    assert iso.call("_pyworkers_guest:app_loaded", "main:app", "/app") is True
    assert iso.call("_pyworkers_guest:app_loaded", "main:nope", "/app") is False
    assert iso.call("_pyworkers_guest:app_loaded", "main:app", "/elsewhere") is False
    # loading it again is what a server skips: it changes nothing the record says
    iso.call("_pyworkers_asgi:load", "main:app", "/app")
    assert iso.loaded_app == ("main:app", "/app")
    iso.close()


@pytest.mark.slow
def test_snapshot_without_load_or_with_a_replaced_app_records_none(runtime_314, app_dir, tmp_path):
    plain = Isolate(runtime_314, mounts={"/app": app_dir}, cwd="/app")
    plain.run("import sys; sys.path.insert(0, '/app'); import main")
    path = tmp_path / "package.pyws"
    meta = take_snapshot(plain, path, snapshot_type="package")
    plain.close()
    assert "asgi_app" not in meta
    r = Restorer(path, mounts={"/app": app_dir}, copy=True)
    assert r.loaded_app is None
    iso = r.new_isolate()
    assert iso.loaded_app is None
    iso.call("_pyworkers_asgi:load", "main:app", "/app")  # package snapshots load after restore
    assert iso.loaded_app == ("main:app", "/app")
    iso.close()

    # guest code swapped the adapter's app after the load: the host's note is not trusted
    swapped = Isolate(runtime_314, mounts={"/app": app_dir}, cwd="/app")
    swapped.call("_pyworkers_asgi:load", "main:app", "/app")
    swapped.run("import _pyworkers_asgi; _pyworkers_asgi._app = lambda *a: None")
    meta = take_snapshot(swapped, tmp_path / "swapped.pyws", snapshot_type="dedicated")
    swapped.close()
    assert "asgi_app" not in meta
    # the same app under another name is still that app
    other = Isolate(runtime_314, mounts={"/app": app_dir}, cwd="/app")
    other.call("_pyworkers_asgi:load", "main:other", "/app")
    meta = take_snapshot(other, tmp_path / "other.pyws", snapshot_type="dedicated")
    other.close()
    assert meta["asgi_app"] == {"main": "main:other", "path": "/app"}


def _random(iso) -> str:
    return iso.run("import random; print(random.random())").stdout.decode().strip()


@pytest.mark.slow
def test_reseed_rides_on_the_first_request(loaded_snapshot, app_dir, tmp_path):
    path, _meta = loaded_snapshot
    r = Restorer(path, mounts={"/app": app_dir}, copy=True)
    same = [r.new_isolate(reseed=False) for _ in range(2)]
    assert _random(same[0]) == _random(same[1])  # the snapshot's state: shared without reseed
    a, b = r.new_isolate(), r.new_isolate()
    # no request went to the guest during the restore: the image is still untouched
    image = r.snap.section("memory")
    assert a.mem.read(0, len(image)) == image
    assert _random(a) != _random(b)

    # a snapshot whose guest helper predates the flag (no guest_protocol in its state) gets
    # the reseed as a request of its own at restore
    snap = read_snapshot(path)
    state = snap.section_json("state")
    del state["host"]["guest_protocol"]
    meta = {k: v for k, v in snap.metadata.items() if k != "sections"}
    old = tmp_path / "old-guest.pyws"
    write_snapshot(old, meta, {"memory": (snap.section("memory"), True),
                               "state": (json.dumps(state, sort_keys=True).encode(), True)})
    ro = Restorer(old, mounts={"/app": app_dir}, copy=True)
    c, d = ro.new_isolate(), ro.new_isolate()
    assert c.guest_protocol == 1 and not c._reseed_pending
    assert _random(c) != _random(d)
    for iso in (*same, a, b, c, d):
        iso.close()


@pytest.mark.slow
def test_prefault_keeps_memory_identical_and_dirties_only_learned_pages(loaded_snapshot, app_dir,
                                                                       monkeypatch):
    path, _meta = loaded_snapshot
    r = Restorer(path, mounts={"/app": app_dir})  # copy-on-write image module
    first = r.new_isolate()
    assert first.run(REQUEST).stdout.strip() == b"200"
    assert r.learn_hot_pages(first)
    learned = list(r.hot_pages.written)
    assert r.hot_pages.pages > 0 and all(o % PAGE == 0 and n % PAGE == 0 for o, n in learned)
    image_size = r.metadata["memory_size"]
    assert all(o + n <= image_size for o, n in learned)

    iso = r.new_isolate()
    before = iso.mem.read(0, iso.memory_size())
    stats = r.prefault(iso)
    assert iso.mem.read(0, iso.memory_size()) == before
    if stats["bytes"]:  # the kernel has MADV_POPULATE_WRITE
        assert stats["bytes"] == sum(n for _o, n in learned)
        addr, _n = memory_range(iso)
        written, _read = touched_ranges(addr, image_size)
        assert written == learned  # exactly the learned pages are private now, no others
    # it still works, and the same work dirties no page outside what was pre-faulted
    assert iso.run(REQUEST).stdout.strip() == b"200"
    assert iso.eval("main.STATE['requests']") == "1"
    # the per-range madvise path (kernels without process_madvise for any advice) does the same
    monkeypatch.setattr(hotpages, "_batch_unsupported", True)
    third = r.new_isolate()
    before = third.mem.read(0, third.memory_size())
    assert r.prefault(third)["bytes"] == stats["bytes"]
    assert third.mem.read(0, third.memory_size()) == before
    if stats["bytes"]:
        addr, _n = memory_range(third)
        assert touched_ranges(addr, image_size)[0] == learned
    for i in (first, iso, third):
        i.close()

    # learned pages are kept beside the image module for the next process
    again = Restorer(path, mounts={"/app": app_dir})
    assert again.hot_pages.written == learned


@pytest.mark.slow
def test_hot_pages_do_nothing_in_copy_mode(loaded_snapshot, app_dir):
    path, _meta = loaded_snapshot
    r = Restorer(path, mounts={"/app": app_dir}, copy=True)
    iso = r.new_isolate()
    assert not r.learn_hot_pages(iso)
    assert r.prefault(iso)["bytes"] == 0
    iso.close()


def test_coalesce_joins_runs():
    assert _coalesce([]) == []
    assert _coalesce([3]) == [(3 * PAGE, PAGE)]
    assert _coalesce([0, 1, 2, 5, 6, 9]) == [(0, 3 * PAGE), (5 * PAGE, 2 * PAGE), (9 * PAGE, PAGE)]
    assert _coalesce([0, 2, 3, 7], gap=1) == [(0, 4 * PAGE), (7 * PAGE, PAGE)]


@pytest.mark.slow
def test_served_isolates_skip_the_load_and_prefault_as_spares(loaded_snapshot, app_dir,
                                                              tmp_path, monkeypatch):
    """Through the serve layer: a restored isolate whose snapshot has the app loaded is not sent
    the load call; the first served isolate teaches its restorer the hot pages; a spare isolate
    started afterwards pre-faults them before it is ready; one started for a waiting request
    does not (pre-faulting beside a running request only slows it)."""
    import asyncio
    from functools import partial

    from pyworkers.serve import Pool, PoolTimes, ScalingPolicy, with_app
    from pyworkers.serve.oneshot import request

    path, _meta = loaded_snapshot
    r = Restorer(path, mounts={"/app": app_dir}, cache_dir=tmp_path / "cache")
    calls: list[str] = []
    real_call = Isolate.call

    def spy(self, target, *a, **k):
        calls.append(target)
        return real_call(self, target, *a, **k)

    monkeypatch.setattr(Isolate, "call", spy)
    factory = with_app(partial(r.new_isolate, memory_limit=256 << 20), "main:app")
    factory.restorer = r
    times = PoolTimes(startup=60, shutdown=5, drain=5, cpu=30)

    async def main():
        first = Pool("t", factory, ScalingPolicy(min_idle=1, max_isolates=1), times)
        await first.start()
        w = first.workers[0]
        assert (await request(w, "GET", "/")).status == 200
        for _ in range(500):  # the request's G_DONE (it starts the learning) follows its body
            if w.served:
                break
            await asyncio.sleep(0.01)
        await first.close()  # waits for the learning to finish
        assert r.hot_pages.pages > 0
        spare_pool = Pool("t", factory, ScalingPolicy(min_idle=1, max_isolates=1), times)
        await spare_pool.start()
        spare = spare_pool.workers[0].prefault
        await spare_pool.close()
        cold_pool = Pool("t", factory, ScalingPolicy(min_idle=0, max_isolates=1), times)
        await cold_pool.start()
        w = await cold_pool.acquire(60)  # no isolate yet: this request waits for one
        cold = w.prefault
        assert (await request(w, "GET", "/")).status == 200
        await cold_pool.close()
        return spare, cold

    spare, cold = asyncio.run(main())
    assert "_pyworkers_asgi:load" not in calls, calls
    assert calls.count("_pyworkers_serve:run") == 3
    assert spare is not None and spare["bytes"] >= r.hot_pages.pages * PAGE // 2, spare
    assert cold is None


def test_stale_image_sources_are_removed(tmp_path):
    """An image module's source left by a process killed while compiling goes after an hour;
    one being written now (another process compiling) stays."""
    import os
    import time

    from pyworkers.snapshot.restore import STALE_SOURCE_S, remove_stale_image_sources

    old, fresh = tmp_path / "a.1.2.wasm", tmp_path / "b.3.4.wasm"
    keep = tmp_path / "snapshot-x.cwasm"
    for p in (old, fresh, keep):
        p.write_bytes(b"\0asm")
    past = time.time() - STALE_SOURCE_S - 60
    os.utime(old, (past, past))
    os.utime(keep, (past, past))
    assert remove_stale_image_sources(tmp_path) == [old]
    assert not old.exists() and fresh.exists() and keep.exists()
