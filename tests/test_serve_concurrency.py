"""End-to-end (issue 11): an isolate runs its own event loop and serves many requests at once.

A real ``python -m pyworkers serve APP_DIR --port 0`` subprocess on 127.0.0.1, driven over
HTTP only (black box):

- ``tests/data/serve/concurrent/asgi`` (plain ASGI, no dependencies, no network): 64 concurrent
  ``asyncio.sleep(0.5)`` requests on one isolate, lifespan state shared by concurrent requests,
  a chunk forwarded as the app sends it, ``--max-concurrency`` (option and ``pyworkers.toml``)
  and the pool restoring isolates when they are full or blocked, ``asyncio.create_task`` jobs
  that outlive their response, shutdown (``--drain-timeout``), redeploy and idle retirement,
  a request timeout that cancels only its own request, a guest stuck in CPU, crashes
  (``os.abort()``, C-stack overflow) that fail only their own isolate;
- ``tests/data/serve/concurrent/fastapi`` (FastAPI from the package index: ``network``): the
  same through Starlette, plus ``BackgroundTasks`` (async and a blocking ``def`` task) whose
  response reaches the client before the task runs.

Module-level state of an app lives as long as its isolate, so with ``--max-isolates 1`` a
second request observes what a background job did; every response names its isolate (a
random token made at import) so the tests can tell isolates apart.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from test_serve import pyworkers_serve

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "serve" / "concurrent"
ASGI_APP, FASTAPI_APP = DATA / "asgi", DATA / "fastapi"


def many_connections(n: int = 64) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n,
                                                             max_keepalive_connections=n))


def poll(url: str, until, timeout: float = 15.0) -> httpx.Response:
    """GET ``url`` every 0.1 s until ``until(response)``; the last response (fails on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url, timeout=60)
        if until(r) or time.monotonic() > deadline:
            assert until(r), f"GET {url}: still {r.status_code} {r.text!r} after {timeout} s"
            return r
        time.sleep(0.1)


async def timed_get(c: httpx.AsyncClient, url: str, delay: float = 0.0
                    ) -> tuple[httpx.Response, float]:
    """(response, seconds from issue to whole response), issued after ``delay`` seconds."""
    if delay:
        await asyncio.sleep(delay)
    t0 = time.monotonic()
    r = await c.get(url)
    return r, time.monotonic() - t0


async def sixty_four_sleeps(url: str) -> tuple[list[httpx.Response], float]:
    async with many_connections() as c:
        t0 = time.monotonic()
        rs = await asyncio.gather(*(c.get(url) for _ in range(64)))
        return list(rs), time.monotonic() - t0


# ---------------------------------------------------------------------------- one isolate
@pytest.fixture(scope="module")
def one_isolate(tmp_path_factory):
    """The plain ASGI app on exactly one isolate (restored at startup: ``--min-idle 1``)."""
    log = tmp_path_factory.mktemp("one-isolate") / "serve.log"
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "1", "--min-idle", "1",
                        "--request-timeout", "60", log=log).wait_ready()
    yield s
    assert s.stop() == 0


def test_64_concurrent_sleeps_on_one_isolate_finish_in_under_2_s(one_isolate):
    url = one_isolate.url + "/sleep?s=0.5"
    warm = httpx.get(one_isolate.url + "/sleep?s=0", timeout=60)
    assert warm.status_code == 200
    rs, elapsed = asyncio.run(sixty_four_sleeps(url))
    assert [r.status_code for r in rs] == [200] * 64, [r.text for r in rs if r.status_code != 200]
    assert {r.text for r in rs} == {warm.text}  # all on the one isolate
    assert 0.5 <= elapsed < 2.0, f"64 x sleep(0.5) took {elapsed:.2f} s on one isolate"


