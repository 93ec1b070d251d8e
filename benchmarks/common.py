"""What every ``pyworkers bench`` benchmark shares: the one error class, nearest-rank statistics
and the description of the machine a result was measured on (CPU, memory, versions, commit), with
the one ``/proc/<pid>/smaps_rollup`` reader.

Used by the cold-start benchmark (:mod:`pyworkers.benchmarks.coldstart` and its peers and
report), ``bench concurrency``, ``bench proxy``, ``bench workers`` and ``bench snapshot``;
imports none of them.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """The benchmark cannot run (bad workload, failed deploy, ...): one line."""


# --------------------------------------------------------------------------- statistics

def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of ``xs``."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


def summary(xs: list[float]) -> dict:
    """``{"n", "mean", "p50", "p99", "min", "max", "stdev"}`` of ``xs`` (milliseconds)."""
    if not xs:
        return {"n": 0}
    r = lambda v: round(v, 3)  # noqa: E731
    return {"n": len(xs), "mean": r(statistics.fmean(xs)), "p50": r(pct(xs, 50)),
            "p99": r(pct(xs, 99)), "min": r(min(xs)), "max": r(max(xs)),
            "stdev": r(statistics.stdev(xs)) if len(xs) > 1 else 0.0}


# --------------------------------------------------------------------------- machine

def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                    "--untracked-files=no"], capture_output=True, text=True,
                                   timeout=10).stdout.strip()
            return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def describe_machine(selection: dict | None = None) -> dict:
    """What a result was measured on (two result files are comparable when these match)."""
    from pyworkers import __version__
    from pyworkers.runtime.engine import wasmtime_version

    from pyworkers.benchmarks import node_peer

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    nv = node_peer.node_version()
    sel = selection or {}
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "cores_usable": affinity,
        "memory_bytes": _mem_total(), "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(), "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "wasmtime": wasmtime_version(), "pyworkers": __version__, "commit": _git_commit(),
        "runtime": {"release": sel.get("release"), "pyodide": sel.get("pyodide_version"),
                    "python": sel.get("python_version"),
                    "compatibility_date": sel.get("compatibility_date")},
        "node": ".".join(map(str, nv)) if nv else None,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def short_machine_line(m: dict) -> str:
    """One ``machine: ...`` line of a side-by-side report from :func:`describe_machine`'s
    dict: CPU, usable cores, OS, host Python, commit."""
    return (f"machine: {m.get('cpu')} ({m.get('cores_usable') or m.get('cores')} cores), "
            f"{m.get('os')}, Python {m.get('python')}, commit {m.get('commit')}")


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def smaps(pid: int | str = "self") -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` of ``pid`` (default: this process) as ``{field: bytes}``
    (``Rss``, ``Pss``, ``Private_Dirty``, ...); ``{}`` where it cannot be read (the process is
    gone, not Linux)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except OSError:
        pass
    return out


def workload_selection(app_dir: Path) -> dict | None:
    """The runtime selection of a workload's ``pyworkers.toml`` as JSON, for the machine
    description (``None`` if it cannot be read: it is informative only)."""
    from pyworkers.config import load_worker_config

    try:
        return load_worker_config(app_dir).runtime_selection().to_json()
    except Exception:  # noqa: BLE001
        return None
