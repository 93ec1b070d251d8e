"""Where the time goes (issue 13's phase breakdown), for ``pyworkers bench``.

- a cold start (mode 2) and a pre-warmed isolate's first request (mode 3), split into the
  worker's start-up steps (``restore``, ``loop``, ``lifespan``: :meth:`Worker.startup_phases`)
  and the request's phases (:mod:`pyworkers.serve.phases`), collected in process by
  ``coldstart.InProcess``;
- a warm request over real HTTP: a separate, traced ``pyworkers serve --trace-phases`` run (the
  requests/s and p50/p99 figures come from an untraced server);
- a warm request in process, through the same ASGI front and ``httpx.ASGITransport`` as modes
  1-3: the like-for-like denominator of the cold/warm ratio.
"""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pyworkers.benchmarks.common import pct
from pyworkers.benchmarks.peers import ServerProcess, http_load

#: start-up steps of a worker, then the request phases, in order (see the module docstring)
STARTUP = ("restore", "loop", "lifespan")

LABELS = {
    "restore": "restore (snapshot -> isolate with the app loaded)",
    "loop": "guest serve loop start",
    "lifespan": "lifespan startup",
    "uvicorn_in": "uvicorn: bytes in -> ASGI call",
    "front_in": "host front: routing, pool, frame out",
    "queue": "waiting for an isolate (a cold start's start-up)",
    "to_guest": "crossing into the isolate's thread",
    "guest_in": "guest adapter: frame -> app called",
    "app": "the app's ASGI call",
    "to_host": "crossing back to the server's loop",
    "front_out": "host front + uvicorn: response written",
}


def flat_phases(worker: Any, trace: Any, startup: bool) -> dict[str, float]:
    """``{"phase:<name>": ms}`` for one in-process sample: the worker's start-up steps (when
    ``startup``) and the request's phases (when its trace is complete)."""
    from pyworkers.serve.phases import request_phases

    out: dict[str, float] = {}
    if startup and worker is not None:
        out.update({f"phase:{k}": v for k, v in worker.startup_phases().items()})
    if trace is not None and trace.complete():
        out.update({f"phase:{k}": v for k, v in request_phases(trace).items() if k != "total"})
    return out


async def warm_inprocess(factory: Any, path: str, requests: int, memory_limit: int) -> dict:
    """``requests`` sequential requests to one warm isolate through ``ServerApp`` and
    ``httpx.ASGITransport`` (after 50 unmeasured ones): ``{"n", "p50", "p99", "phases_p50_ms"}``
    (ms)."""
    import httpx

    from pyworkers.serve import ServeConfig, ServerApp
    from pyworkers.serve.phases import summarize

    app = ServerApp({"bench": factory}, ServeConfig(
        min_idle=1, max_isolates=1, memory_limit=memory_limit, request_timeout=300.0,
        queue_timeout=300.0, trace_phases=True))
    await app.startup()
    lat = []
    try:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench.localhost",
                                     timeout=300) as client:
            for i in range(50 + requests):
                t0 = time.perf_counter()
                r = await client.get(path)
                if i >= 50:
                    lat.append((time.perf_counter() - t0) * 1000)
                if r.status_code >= 500:
                    raise RuntimeError(f"GET {path}: {r.status_code}")
    finally:
        await app.shutdown()
    ph = summarize(list(app.traces), skip=50)
    return {"n": len(lat), "p50": round(pct(lat, 50), 3), "p99": round(pct(lat, 99), 3),
            "phases_p50_ms": ph["p50_ms"]}


def traced_http(store_root: Path, name: str, path: str, work: Path, requests: int,
                memory_limit: int, progress: Callable[[str], None]) -> dict:
    """A separate ``pyworkers serve --trace-phases`` run (same options as the warm
    measurement): 100 unmeasured then ``requests`` sequential keep-alive requests; returns
    ``{"n", "p50_ms": {phase: ms, "total": ms}, "client_p50"}``."""
    from pyworkers.serve.phases import read_traces, summarize

    progress(f"warm HTTP, traced: {requests} requests with --trace-phases")
    out = work / "traces.jsonl"
    argv = [sys.executable, "-m", "pyworkers", "serve", name, "--store", str(store_root),
            "--host", "127.0.0.1", "--port", "0", "--min-idle", "2", "--max-isolates", "2",
            "--memory-limit", str(memory_limit >> 20), "--no-access-log",
            "--trace-phases", str(out)]
    srv = ServerProcess(argv, work / "traced.log", about="traced pyworkers serve").wait_ready()
    try:
        host = f"{name}.localhost"
        asyncio.run(http_load(srv.port, path, host, 100, 1))
        lat, _, _ = asyncio.run(http_load(srv.port, path, host, requests, 1))
    finally:
        srv.stop()
    ph = summarize(read_traces(out), skip=100)
    return {"n": ph["n"], "p50_ms": ph["p50_ms"], "client_p50": round(pct(lat, 50), 3)}


def breakdown_lines(result: dict) -> list[str]:
    """The report's phase breakdown (cold start, pre-warmed first request, warm request)."""
    lines = []
    modes = result.get("modes") or {}

    def row(title: str, ph: dict, keys: tuple[str, ...]) -> None:
        got = [(k, ph[k]) for k in keys if k in ph]
        if not got:
            return
        total = sum(v for _, v in got)
        lines.append(f"  {title}: " + " + ".join(f"{k} {v:.2f}" for k, v in got)
                     + f" = {total:.2f} ms")

    from pyworkers.serve.phases import PHASES

    cold = (modes.get("snapshot_restore") or {}).get("phases_p50_ms") or {}
    pre = (modes.get("prewarmed") or {}).get("phases_p50_ms") or {}
    strip = lambda d: {k.split(":", 1)[1]: v for k, v in d.items() if k.startswith("phase:")}  # noqa
    if cold or pre:
        lines.append("where the time goes (p50 of each phase, ms; phases: "
                     "pyworkers.serve.phases):")
        row("cold start (mode 2), start-up", strip(cold), STARTUP)
        row("cold start (mode 2), first request", strip(cold),
            tuple(p for p in PHASES if p != "queue"))
        row("pre-warmed (mode 3), first request", strip(pre), PHASES)
    wi = result.get("warm_inprocess") or {}
    if wi.get("phases_p50_ms"):
        row(f"warm request in process (n={wi['n']})", wi["phases_p50_ms"], PHASES)
    th = ((result.get("warm") or {}).get("pyworkers") or {}).get("phases") or {}
    if th.get("p50_ms"):
        row(f"warm request over HTTP (traced run, n={th['n']}, client p50 "
            f"{th['client_p50']:.2f} ms)", th["p50_ms"], PHASES)
    if lines:
        lines.append("  (" + "; ".join(f"{k}: {v}" for k, v in LABELS.items()) + ")")
        lines.append("")
    return lines


__all__ = ["LABELS", "STARTUP", "breakdown_lines", "flat_phases", "traced_http",
           "warm_inprocess"]