def test_lifespan_state_is_shared_by_concurrent_requests_of_an_isolate(one_isolate):
    async def main():
        async with many_connections(10) as c:
            return await asyncio.gather(*(c.get(one_isolate.url + "/overlap?s=0.5")
                                          for _ in range(10)))

    bodies = [r.json() for r in asyncio.run(main())]
    assert {b["token"] for b in bodies} == {bodies[0]["token"]}
    assert {b["startups"] for b in bodies} == {1}  # lifespan ran once for the isolate
    hits = sorted(b["hits"] for b in bodies)  # one counter in `state`, seen by every request
    assert hits == list(range(hits[0], hits[0] + 10)), hits
    # the requests were in flight together in that isolate (one at a time would give 1)
    assert max(b["peak"] for b in bodies) >= 5, bodies


def test_create_task_job_finishes_after_its_response_was_sent(one_isolate):
    jid = uuid.uuid4().hex[:8]
    t0 = time.monotonic()
    r = httpx.get(one_isolate.url + f"/job?id={jid}&s=1.5", timeout=60)
    answered = time.monotonic() - t0
    assert (r.status_code, r.text) == (200, f"started {jid}")
    assert answered < 1.0, f"the response waited for the job: {answered:.2f} s"
    assert httpx.get(one_isolate.url + f"/jobs?id={jid}", timeout=60).text == "pending"
    poll(one_isolate.url + f"/jobs?id={jid}", lambda r: r.text == "done")
    assert time.monotonic() - t0 >= 1.5
    one_isolate.wait_log(rf"\[concurrent#\d+ stdout\] job {jid} done", timeout=10)


def test_a_chunk_reaches_the_client_when_the_app_sends_it(one_isolate):
    """``/push`` sends a first chunk, then blocks 1.5 s without awaiting: the chunk is at the
    client long before the block ends (the host forwards ``send()`` at once, not when the
    guest next yields)."""
    arrivals = []
    with httpx.Client(timeout=60) as c:
        t0 = time.monotonic()
        with c.stream("GET", one_isolate.url + "/push?block=1.5") as r:
            for chunk in r.iter_raw():
                arrivals.append((round(time.monotonic() - t0, 3), chunk))
    assert r.status_code == 200 and b"".join(c for _, c in arrivals) == b"first\nlast\n"
    first = next(t for t, c in arrivals if b"first" in c)
    last = next(t for t, c in arrivals if b"last" in c)
    assert first < 0.75 and last >= 1.5, arrivals


# ---------------------------------------------------------------------------- --max-concurrency
async def overlap_wave(url: str, n: int, seconds: float = 0.6) -> tuple[list[dict], float]:
    async with many_connections(n) as c:
        t0 = time.monotonic()
        rs = await asyncio.gather(*(c.get(url + f"/overlap?s={seconds}") for _ in range(n)))
        elapsed = time.monotonic() - t0
    assert [r.status_code for r in rs] == [200] * n, [r.text for r in rs]
    return [r.json() for r in rs], elapsed


def test_max_concurrency_bounds_the_requests_in_flight_per_isolate(tmp_path):
    """``--max-concurrency 3 --max-isolates 1``: 7 concurrent requests run at most 3 at a time
    (the rest wait for room: three waves of 0.6 s), none fails."""
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "1", "--min-idle", "1",
                        "--max-concurrency", "3", log=tmp_path / "serve.log").wait_ready()
    try:
        bodies, elapsed = asyncio.run(overlap_wave(s.url, 7))
    finally:
        assert s.stop() == 0
    assert len({b["token"] for b in bodies}) == 1
    assert max(b["peak"] for b in bodies) == 3, bodies
    assert elapsed >= 1.8, elapsed


def test_full_isolates_make_the_pool_restore_another(tmp_path):
    """``--max-concurrency 2 --max-isolates 3 --min-idle 1``: 6 concurrent requests of 4 s
    need all three isolates, 2 requests each (restores take about a second here)."""
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "3", "--min-idle", "1",
                        "--max-concurrency", "2", log=tmp_path / "serve.log").wait_ready()
    try:
        bodies, _ = asyncio.run(overlap_wave(s.url, 6, seconds=4))
    finally:
        assert s.stop() == 0
    per_isolate: dict[str, int] = {}
    for b in bodies:
        per_isolate[b["token"]] = per_isolate.get(b["token"], 0) + 1
        assert b["peak"] <= 2, bodies
    assert sorted(per_isolate.values()) == [2, 2, 2], per_isolate


