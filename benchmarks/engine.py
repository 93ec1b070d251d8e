"""Engine cold start: from the cached compiled module to a usable interpreter.

Two measurements, side by side in one run (medians; the machines are shared and noisy):

- ``isolate``: in a process that already loaded the release (module deserialized, Linker
  built): ``Isolate(...)`` (store, instantiate, trampoline, ctors, CPython ``main``, guest
  helper) plus one round trip that evaluates ``1 + 1`` in the guest. This is the per-isolate
  cold start.
- ``process``: a fresh host Python process: import pyworkers, verify and deserialize the cached
  ``.cwasm``, build the Linker, boot one isolate, one round trip. This is what a new worker
  process pays once.

Run: ``pyworkers bench engine [--runs N] [--release V] [--json]``.
"""
from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time

PROCESS_SNIPPET = r"""
import sys, time, json
t0 = time.perf_counter()
from pyworkers.runtime import Isolate, Runtime
rt = Runtime.get(sys.argv[1])
t1 = time.perf_counter()
iso = Isolate(rt)
assert iso.eval("1 + 1") == "2"
t2 = time.perf_counter()
print(json.dumps({"load_ms": (t1 - t0) * 1000, "isolate_ms": (t2 - t1) * 1000, "total_ms": (t2 - t0) * 1000}))
"""


def _summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {
        "n": len(xs),
        "median_ms": round(statistics.median(xs), 2),
        "p90_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.9))], 2),
        "min_ms": round(xs[0], 2),
        "max_ms": round(xs[-1], 2),
    }


def run(release: str = "314.0.7", runs: int = 20, process_runs: int = 5) -> dict:
    """Measure; returns ``{"isolate": summary, "isolate_phases": {...}, "process": summary, ...}``
    with times in milliseconds."""
    from pyworkers.runtime import Isolate, Runtime
    from pyworkers.runtime.engine import wasmtime_version

    rt = Runtime.get(release)
    Isolate(rt).eval("1")  # warm-up: page cache, first-use code paths
    iso_ms, main_ms, inst_ms = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        iso = Isolate(rt)
        assert iso.eval("1 + 1") == "2"
        iso_ms.append((time.perf_counter() - t0) * 1000)
        main_ms.append(iso.timings["main_ms"])
        inst_ms.append(iso.timings["instantiate_ms"])
        iso.close()
    proc = []
    for _ in range(process_runs):
        out = subprocess.run([sys.executable, "-c", PROCESS_SNIPPET, release], capture_output=True,
                             text=True, check=True)
        proc.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "release": release,
        "wasmtime": wasmtime_version(),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "isolate": _summary(iso_ms),
        "isolate_phases": {"instantiate": _summary(inst_ms), "main": _summary(main_ms)},
        "process": _summary([p["total_ms"] for p in proc]),
        "process_phases": {"load_module_and_linker": _summary([p["load_ms"] for p in proc]),
                           "first_isolate": _summary([p["isolate_ms"] for p in proc])},
        "target": {"isolate_median_ms": 50},
    }


def format_table(res: dict) -> str:
    rows = [
        ("isolate cold start (module loaded)", res["isolate"]),
        ("  of which instantiate", res["isolate_phases"]["instantiate"]),
        ("  of which CPython main", res["isolate_phases"]["main"]),
        ("new process: load + first isolate", res["process"]),
        ("  of which load module + linker", res["process_phases"]["load_module_and_linker"]),
    ]
    lines = [f"engine cold start, Pyodide {res['release']}, wasmtime {res['wasmtime']}",
             f"{'measurement':40} {'n':>3} {'median':>9} {'p90':>9} {'min':>9} {'max':>9}"]
    for name, s in rows:
        lines.append(f"{name:40} {s['n']:>3} {s['median_ms']:>7.1f}ms {s['p90_ms']:>7.1f}ms "
                     f"{s['min_ms']:>7.1f}ms {s['max_ms']:>7.1f}ms")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(format_table(run()))
