"""The isolate pool and the guest ASGI adapter, with real isolates (no HTTP, no network).

Apps: ``tests/data/serve/plain`` (lifespan state, body chunks, version/token) and
``tests/data/serve/faults`` (no lifespan support), served from real 314.0.7 isolates.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import pytest

from pyworkers.runtime import GuestError, Isolate
from pyworkers.runtime.pool import AppFactory, Pool, PoolUnavailable, with_app

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "serve"
PLAIN = DATA / "plain"
FAULTS = DATA / "faults"
RELEASE = "314.0.7"


def scope_fields(path: str, method: str = "GET") -> dict:
    return {"http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"test")], "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80)}


def body_of(result: dict) -> bytes:
    return b"".join(m.get("body", b"") for m in result["messages"]
                    if m["type"] == "http.response.body")


async def request(pool: Pool, w, path: str, chunks: tuple[bytes, ...] = (b"",)) -> tuple[bytes, list]:
    """One request through worker ``w``: returns (body, list of step results)."""
    loop = asyncio.get_running_loop()

    async def call(fn, *args):
        return await loop.run_in_executor(pool.executor, lambda: w.call(fn, *args))

    steps = [await call("start_http", scope_fields(path, "POST"), chunks[0], len(chunks) > 1)]
    rest = list(chunks[1:])
    while not steps[-1]["done"]:
        r = steps[-1]
        events = []
        if r["input"]:
            chunk = rest.pop(0)
            events = [{"type": "http.request", "body": chunk, "more_body": bool(rest)}]
        steps.append(await call("step", r["cid"], events))
    assert steps[-1]["error"] is None, steps[-1]["error"]
    return b"".join(body_of(r) for r in steps), steps


def plain_factory(app_dir: Path = PLAIN, version: str = "v1", main: str = "app:app"):
    return AppFactory(RELEASE, app_dir, main, env={"VERSION": version})


def test_lifespan_once_per_isolate_state_persists_and_shutdown_runs(caplog):
    caplog.set_level(logging.INFO, logger="pyworkers")

    async def main():
        pool = Pool("plain", plain_factory(), min_idle=1, max_isolates=1)
        await pool.start()
        w = await pool.acquire(30)
        assert w.lifespan == "on"
        counts = []
        for _ in range(3):
            body, _ = await request(pool, w, "/count")
            counts.append(int(body))
        pool.release(w)
        await pool.close()
        return w, counts

    w, counts = asyncio.run(main())
    assert counts == [1, 2, 3]  # the lifespan's state object is shared by the requests
    lines = [r.getMessage() for r in caplog.records if r.name == "pyworkers.guest"]
    assert lines.count(f"[{w.id} stdout] startup ran") == 1
    assert lines.count(f"[{w.id} stdout] shutdown ran") == 1
    assert w.iso is None  # closed after shutdown


def test_request_body_reaches_receive_chunk_by_chunk_and_response_streams():
    chunks = (b"a" * 10, b"b" * 2000, b"", b"c" * 7)

    async def main():
        pool = Pool("plain", plain_factory(), min_idle=1, max_isolates=1)
        await pool.start()
        w = await pool.acquire(30)
        body, steps = await request(pool, w, "/chunks", chunks)
        pool.release(w)
        await pool.close()
        return body, steps

    body, steps = asyncio.run(main())
    assert body == b"10\n2000\n0\n7\n"
    # the guest asked for each chunk in turn, and each streamed line came out in its own step
    assert sum(1 for r in steps if r["input"]) == len(chunks) - 1
    line_steps = [body_of(r) for r in steps if body_of(r)]
    assert line_steps == [b"10\n", b"2000\n", b"0\n", b"7\n"]


def test_threads_wanted_by_the_app_run_inline():
    async def main():
        pool = Pool("plain", plain_factory(), min_idle=1, max_isolates=1)
        await pool.start()
        w = await pool.acquire(30)
        body, _ = await request(pool, w, "/to-thread")
        pool.release(w)
        await pool.close()
        return body

    assert asyncio.run(main()) == b"to_thread 6\n"


def test_with_app_turns_any_isolate_maker_into_a_factory():
    """The plug-in point for deployments: any ``make(*, stdout, stderr) -> Isolate``."""
    import functools

    make = functools.partial(Isolate, RELEASE, mounts={"/app": PLAIN}, cwd="/app",
                             env={"VERSION": "v9"})

    async def main():
        pool = Pool("plain", with_app(make, "app:app"), min_idle=1, max_isolates=1)
        await pool.start()
        w = await pool.acquire(30)
        body, _ = await request(pool, w, "/version")
        pool.release(w)
        await pool.close()
        return w, body

    w, body = asyncio.run(main())
    assert body.startswith(b"v9 ") and w.lifespan == "on"


def test_app_without_lifespan_support_serves():
    async def main():
        pool = Pool("faults", AppFactory(RELEASE, FAULTS, "app:app"), min_idle=1, max_isolates=1)
        await pool.start()
        w = await pool.acquire(30)
        body, _ = await request(pool, w, "/ok")
        pool.release(w)
        await pool.close()
        return w, body

    w, body = asyncio.run(main())
    assert w.lifespan == "unsupported"
    assert body.startswith(b"ok ")


def test_min_idle_growth_cap_and_idle_retirement():
    async def main():
        pool = Pool("plain", plain_factory(), min_idle=1, max_isolates=2, idle_timeout=0.5)
        await pool.start()
        assert pool.snapshot()["idle"] == 1
        w1 = await pool.acquire(30)
        assert pool.snapshot()["starting"] == 1  # min_idle: the next one boots ahead of demand
        w2 = await pool.acquire(60)
        assert w1 is not w2 and pool.live() == 2
        t = time.monotonic()
        with pytest.raises(PoolUnavailable) as ei:
            await pool.acquire(0.3)  # max_isolates reached, both busy
        assert ei.value.reason == "busy" and time.monotonic() - t >= 0.3
        assert pool.stats["booted"] == 2
        pool.release(w1)
        pool.release(w2)
        assert pool.snapshot()["idle"] == 2
        deadline = time.monotonic() + 10
        while pool.snapshot()["idle"] > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        snap = pool.snapshot()
        await pool.close()
        return snap

    snap = asyncio.run(main())
    assert snap["idle"] == 1  # idled out down to min_idle
    assert snap["retired"] == 1
    assert snap["booted"] == 2


def test_swap_routes_new_requests_to_new_deployment_and_finishes_old_ones(tmp_path):
    async def main():
        pool = Pool("plain", plain_factory(version="v1"), min_idle=1, max_isolates=3)
        await pool.start()
        old = await pool.acquire(30)  # an in-flight request on the old deployment
        gen = await pool.swap(plain_factory(version="v2"))
        new = await pool.acquire(30)
        new_body, _ = await request(pool, new, "/version")
        old_body, _ = await request(pool, old, "/version")  # still served by the old isolate
        pool.release(old)
        pool.release(new)
        idle_gens = {w.generation for w in pool.idle}
        await pool.close()
        return gen, old, new, old_body, new_body, idle_gens

    gen, old, new, old_body, new_body, idle_gens = asyncio.run(main())
    assert gen == 2 and new.generation == 2 and old.generation == 1
    assert old_body.startswith(b"v1 ") and new_body.startswith(b"v2 ")
    assert old.retiring and idle_gens == {2}


def test_failed_swap_keeps_serving_the_old_deployment():
    async def main():
        pool = Pool("plain", plain_factory(), min_idle=1, max_isolates=2)
        await pool.start()
        with pytest.raises(GuestError) as ei:
            await pool.swap(plain_factory(main="app:missing"))
        w = await pool.acquire(30)
        body, _ = await request(pool, w, "/version")
        pool.release(w)
        gen = pool.generation
        await pool.close()
        return ei.value, gen, body

    err, gen, body = asyncio.run(main())
    assert err.type_name == "AttributeError" and "missing" in err.message
    assert gen == 1 and body.startswith(b"v1 ")


def test_broken_app_fails_the_pool_start_with_the_guest_traceback(tmp_path):
    app = tmp_path / "broken"
    shutil.copytree(PLAIN, app)
    (app / "app.py").write_text("import no_such_module_here\n")

    async def main():
        pool = Pool("broken", plain_factory(app), min_idle=1, max_isolates=1)
        try:
            await pool.start()
        finally:
            await pool.close()

    with pytest.raises(GuestError) as ei:
        asyncio.run(main())
    assert ei.value.type_name == "ModuleNotFoundError"
    assert "no_such_module_here" in ei.value.traceback