def test_max_concurrency_from_pyworkers_toml(tmp_path):
    """``max_concurrency = 2`` in ``pyworkers.toml`` bounds the isolate like the option."""
    app = tmp_path / "app"
    shutil.copytree(ASGI_APP, app)
    toml = app / "pyworkers.toml"
    toml.write_text(toml.read_text() + "max_concurrency = 2\n")
    s = pyworkers_serve(str(app), "--max-isolates", "1", "--min-idle", "1",
                        log=tmp_path / "serve.log").wait_ready()
    try:
        bodies, elapsed = asyncio.run(overlap_wave(s.url, 4))
    finally:
        assert s.stop() == 0
    assert max(b["peak"] for b in bodies) == 2, bodies
    assert elapsed >= 1.2, elapsed

def test_no_room_within_queue_timeout_is_503_unavailable(tmp_path):
    """``--max-isolates 1 --max-concurrency 1 --queue-timeout 1``: while ``/sleep?s=3`` holds
    the only slot, another request waits 1 s for room, then gets 503 from the host."""
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "1", "--min-idle", "1",
                        "--max-concurrency", "1", "--queue-timeout", "1",
                        log=tmp_path / "serve.log").wait_ready()
    try:
        async def main():
            async with many_connections(4) as c:
                holder = asyncio.create_task(timed_get(c, s.url + "/sleep?s=3"))
                queued = await timed_get(c, s.url + "/sleep?s=0", delay=0.3)
                return (await holder)[0], queued

        holder, (queued, t_queued) = asyncio.run(main())
    finally:
        assert s.stop() == 0
    assert holder.status_code == 200
    assert (queued.status_code, queued.headers.get("x-pyworkers-fault")) == (503, "unavailable"), \
        (queued.status_code, queued.headers, queued.text)
    assert 1.0 <= t_queued < 2.5, t_queued



def test_new_requests_avoid_an_isolate_whose_loop_is_blocked(tmp_path):
    """``/spin?s=3`` holds its isolate's loop without awaiting; a request arriving meanwhile
    is served by another isolate (``--max-isolates 2``) before the spin ends."""
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "2", "--min-idle", "1",
                        "--request-timeout", "30", log=tmp_path / "serve.log").wait_ready()
    try:
        url = s.url
        busy = httpx.get(url + "/stats", timeout=60).json()["token"]

        async def main():
            async with many_connections(4) as c:
                spin = asyncio.create_task(timed_get(c, url + "/spin?s=3"))
                other = await timed_get(c, url + "/sleep?s=0", delay=0.5)
                return (await spin)[0], other

        spin, (other, t_other) = asyncio.run(main())
    finally:
        assert s.stop() == 0
    assert (spin.status_code, spin.text) == (200, "spun")
    assert other.status_code == 200 and other.text != busy
    assert t_other < 2.5, f"waited {t_other:.1f} s for the blocked isolate"


# ---------------------------------------------------------------------------- request timeout
@pytest.fixture(scope="module")
def timeout_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("timeout") / "serve.log"
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "1", "--min-idle", "1",
                        "--request-timeout", "1", log=log).wait_ready()
    yield s
    assert s.stop() == 0


def test_request_timeout_cancels_only_that_request(timeout_server):
    url = timeout_server.url
    token = httpx.get(url + "/stats", timeout=60).json()["token"]

    async def main():
        async with many_connections(32) as c:
            slow = asyncio.create_task(timed_get(c, url + "/slow?s=5"))
            # requests of the same (only) isolate, in flight while /slow waits and times out
            others = [asyncio.create_task(timed_get(c, url + "/sleep?s=0.3", delay=0.2 + i / 20))
                      for i in range(16)]
            during = []
            while not slow.done():
                during.append(await c.get(url + "/sleep?s=0"))
                await asyncio.sleep(0.05)
            after = [await c.get(url + "/sleep?s=0.1") for _ in range(3)]
            return await slow, [(await o)[0] for o in others] + during + after

    (slow, t_slow), rest = asyncio.run(main())
    assert (slow.status_code, slow.headers.get("x-pyworkers-fault")) == (504, "timeout"), slow.text
    assert 1.0 <= t_slow < 4.0, t_slow
    assert [r.status_code for r in rest] == [200] * len(rest), [(r.status_code, r.text)
                                                                 for r in rest]
    assert {r.text for r in rest} == {token}  # same isolate before, during and after
    # the app saw its request's task cancelled, and the isolate lives on
    stats = poll(url + "/stats", lambda r: r.json()["cancelled"] == ["/slow"], timeout=5).json()
    assert stats["token"] == token


