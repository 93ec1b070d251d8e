"""The cold-start result of ``pyworkers bench`` (issue 8): its format, the five modes, the
published anchors, and the numbers derived from the measured ones (ratios to mode 2, the peers'
speed-ups, issue 13's targets).

Shared by the run (:mod:`pyworkers.benchmarks.coldstart`), the text report
(:mod:`pyworkers.benchmarks.report`) and the plot (:mod:`pyworkers.benchmarks.plot`); imports
none of them.
"""
from __future__ import annotations

from typing import Any

FORMAT = 1
KIND = "pyworkers-bench-coldstart"

#: (key, number, label) in table order.
MODES = (
    ("no_snapshot", 1, "pyworkers, no snapshot"),
    ("snapshot_restore", 2, "pyworkers, snapshot restore"),
    ("prewarmed", 3, "pyworkers, pre-warmed pool"),
    ("native_uvicorn", 4, "peer: native CPython + uvicorn"),
    ("pyodide_node", 5, "peer: Pyodide in Node, own snapshot"),
)
MODE_KEYS = tuple(m[0] for m in MODES)
LABELS = {k: f"{n} {label}" for k, n, label in MODES}

#: Published cold starts for the reference workload (not measured here): ANCHORS.md, from
#: Cloudflare's changelog of 2025-12-08 and the live page it links.
PUBLISHED = {
    "source": "Cloudflare changelog 2025-12-08 (Python Workers cold starts, a worker importing "
              "fastapi, httpx, pydantic) and the live page it links; not measured here",
    "mean_ms": {"Cloudflare Python Workers": 1027.0, "AWS Lambda": 2502.0,
                "Google Cloud Run": 3069.0},
}
PYODIDE_SNAPSHOT_NOTE = ("Pyodide's snapshot API copies linear memory only and does not reload C "
                         "extensions (.so side modules) on restore, so peer 5 runs a pure-Python "
                         "stand-in workload")


def ratios(result: dict) -> dict:
    """``{mode: {"p50": x, "mean": y}}`` = mode / mode 2 (``None`` where a side is missing)."""
    base = (result["modes"].get("snapshot_restore") or {}).get("summary")
    out = {}
    for m, e in result["modes"].items():
        s = e.get("summary")
        if not s or not base or not s.get("n"):
            out[m] = None
            continue
        out[m] = {"p50": round(s["p50"] / base["p50"], 4), "mean": round(s["mean"] / base["mean"], 4)}
    return out


def peer_ratios(result: dict) -> dict:
    """How many times faster mode 2 (the cold start users see) is than each peer (p50 and
    mean), the warm comparison against native uvicorn, and against published numbers (mean)."""
    modes = result["modes"]
    base = (modes.get("snapshot_restore") or {}).get("summary")
    out: dict[str, Any] = {}
    if base:
        for m in ("native_uvicorn", "pyodide_node", "no_snapshot"):
            s = (modes.get(m) or {}).get("summary")
            if s:
                out[m] = {"speedup_p50": round(s["p50"] / base["p50"], 1),
                          "speedup_mean": round(s["mean"] / base["mean"], 1)}
        if result.get("published"):
            out["published_not_measured_here"] = {
                name: {"mean_ms": v, "speedup_mean": round(v / base["mean"], 1)}
                for name, v in result["published"]["mean_ms"].items()}
    warm = result.get("warm") or {}
    if warm.get("ratio"):
        out["warm_vs_native_uvicorn"] = warm["ratio"]
    return out


#: issue 13's targets: (key, what, how to compute from the result, bound, "<=" or ">=")
TARGETS = (
    ("cold_over_warm", "cold start (mode 2) p50 / warm request p50", "<=", 3.0),
    ("prewarmed_over_warm", "pre-warmed pool (mode 3) p50 / warm request p50", "<=", 1.5),
    ("cold_over_warm_inprocess", "  same, like for like: / warm p50 in process (modes 1-3's "
     "path)", "<=", 3.0),
    ("prewarmed_over_warm_inprocess", "  pre-warmed / warm p50 in process", "<=", 1.5),
    ("rps_over_native", "warm sequential req/s / native uvicorn's", ">=", 0.4),
    ("p99_over_native", "warm p99 / native uvicorn's p99", "<=", 3.0),
    ("private_dirty_mib", "private dirty memory per restored isolate (MiB, at 8)", "<=", 1.0),
    ("pss_at_32_mib", "PSS per isolate at 32 isolates (MiB)", "<=", 2.0),
)


def targets(result: dict) -> dict:
    """Issue 13's ratios from one run: ``{key: {"value", "bound", "op", "met"}}`` for those
    the run measured."""
    modes, warm = result.get("modes") or {}, result.get("warm") or {}
    mem = (result.get("memory") or {}).get("counts") or {}
    wp = ((warm.get("pyworkers") or {}).get("sequential") or {}).get("p50")
    vals: dict[str, float] = {}
    cold = ((modes.get("snapshot_restore") or {}).get("summary") or {}).get("p50")
    pre = ((modes.get("prewarmed") or {}).get("summary") or {}).get("p50")
    if wp and cold:
        vals["cold_over_warm"] = cold / wp
    if wp and pre:
        vals["prewarmed_over_warm"] = pre / wp
    wi = (result.get("warm_inprocess") or {}).get("p50")
    if wi and cold:
        vals["cold_over_warm_inprocess"] = cold / wi
    if wi and pre:
        vals["prewarmed_over_warm_inprocess"] = pre / wi
    r = warm.get("ratio") or {}
    if r:
        # the target is on sequential req/s (older results: concurrent)
        vals["rps_over_native"] = r.get("rps_sequential_pyworkers_over_native",
                                        r["rps_pyworkers_over_native"])
        vals["p99_over_native"] = r["p99_pyworkers_over_native"]
    # at 8 isolates: the 1-isolate growth is within the process's own noise (it can be < 0)
    if "8" in mem and mem["8"].get("private_dirty_per_isolate_bytes") is not None:
        vals["private_dirty_mib"] = mem["8"]["private_dirty_per_isolate_bytes"] / 2**20
    if "32" in mem and mem["32"].get("pss_per_isolate_bytes") is not None:
        vals["pss_at_32_mib"] = mem["32"]["pss_per_isolate_bytes"] / 2**20
    out = {}
    for key, what, op, bound in TARGETS:
        if key in vals:
            v = vals[key]
            out[key] = {"what": what, "value": round(v, 3), "op": op, "bound": bound,
                        "met": v <= bound if op == "<=" else v >= bound}
    return out
