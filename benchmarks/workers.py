"""``pyworkers bench workers``: requests/s of ``pyworkers serve --workers 1|2`` against
``uvicorn --workers 1|2``, side by side in one run (issue 13).

The workload is the concurrency benchmark's plain ASGI app (``benchmarks/workloads/io``; ``GET
/`` answers at once, so the servers' own per-request cost is what is measured). For each worker
count, both servers run at once on 127.0.0.1 and are loaded in interleaved rounds by ``clients``
keep-alive connections (:func:`pyworkers.benchmarks.concurrency.load`). pyworkers runs one
isolate per process (``--max-isolates 1``), so N processes = N isolates, like N uvicorn
processes. On a machine with fewer real cores than processes the second process cannot add
throughput: the machine description says how many CPUs there are.
"""
from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from pyworkers.benchmarks.common import BenchError, describe_machine
from pyworkers.benchmarks.concurrency import WORKLOAD, Subprocess, measure, stderr_progress

KIND = "pyworkers-bench-workers"
PATH = "/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _servers(n: int, work: Path) -> dict[str, Subprocess]:
    pyw = Subprocess([sys.executable, "-m", "pyworkers", "serve", str(WORKLOAD), "--host",
                      "127.0.0.1", "--port", "0", "--workers", str(n), "--max-isolates", "1",
                      "--min-idle", "1", "--no-access-log"], work / f"pyworkers-{n}.log",
                     f"pyworkers serve --workers {n}")
    port = _free_port()  # uvicorn --workers needs a fixed port
    nat = Subprocess([sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(WORKLOAD),
                      "--host", "127.0.0.1", "--port", str(port), "--workers", str(n),
                      "--no-access-log"], work / f"native-{n}.log", f"uvicorn --workers {n}")
    return {"pyworkers": pyw, "native": nat}


def run(requests: int = 2000, clients: int = 16, rounds: int = 2, counts: tuple[int, ...] = (1, 2),
        progress: Callable[[str], None] = stderr_progress) -> dict:
    """Measure every worker count; returns ``{"kind", "machine", "results": {n: {server:
    load result}}, "ratio": {n: pyworkers req/s / native req/s}}``. Raises
    :class:`BenchError` if a server does not start or answers wrongly."""
    t0 = time.perf_counter()
    out: dict = {"kind": KIND, "machine": describe_machine(), "path": PATH,
                 "requests": requests, "clients": clients, "rounds": rounds, "results": {},
                 "ratio": {}}
    with tempfile.TemporaryDirectory(prefix="pyworkers-bench-workers-") as tmp:
        for n in counts:
            servers = _servers(n, Path(tmp))
            try:
                for s in servers.values():
                    s.wait_ready()
                time.sleep(1.0)  # every process up (the first ready line is one process's)
                ports = {k: s.port for k, s in servers.items()}
                res = measure(ports, PATH, requests, clients, rounds, progress)
            finally:
                for s in servers.values():
                    s.stop()
            out["results"][str(n)] = res
            nat = res["native"]["rps"]
            out["ratio"][str(n)] = round(res["pyworkers"]["rps"] / nat, 3) if nat else None
            progress(f"--workers {n}: pyworkers {res['pyworkers']['rps']} req/s, "
                     f"native {nat} req/s")
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def format_table(res: dict) -> str:
    m = res["machine"]
    lines = [f"pyworkers bench workers: GET {res['path']} of benchmarks/workloads/io, "
             f"{res['clients']} keep-alive clients, {res['requests']} requests per server and "
             f"worker count, {res['rounds']} interleaved rounds",
             f"machine: {m.get('cpu')}, {m.get('cores')} cores ({m.get('cores_usable')} usable)", "",
             f"  {'workers':>7} {'pyworkers req/s':>16} {'native req/s':>13} {'ratio':>7} "
             f"{'pyw p99 ms':>11} {'native p99 ms':>14}"]
    for n, r in res["results"].items():
        p, q = r["pyworkers"], r["native"]
        ratio = res["ratio"].get(n)
        lines.append(f"  {n:>7} {p['rps']:>16.0f} {q['rps']:>13.0f} "
                     f"{'x%.2f' % ratio if ratio else '-':>7} {p['latency_ms']['p99']:>11.2f} "
                     f"{q['latency_ms']['p99']:>14.2f}")
    lines.append(f"wall time: {res['wall_s']} s")
    return "\n".join(lines)


__all__ = ["BenchError", "format_table", "run"]