def test_guest_stuck_in_cpu_past_the_deadline_fails_its_isolate_and_is_replaced(timeout_server):
    """``/spin`` never awaits: past ``--request-timeout 1`` the isolate is interrupted, every
    request in it (here also an awaiting ``/sleep?s=3``) gets 503/504 from the host, and a new
    isolate serves the next requests. (Last test on this server: it replaces the isolate.)"""
    url = timeout_server.url
    token = httpx.get(url + "/stats", timeout=60).json()["token"]

    async def main():
        async with many_connections(4) as c:
            sleeper = asyncio.create_task(timed_get(c, url + "/sleep?s=3"))
            spin, t_spin = await timed_get(c, url + "/spin?s=30", delay=0.3)
            return (spin, t_spin), await sleeper

    (spin, t_spin), (sleeper, _) = asyncio.run(main())
    assert spin.status_code in (503, 504) and spin.headers.get("x-pyworkers-fault") == "timeout", \
        (spin.status_code, spin.headers, spin.text)
    assert 1.0 <= t_spin < 10.0, t_spin  # interrupted, not left to spin for 30 s
    assert sleeper.status_code in (503, 504) and sleeper.headers.get("x-pyworkers-fault"), \
        (sleeper.status_code, sleeper.headers, sleeper.text)
    t0 = time.monotonic()
    after = httpx.get(url + "/stats", timeout=60)
    assert after.status_code == 200 and after.json()["token"] != token
    assert time.monotonic() - t0 < 10.0, "the replacement isolate took too long to serve"


# ---------------------------------------------------------------------------- crash
@pytest.fixture(scope="module")
def two_isolates(tmp_path_factory):
    log = tmp_path_factory.mktemp("two-isolates") / "serve.log"
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "2", "--min-idle", "2",
                        "--request-timeout", "60", log=log).wait_ready()
    yield s
    assert s.stop() == 0


def test_a_crash_fails_only_its_own_isolate(two_isolates):
    url = two_isolates.url

    async def both_ready() -> set[str]:
        async with many_connections(2) as c:
            rs = await asyncio.gather(c.get(url + "/sleep?s=0.5"), c.get(url + "/sleep?s=0.5"))
            return {r.text for r in rs}

    deadline = time.monotonic() + 120
    while len(both_ready_tokens := asyncio.run(both_ready())) < 2:  # least-loaded routing
        assert time.monotonic() < deadline, "two concurrent requests never reached 2 isolates"
        time.sleep(0.5)

    async def main():
        async with many_connections(8) as c:
            long = asyncio.create_task(timed_get(c, url + "/sleep?s=3"))  # isolate A
            await asyncio.sleep(0.3)
            crash, t_crash = await timed_get(c, url + "/crash?after=1")  # least loaded: B
            after = [await c.get(url + "/sleep?s=0") for _ in range(10)]  # while A still sleeps
            return (await long)[0], crash, after

    long, crash, after = asyncio.run(main())
    assert (crash.status_code, crash.headers.get("x-pyworkers-fault")) == (500, "crash"), \
        crash.text
    assert long.status_code == 200 and long.text in both_ready_tokens, long.text
    assert [r.status_code for r in after] == [200] * 10, [(r.status_code, r.text) for r in after]
    # and the crashed isolate is replaced: two isolates serve again, A among them
    deadline = time.monotonic() + 120
    while len(tokens := asyncio.run(both_ready())) < 2:
        assert time.monotonic() < deadline, "no second isolate after the crash"
        time.sleep(0.5)
    assert long.text in tokens and len(tokens - both_ready_tokens) == 1, (tokens,
                                                                         both_ready_tokens)


