"""Request phase tracing (``pyworkers serve --trace-phases``, :mod:`pyworkers.serve.phases`) and
the worker's start-up timeline: the arithmetic on its own, then real isolates through the ASGI
front (the guest's clock readings come back in ``G_DONE`` and land on the host's clock).
No timing bound is asserted: only that each phase is measured, ordered and adds up."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pyworkers.serve import AppFactory, ServeConfig, ServerApp
from pyworkers.serve.phases import (PHASES, RequestTrace, read_traces, request_phases, summarize,
                                    write_traces)

PLAIN = Path(__file__).parent / "data" / "serve" / "plain"


def _trace(base: int = 1_000_000_000) -> RequestTrace:
    ms = 1_000_000
    return RequestTrace(arrived=base, called=base + 1 * ms, pushed=base + 3 * ms,
                        guest=[base + 6 * ms, base + 10 * ms, base + 15 * ms],
                        start_rx=base + 21 * ms, sent=base + 28 * ms, worker="w#1", status=200)


def test_request_phases_are_consecutive_and_add_up():
    ph = request_phases(_trace())
    assert list(ph) == [*PHASES, "total"]
    assert [ph[k] for k in PHASES] == [1.0, 2.0, 0.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert ph["total"] == 28.0 == sum(ph[k] for k in PHASES)
    queued = _trace()
    queued.queue_ns = 1_500_000  # 1.5 of front_in's 2 ms were spent waiting for an isolate
    ph = request_phases(queued)
    assert (ph["front_in"], ph["queue"]) == (0.5, 1.5) and ph["total"] == 28.0


def test_incomplete_traces_are_refused_and_skipped():
    t = _trace()
    t.guest = None
    assert not t.complete()
    with pytest.raises(ValueError):
        request_phases(t)
    s = summarize([t, _trace(), _trace()])
    assert s["n"] == 2 and s["p50_ms"]["app"] == 5.0
    no_uvicorn = _trace()
    no_uvicorn.arrived = None
    assert "uvicorn_in" not in request_phases(no_uvicorn)
    assert request_phases(no_uvicorn)["total"] == 27.0


def test_traces_round_trip_through_json_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    assert write_traces(path, [_trace(), _trace(2_000_000_000)]) == 2
    rows = read_traces(path)
    assert len(rows) == 2 and rows[1]["called"] == 2_001_000_000
    assert json.loads(path.read_text().splitlines()[0])["worker"] == "w#1"
    assert summarize(rows, skip=1)["n"] == 1
    assert not (tmp_path / "t.jsonl.tmp").exists()


@pytest.mark.slow
def test_traced_requests_through_real_isolates(runtime_314, tmp_path):
    """A ServerApp with trace_phases: every request's trace completes (the guest's readings
    arrive with G_DONE), phases are in order on one clock, the worker's start-up steps are
    timed, and the traces are written at shutdown."""
    import httpx

    out = tmp_path / "traces.jsonl"

    async def main():
        app = ServerApp({"plain": AppFactory("314.0.7", PLAIN, "app:app", env={"VERSION": "t"})},
                        ServeConfig(min_idle=1, max_isolates=1, trace_phases=True,
                                    trace_file=str(out)))
        await app.startup()
        try:
            w = app.pools["plain"].workers[0]
            startup = w.startup_phases()
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://plain.localhost") as c:
                statuses = [(await c.get("/")).status_code for _ in range(5)]
            for _ in range(500):
                if all(t.complete() for t in app.traces):
                    break
                await asyncio.sleep(0.01)
            traces = list(app.traces)
        finally:
            await app.shutdown()
        return startup, statuses, traces

    startup, statuses, traces = asyncio.run(main())
    assert statuses == [200] * 5
    assert set(startup) == {"restore", "loop", "lifespan"} and all(v > 0 for v in startup.values())
    assert len(traces) == 5 and all(t.complete() for t in traces)
    for t in traces:
        assert t.status == 200 and t.worker.startswith("plain#")
        d, a, r = t.guest
        # one clock: host push < guest dispatch <= app call <= app return; the response is
        # written after the host received it
        assert t.called <= t.pushed < d <= a <= r
        assert t.start_rx <= t.sent
        ph = request_phases(t)
        assert ph["app"] >= 0 and ph["to_guest"] > 0 and "uvicorn_in" not in ph
    assert summarize(read_traces(out))["n"] == 5
