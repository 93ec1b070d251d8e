"""Concurrent requests on one isolate vs native uvicorn: ``pyworkers bench concurrency`` (issue 11).

The workload (``workloads/io``, plain ASGI, no dependencies) runs twice on this machine, both as
subprocesses on 127.0.0.1 started once per run:

- ``pyworkers``: ``python -m pyworkers serve workloads/io --max-isolates 1 --min-idle 1``
  (one isolate: every request shares its event loop);
- ``native``: ``python -m uvicorn main:app --app-dir workloads/io`` (one process, one loop).

``clients`` closed-loop clients (one keep-alive HTTP/1.1 connection each, a minimal asyncio
client in this process) send ``GET`` requests back to back to one endpoint at a time:

- ``io``: ``await asyncio.sleep(0.05)``: the I/O-bound case (ideal: ``clients / 0.05`` req/s);
- ``def_inline``: ``time.sleep(0.05)`` in the handler: a ``def`` endpoint as the sandbox runs it
  (inline, it blocks its isolate's other requests; native uvicorn without a thread pool alike;
  ideal: 20 req/s);
- ``def_threadpool``: ``await asyncio.to_thread(time.sleep, 0.05)``: what Starlette does with a
  ``def`` endpoint; natively a worker thread (up to the default executor's thread count), inline
  in the sandbox (it cannot start threads).

Per endpoint: an uncounted warm-up (``2 x clients`` requests per server), then ``rounds``
counted rounds of ``requests / rounds`` requests per server; the servers alternate within a
round and the order flips every round (interleaved, so drift hits both alike). Latency is per
request, from writing it to having read the whole response (``time.perf_counter``, ms);
requests/s is counted requests over the summed wall time of their rounds. A round opens
``min(clients, requests in the round)`` connections; when a round has no more requests than
clients (the ``def`` endpoints with the defaults: 25 per round, 32 clients) it is one burst, so
on a server that runs them one at a time latencies spread from 50 ms to ``n x 50`` ms (p50
about half of that), not the steady-state ``clients x 50`` ms. Percentiles are nearest-rank
(:func:`pyworkers.benchmarks.common.pct`).

Run: ``pyworkers bench concurrency [--clients N] [--requests N] [--sync-requests N] [--json]``.
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from pyworkers.benchmarks.common import (BenchError, describe_machine, pct,
                                         short_machine_line, summary, workload_selection)
from pyworkers.benchmarks.peers import ServerProcess, http_load

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "workloads" / "io"
FORMAT = 1
KIND = "pyworkers-bench-concurrency"
DELAY_S = 0.05  # what every endpoint of the workload waits

#: (key, path, label, how many requests: "requests" or "sync_requests")
ENDPOINTS = (
    ("io", "/io", "async def, await asyncio.sleep(0.05)", "requests"),
    ("def_inline", "/block", "def, time.sleep(0.05) inline (blocks the loop)", "sync_requests"),
    ("def_threadpool", "/thread", "def via asyncio.to_thread(time.sleep, 0.05)",
     "sync_requests"),
)
SERVERS = ("pyworkers", "native")


# --------------------------------------------------------------------------- servers

#: the server subprocess (shared with the cold-start benchmark)
Subprocess = ServerProcess


def server_argv(kind: str, max_concurrency: int | None = None) -> tuple[list[str], str]:
    """``(argv, description)`` of the ``pyworkers`` or ``native`` server for the workload."""
    if kind == "pyworkers":
        argv = [sys.executable, "-m", "pyworkers", "serve", str(WORKLOAD), "--host", "127.0.0.1",
                "--port", "0", "--max-isolates", "1", "--min-idle", "1", "--no-access-log"]
        about = "pyworkers serve --max-isolates 1"
        if max_concurrency is not None:
            argv += ["--max-concurrency", str(max_concurrency)]
            about += f" --max-concurrency {max_concurrency}"
        return argv, about
    return ([sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(WORKLOAD), "--host",
             "127.0.0.1", "--port", "0", "--no-access-log"], "uvicorn main:app (1 process)")


# --------------------------------------------------------------------------- load

async def load(port: int, path: str, total: int, clients: int, expected: bytes | None = None
               ) -> tuple[list[float], float, dict[int, int]]:
    """``total`` ``GET path`` requests from ``clients`` closed-loop keep-alive HTTP/1.1
    connections to 127.0.0.1:``port`` (:func:`pyworkers.benchmarks.peers.http_load`). Returns
    (latencies in ms, elapsed seconds, status counts). A ``200`` must carry the workload's body
    ``ok <path>`` (or ``expected``); raises :class:`BenchError` otherwise or when a connection
    fails."""
    if expected is None:
        expected = f"ok {path}\n".encode()
    return await http_load(port, path, f"127.0.0.1:{port}", total, clients, expect=expected)


def load_result(lat: list[float], elapsed: float, statuses: dict[int, int]) -> dict:
    """A load run as JSON: requests, wall seconds, req/s, latency summary (ms), statuses."""
    return {"requests": len(lat), "wall_s": round(elapsed, 3),
            "rps": round(len(lat) / elapsed, 1) if elapsed else None,
            "latency_ms": {**summary(lat), "p90": round(pct(lat, 90), 3) if lat else None},
            "statuses": {str(k): statuses[k] for k in sorted(statuses)}}


def measure(ports: dict[str, int], path: str, total: int, clients: int, rounds: int,
            progress: Callable[[str], None], expected: bytes | None = None) -> dict[str, dict]:
    """One endpoint on every server: warm-up, then ``rounds`` interleaved counted rounds (the
    order flips every round). ``expected``: the 200 body (default the workload's)."""
    for kind, port in ports.items():
        asyncio.run(load(port, path, 2 * clients, clients, expected))
    acc = {k: ([], 0.0, {}) for k in ports}
    per_round = [total // rounds + (1 if i < total % rounds else 0) for i in range(rounds)]
    order = list(ports)
    for r, n in enumerate(per_round):
        for kind in (order if r % 2 == 0 else order[::-1]):
            lat, elapsed, st = asyncio.run(load(ports[kind], path, n, clients, expected))
            a_lat, a_el, a_st = acc[kind]
            a_lat.extend(lat)
            for s, c in st.items():
                a_st[s] = a_st.get(s, 0) + c
            acc[kind] = (a_lat, a_el + elapsed, a_st)
        progress(f"{path}: round {r + 1}/{rounds} done")
    return {k: load_result(*v) for k, v in acc.items()}


# --------------------------------------------------------------------------- the run

def stderr_progress(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[bench concurrency] {msg}", file=sys.stderr, flush=True)


def run(clients: int = 32, requests: int = 2000, *, sync_requests: int = 100, rounds: int = 4,
        max_concurrency: int | None = None, endpoints: tuple[str, ...] | None = None,
        progress: Callable[[str], None] | None = stderr_progress) -> dict:
    """Start both servers, measure every endpoint (see the module docstring), stop them.

    ``requests`` counted requests per server for ``io``, ``sync_requests`` for the two ``def``
    endpoints (they do at most 1 / 0.05 s = 20 req/s inline); ``endpoints``: keys of
    :data:`ENDPOINTS` to run (default all). Returns the result dict (``format_table`` prints
    it). Raises :class:`BenchError` if a server does not start or a connection fails.
    """
    say = progress or (lambda m: None)
    keys = endpoints or tuple(e[0] for e in ENDPOINTS)
    unknown = [k for k in keys if k not in {e[0] for e in ENDPOINTS}]
    if unknown:
        raise BenchError(f"unknown endpoint {unknown[0]!r}: choose from "
                         f"{', '.join(e[0] for e in ENDPOINTS)}")
    rounds = max(1, rounds)
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "format": FORMAT, "kind": KIND, "machine": describe_machine(workload_selection(WORKLOAD)),
        "workload": {"app": "benchmarks/workloads/io", "delay_ms": DELAY_S * 1000,
                     "endpoints": {k: {"path": p, "about": a} for k, p, a, _ in ENDPOINTS
                                   if k in keys}},
        "method": {"clients": clients, "requests": requests, "sync_requests": sync_requests,
                   "rounds": rounds, "warmup_per_server": 2 * clients,
                   "client": "closed-loop asyncio raw HTTP/1.1 keep-alive connections in the "
                             "bench process, 127.0.0.1",
                   "order": "per endpoint, servers alternate within a round, order flips "
                            "every round",
                   "latency": "request written -> whole response read (time.perf_counter)",
                   "connections_per_round": "min(clients, requests in the round): a round "
                                            "with no more requests than clients is one burst",
                   "percentiles": "nearest rank"},
        "servers": {}, "endpoints": {},
    }
    with tempfile.TemporaryDirectory(prefix="pyworkers-bench-conc-") as tmp:
        started: dict[str, Subprocess] = {}
        try:
            for kind in SERVERS:
                argv, about = server_argv(kind, max_concurrency)
                say(f"starting {about}")
                started[kind] = Subprocess(argv, Path(tmp) / f"{kind}.log", about)
            for s in started.values():
                s.wait_ready()
            ports = {k: s.port for k, s in started.items()}
            for key, path, _about, count in ENDPOINTS:
                if key not in keys:
                    continue
                n = requests if count == "requests" else sync_requests
                say(f"{key} ({path}): {n} requests per server, {clients} clients")
                res = measure(ports, path, n, clients, rounds, say)
                p, nat = res["pyworkers"], res["native"]
                res["ratio"] = {
                    "rps_pyworkers_over_native": _ratio(p["rps"], nat["rps"]),
                    "p50_pyworkers_over_native": _ratio(p["latency_ms"].get("p50"),
                                                        nat["latency_ms"].get("p50")),
                    "p99_pyworkers_over_native": _ratio(p["latency_ms"].get("p99"),
                                                        nat["latency_ms"].get("p99"))}
                res["ideal_rps"] = ideal_rps(key, clients)
                result["endpoints"][key] = res
            for kind, s in started.items():
                result["servers"][kind] = {"about": s.about, "rss_bytes_after": s.rss_bytes()}
        finally:
            for s in started.values():
                s.stop()
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    return result


def ideal_rps(key: str, clients: int) -> dict[str, float]:
    """Upper bound of req/s per server for endpoint ``key`` with ``clients`` closed-loop
    clients: ``io`` overlaps every client's 50 ms wait; ``def_inline`` runs one at a time; a
    ``def_threadpool`` request runs inline in the sandbox and natively on one of the default
    executor's ``min(32, cpus + 4)`` threads (CPython's ``ThreadPoolExecutor`` default)."""
    one = round(1 / DELAY_S, 1)
    if key == "io":
        return {k: round(clients / DELAY_S, 1) for k in SERVERS}
    if key == "def_inline":
        return {k: one for k in SERVERS}
    threads = min(32, (os.cpu_count() or 1) + 4)
    return {"pyworkers": one, "native": round(min(clients, threads) / DELAY_S, 1)}


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


def format_table(res: dict) -> str:
    """The result as a text table: per endpoint and server, req/s, p50/p99 and statuses."""
    m = res["machine"]
    meth = res["method"]
    lines = [f"pyworkers bench concurrency: {meth['clients']} clients, 1 isolate vs native "
             f"uvicorn, 127.0.0.1",
             short_machine_line(m),
             "",
             f"{'endpoint':<16} {'server':<10} {'requests':>8} {'req/s':>8} {'p50 ms':>8} "
             f"{'p99 ms':>8} {'ideal':>7}  statuses"]
    for key, e in res["endpoints"].items():
        for kind in SERVERS:
            r = e[kind]
            lat = r["latency_ms"]
            st = " ".join(f"{s}x{c}" for s, c in r["statuses"].items())
            lines.append(f"{key if kind == SERVERS[0] else '':<16} {kind:<10} "
                         f"{r['requests']:>8} {r['rps'] or 0:>8.1f} {lat.get('p50', 0):>8.1f} "
                         f"{lat.get('p99', 0):>8.1f} {e['ideal_rps'][kind]:>7g}  {st}")
        ratio = e["ratio"]
        lines.append(f"{'':<16} {'pyw/native':<10} {'':>8} "
                     f"{_fmt_ratio(ratio['rps_pyworkers_over_native']):>8} "
                     f"{_fmt_ratio(ratio['p50_pyworkers_over_native']):>8} "
                     f"{_fmt_ratio(ratio['p99_pyworkers_over_native']):>8}")
    lines.append("")
    lines.append("ideal: the most req/s the endpoint allows with these clients (50 ms each)")
    for key, about in ((k, v["about"]) for k, v in res["workload"]["endpoints"].items()):
        lines.append(f"{key}: {about}")
    lines.append(f"wall time {res['wall_s']} s")
    return "\n".join(lines)


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"