def test_a_crash_fails_the_in_flight_requests_of_its_isolate_then_it_is_replaced(tmp_path):
    """One isolate, two requests in it: the crash fails both (500, fault crash) as soon as it
    happens; the next request is served by a fresh isolate within seconds."""
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "1", "--min-idle", "1",
                        "--request-timeout", "60", log=tmp_path / "serve.log").wait_ready()
    try:
        url = s.url
        token = httpx.get(url + "/stats", timeout=60).json()["token"]

        async def main():
            async with many_connections(4) as c:
                sleeper = asyncio.create_task(timed_get(c, url + "/sleep?s=5"))
                crash = await timed_get(c, url + "/crash?after=1", delay=0.2)
                return crash, await sleeper

        (crash, _), (sleeper, t_sleeper) = asyncio.run(main())
        for r in (crash, sleeper):
            assert (r.status_code, r.headers.get("x-pyworkers-fault")) == (500, "crash"), \
                (r.status_code, r.headers, r.text)
        assert t_sleeper < 4.0, f"the lost request was answered after {t_sleeper:.1f} s"
        timings = []
        for path in ("/stats", "/recurse", "/stats"):  # a C-stack overflow is a crash too
            t0 = time.monotonic()
            r = httpx.get(url + path, timeout=60)
            timings.append((path, r.status_code, r.headers.get("x-pyworkers-fault"),
                            round(time.monotonic() - t0, 2)))
            if path == "/stats":
                assert r.status_code == 200 and r.json()["token"] != token, timings
                token = r.json()["token"]
        assert [t[1:3] for t in timings] == [(200, None), (500, "crash"), (200, None)], timings
        assert max(t[3] for t in timings) < 10.0, timings  # replaced within seconds
    finally:
        assert s.stop() == 0


# ---------------------------------------------------------------------------- drain on shutdown
def test_shutdown_lets_jobs_finish_then_cancels_the_rest_after_drain_timeout(tmp_path):
    """SIGINT with two jobs running: the 1.5 s one completes, the 120 s one is cancelled when
    ``--drain-timeout 4`` runs out (the app prints both outcomes); the server then exits 0."""
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "1", "--min-idle", "1",
                        "--drain-timeout", "4", log=tmp_path / "serve.log").wait_ready()
    try:
        with httpx.Client(timeout=60) as c:
            assert c.get(s.url + "/job?id=short&s=1.5").text == "started short"
            assert c.get(s.url + "/job?id=long&s=120").text == "started long"
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGINT)
        rc = s.proc.wait(60)
        took = time.monotonic() - t0
    finally:
        s.stop()
    assert rc == 0, s.text()[-3000:]
    log = s.text()
    assert re.search(r"\[concurrent#\d+ stdout\] job short done", log), log[-3000:]
    assert re.search(r"\[concurrent#\d+ stdout\] job long cancelled", log), log[-3000:]
    assert log.index("job short done") < log.index("job long cancelled")
    assert 3.0 <= took < 30, took  # waited for the drain grace, not for the 120 s job


def test_redeploy_lets_the_old_generations_jobs_finish(tmp_path):
    """SIGHUP rebuilds the app (generation 2) while a job of generation 1 runs: the job
    completes in the retiring isolate (the app prints it), new requests go to generation 2."""
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "1", "--min-idle", "1",
                        log=tmp_path / "serve.log").wait_ready()
    try:
        with httpx.Client(timeout=60) as c:
            old = c.get(s.url + "/stats").json()["token"]
            assert c.get(s.url + "/job?id=hup&s=3").text == "started hup"
            os.kill(s.proc.pid, signal.SIGHUP)
            s.wait_log(r"\[concurrent\] redeployed from .* \(generation 2\)")
            new = c.get(s.url + "/stats").json()
            assert new["token"] != old and "hup" not in new["jobs"]
        s.wait_log(r"\[concurrent#\d+ stdout\] job hup done", timeout=30)
        assert "job hup cancelled" not in s.text()
    finally:
        assert s.stop() == 0


