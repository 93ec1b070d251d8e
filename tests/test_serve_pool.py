"""The serve layer's worker and pool with real isolates (no HTTP, no network), and the scaling
policy on its own.

Apps: ``tests/data/serve/plain`` (lifespan state, body chunks, version/token) and
``tests/data/serve/faults`` (no lifespan support), served from real 314.0.7 isolates through
:class:`pyworkers.serve.front.HttpExchange`, the request path ``pyworkers serve`` uses.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import time
from pathlib import Path

import pytest

from pyworkers.runtime import Isolate
from pyworkers.serve import (AppFactory, Pool, PoolTimes, PoolUnavailable, ScalingPolicy,
                             StartupFailed, with_app)
from pyworkers.serve.front import HttpExchange
from pyworkers.serve.oneshot import request

DATA = Path(__file__).parent / "data" / "serve"
PLAIN = DATA / "plain"
FAULTS = DATA / "faults"
RELEASE = "314.0.7"
TIMES = PoolTimes(startup=60, shutdown=5, drain=5, cpu=30)


def plain_factory(app_dir: Path = PLAIN, version: str = "v1", main: str = "app:app"):
    return AppFactory(RELEASE, app_dir, main, env={"VERSION": version})


def pool(factory, **policy) -> Pool:
    return Pool("plain", factory, ScalingPolicy(**{"min_idle": 1, "max_isolates": 1, **policy}),
                TIMES)


async def chunked(w, path: str, chunks: tuple[bytes, ...]) -> tuple[list[bytes], int]:
    """POST ``chunks`` one ``http.request`` message each; returns (body messages, needs)."""
    rest = list(chunks[1:])
    out: list[bytes] = []
    asked = [0]

    async def receive():
        if not rest:  # the body is in: only a disconnect could come now
            await asyncio.Event().wait()
        asked[0] += 1
        c = rest.pop(0)
        return {"type": "http.request", "body": c, "more_body": bool(rest)}

    async def send(m):
        if m["type"] == "http.response.body" and m.get("body"):
            out.append(m["body"])

    scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"t")], "client": ("127.0.0.1", 1), "server": ("t", 80)}
    ex = HttpExchange(w.open("http", path), receive, send, request_timeout=30,
                      max_body_size=1 << 20)
    await ex.run(scope, {"type": "http.request", "body": chunks[0], "more_body": len(chunks) > 1})
    return out, asked[0]


# ---------------------------------------------------------------------------- policy (no isolates)
@dataclasses.dataclass
class FakeWorker:
    state: str = "ready"
    load: int = 0
    last_used: float = 0.0
    recycle: str | None = None
    busy_for: float = 0.0


def test_policy_picks_least_loaded_with_room_and_spawns_when_full():
    p = ScalingPolicy(min_idle=1, max_isolates=3, max_concurrency=2, idle_timeout=10)
    a, b = FakeWorker(load=1), FakeWorker(load=0)
    assert p.pick([a, b]) is b
    full = [FakeWorker(load=2), FakeWorker(load=2)]
    assert p.pick(full) is None
    assert p.to_spawn(full, waiting=1) == 1           # all full, a request waits: one more
    assert p.to_spawn(full + [FakeWorker("booting")], waiting=3) == 0  # one is coming
    assert p.to_spawn([FakeWorker(load=2)] * 3, waiting=5) == 0        # at max_isolates
    assert p.pick([FakeWorker(load=0, recycle="memory")]) is None       # flagged: no new work
    blocked = FakeWorker(load=0, busy_for=5.0)                          # a sync loop / CPU
    assert p.pick([blocked, FakeWorker(load=1)]).load == 1
    assert p.to_spawn([blocked], waiting=1) == 1


def test_policy_retires_idle_down_to_min_idle_and_recycles_flagged():
    p = ScalingPolicy(min_idle=1, max_isolates=4, max_concurrency=8, idle_timeout=10)
    old, older, busy = FakeWorker(last_used=5), FakeWorker(last_used=1), FakeWorker(load=1)
    assert p.to_retire([old, older, busy], now=100) == [older, old]
    assert p.to_retire([old, older], now=100) == [older]          # keeps min_idle
    assert p.to_retire([old], now=12) == []                       # not idle long enough
    flagged = FakeWorker(load=0, recycle="memory limit reached", last_used=99)
    assert p.to_retire([flagged, old], now=100) == [flagged]
    with pytest.raises(ValueError):
        ScalingPolicy(min_idle=3, max_isolates=2)


# ---------------------------------------------------------------------------- real isolates
pytestmark_slow = pytest.mark.slow


@pytestmark_slow
def test_lifespan_once_per_isolate_state_persists_and_shutdown_runs(caplog):
    caplog.set_level(logging.INFO, logger="pyworkers")

    async def main():
        p = pool(plain_factory())
        await p.start()
        w = await p.acquire(30)
        assert w.lifespan == "on"
        counts = [int((await request(w, "GET", "/count")).body) for _ in range(3)]
        await p.close()
        return w, counts

    w, counts = asyncio.run(main())
    assert counts == [1, 2, 3]  # the lifespan's state object is shared by the requests
    lines = [r.getMessage() for r in caplog.records if r.name == "pyworkers.guest"]
    assert lines.count(f"[{w.id} stdout] startup ran") == 1
    assert lines.count(f"[{w.id} stdout] shutdown ran") == 1
    assert w.state == "dead" and w.iso is None  # closed after shutdown


@pytestmark_slow
def test_request_body_reaches_receive_chunk_by_chunk_and_response_streams():
    chunks = (b"a" * 10, b"b" * 2000, b"", b"c" * 7)

    async def main():
        p = pool(plain_factory())
        await p.start()
        w = await p.acquire(30)
        out = await chunked(w, "/chunks", chunks)
        await p.close()
        return out

    parts, asked = asyncio.run(main())
    assert parts == [b"10\n", b"2000\n", b"0\n", b"7\n"]  # each streamed line on its own
    assert asked == len(chunks) - 1  # the guest asked for each further chunk in turn


@pytestmark_slow
def test_threads_wanted_by_the_app_run_inline_and_with_app_wraps_any_maker():
    import functools

    make = functools.partial(Isolate, RELEASE, mounts={"/app": PLAIN}, cwd="/app",
                             env={"VERSION": "v9"})

    async def main():
        p = pool(with_app(make, "app:app"))
        await p.start()
        w = await p.acquire(30)
        a = await request(w, "GET", "/to-thread")
        b = await request(w, "GET", "/version")
        await p.close()
        return w, a.body, b.body

    w, a, b = asyncio.run(main())
    assert a == b"to_thread 6\n"
    assert b.startswith(b"v9 ") and w.lifespan == "on"


@pytestmark_slow
def test_app_without_lifespan_support_serves():
    async def main():
        p = pool(AppFactory(RELEASE, FAULTS, "app:app"))
        await p.start()
        w = await p.acquire(30)
        r = await request(w, "GET", "/ok")
        await p.close()
        return w, r

    w, r = asyncio.run(main())
    assert w.lifespan == "unsupported"
    assert r.status == 200 and r.body.startswith(b"ok ")


@pytestmark_slow
def test_growth_when_full_cap_and_idle_retirement():
    async def main():
        p = pool(plain_factory(), min_idle=1, max_isolates=2, max_concurrency=1,
                 idle_timeout=0.5)
        await p.start()
        w1 = await p.acquire(30)
        c1 = w1.open("http", "held")              # w1 is now full (max_concurrency 1)
        w2 = await p.acquire(60)                   # a second isolate is restored for this
        c2 = w2.open("http", "held")
        assert w1 is not w2 and len(p.live()) == 2
        t = time.monotonic()
        with pytest.raises(PoolUnavailable) as ei:
            await p.acquire(0.3)                   # max_isolates reached, both full
        assert ei.value.reason == "busy" and time.monotonic() - t >= 0.3
        for w, c in ((w1, c1), (w2, c2)):          # end the held conversations
            del w.convs[c.cid]
            w._changed()
        deadline = time.monotonic() + 10
        while len(p.live()) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        snap = p.snapshot()
        await p.close()
        return snap

    snap = asyncio.run(main())
    assert snap["ready"] == 1  # idled out down to min_idle
    assert snap["retired"] == 1 and snap["booted"] == 2


@pytestmark_slow
def test_swap_routes_new_requests_to_new_deployment_and_finishes_old_ones():
    async def main():
        p = pool(plain_factory(version="v1"), max_isolates=3)
        await p.start()
        old = await p.acquire(30)
        slow = asyncio.ensure_future(chunked(old, "/chunks", (b"x", b"y")))  # in flight
        await asyncio.sleep(0.2)
        gen = await p.swap(plain_factory(version="v2"))
        new = await p.acquire(30)
        new_body = (await request(new, "GET", "/version")).body
        parts, _ = await slow                      # finished by the old, draining isolate
        await p.close()
        return gen, old, new, new_body, parts

    gen, old, new, new_body, parts = asyncio.run(main())
    assert gen == 2 and new.generation == 2 and old.generation == 1
    assert new_body.startswith(b"v2 ") and parts == [b"1\n", b"1\n"]
    assert old.state == "dead"


@pytestmark_slow
def test_failed_swap_keeps_serving_the_old_deployment():
    async def main():
        p = pool(plain_factory(), max_isolates=2)
        await p.start()
        with pytest.raises(StartupFailed) as ei:
            await p.swap(plain_factory(main="app:missing"))
        w = await p.acquire(30)
        body = (await request(w, "GET", "/version")).body
        gen = p.generation
        await p.close()
        return ei.value, gen, body

    err, gen, body = asyncio.run(main())
    assert "AttributeError" in str(err) and "missing" in str(err)
    assert gen == 1 and body.startswith(b"v1 ")


@pytestmark_slow
def test_broken_app_fails_the_pool_start_with_the_guest_traceback(tmp_path):
    app = tmp_path / "broken"
    shutil.copytree(PLAIN, app)
    (app / "app.py").write_text("import no_such_module_here\n")

    async def main():
        p = pool(plain_factory(app))
        try:
            await p.start()
        finally:
            await p.close()

    with pytest.raises(StartupFailed) as ei:
        asyncio.run(main())
    assert "ModuleNotFoundError" in str(ei.value)
    assert "no_such_module_here" in ei.value.__cause__.traceback