def test_idle_timeout_lets_a_running_job_finish(tmp_path):
    """``--min-idle 0 --idle-timeout 1 --drain-timeout 10``: the isolate that answered
    ``/job?s=4`` has no request left after its response; idle retirement does not cut the
    job short (it completes, the app prints it), and the isolate retires."""
    s = pyworkers_serve(str(ASGI_APP), "--max-isolates", "1", "--min-idle", "0",
                        "--idle-timeout", "1", "--drain-timeout", "10",
                        log=tmp_path / "serve.log").wait_ready()
    try:
        t0 = time.monotonic()
        assert httpx.get(s.url + "/job?id=idle&s=4", timeout=60).text == "started idle"
        done = s.wait_log(r"\[(concurrent#\d+) stdout\] job idle done", timeout=30)
        assert time.monotonic() - t0 >= 4.0
        s.wait_log(rf"\[{done.group(1)}\] retiring", timeout=30)
        assert "job idle cancelled" not in s.text()
    finally:
        assert s.stop() == 0

# ---------------------------------------------------------------------------- FastAPI
@pytest.fixture(scope="module")
def fastapi_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("fastapi") / "serve.log"
    s = pyworkers_serve(str(FASTAPI_APP), "--max-isolates", "1", "--min-idle", "1",
                        "--request-timeout", "60", log=log).wait_ready(timeout=900)
    yield s
    assert s.stop() == 0


@pytest.mark.network
def test_fastapi_64_concurrent_sleeps_on_one_isolate(fastapi_server):
    warm = httpx.get(fastapi_server.url + "/sleep?s=0", timeout=60)
    assert warm.status_code == 200
    rs, elapsed = asyncio.run(sixty_four_sleeps(fastapi_server.url + "/sleep?s=0.5"))
    assert [r.status_code for r in rs] == [200] * 64
    assert {r.json()["token"] for r in rs} == {warm.json()["token"]}
    assert 0.5 <= elapsed < 2.0, f"64 x sleep(0.5) took {elapsed:.2f} s on one isolate"


@pytest.mark.network
@pytest.mark.parametrize("endpoint", ["background", "create-task"])
def test_fastapi_job_finishes_after_its_response_was_sent(fastapi_server, endpoint):
    url = fastapi_server.url
    jid = f"{endpoint}-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    r = httpx.get(url + f"/{endpoint}?id={jid}&s=1.5", timeout=60)
    answered = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["queued"] == jid
    assert answered < 1.0, f"the response waited for the job: {answered:.2f} s"
    assert httpx.get(url + f"/jobs?id={jid}", timeout=60).json()["state"] == "pending"
    done = poll(url + f"/jobs?id={jid}", lambda r: r.json()["state"] == "done").json()
    assert done["token"] == r.json()["token"]
    assert time.monotonic() - t0 >= 1.5


@pytest.mark.network
def test_fastapi_blocking_background_task_does_not_hold_the_response(fastapi_server):
    """A ``def`` background task blocking 2 s (run inline after the response): the response
    is at the client as soon as the app sent it (native uvicorn: ~0.02 s)."""
    url = fastapi_server.url
    jid = f"sync-{uuid.uuid4().hex[:8]}"
    with httpx.Client(timeout=60) as c:
        t0 = time.monotonic()
        with c.stream("GET", url + f"/background-sync?id={jid}&s=2") as r:
            first_byte = time.monotonic() - t0
            body = r.read()
            whole = time.monotonic() - t0
    assert r.status_code == 200 and json.loads(body)["queued"] == jid
    assert whole < 1.0, f"first byte after {first_byte:.2f} s, whole response {whole:.2f} s"
    done = poll(url + f"/jobs?id={jid}", lambda r: r.json()["state"] == "done")
    assert done.status_code == 200 and time.monotonic() - t0 >= 2.0


@pytest.mark.network
def test_fastapi_lifespan_state_is_shared_by_the_requests_of_an_isolate(fastapi_server):
    async def main():
        async with many_connections(10) as c:
            return await asyncio.gather(*(c.get(fastapi_server.url + "/state")
                                          for _ in range(10)))

    bodies = [r.json() for r in asyncio.run(main())]
    assert {b["token"] for b in bodies} == {bodies[0]["token"]}
    hits = sorted(b["hits"] for b in bodies)
    assert hits == list(range(hits[0], hits[0] + 10)), hits
