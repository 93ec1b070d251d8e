"""``pyworkers bench --plot FILE.png``: the cold-start distributions of a result, one row per
mode on a log time axis (every sample as a dot, a box for p25-p75, a bar at the median).

matplotlib is optional (``pip install 'pyworkers[plot]'``) and imported only here.
"""
from __future__ import annotations

import os
import random


def _require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'pyworkers[plot]' "
                           "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_result(result: dict, path: str | os.PathLike) -> None:
    """Draw ``result``'s cold-start samples (``pyworkers bench --json``) into ``path``."""
    from pyworkers.benchmarks.report import machine_line
    from pyworkers.benchmarks.results import LABELS, MODE_KEYS

    plt = _require_matplotlib()
    rows = [(m, result["modes"][m]) for m in MODE_KEYS if m in result["modes"]]
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.8 * len(rows)), dpi=120)
    rng = random.Random(0)
    colors = {"no_snapshot": "#9e9e9e", "snapshot_restore": "#1565c0", "prewarmed": "#42a5f5",
              "native_uvicorn": "#ef6c00", "pyodide_node": "#2e7d32"}
    ticks, labels = [], []
    lo, hi = float("inf"), 0.0
    for i, (m, e) in enumerate(reversed(rows)):
        y = i
        ticks.append(y)
        label = LABELS[m]
        if m == "pyodide_node" and e.get("workload") and e.get("note", "").startswith("Pyodide"):
            label += f"\n({e['workload']}, pure Python)"
        labels.append(label)
        xs = e.get("samples_ms") or []
        if not xs:
            ax.text(1, y, f"skipped: {str(e.get('skipped', ''))[:70]}", va="center", fontsize=8,
                    color="#757575", transform=ax.get_yaxis_transform())
            continue
        lo, hi = min(lo, min(xs)), max(hi, max(xs))
        c = colors.get(m, "#455a64")
        s = sorted(xs)
        q1, q3 = s[len(s) // 4], s[(3 * len(s)) // 4]
        med = e["summary"]["p50"]
        ax.add_patch(plt.Rectangle((q1, y - 0.25), max(q3 - q1, 1e-9), 0.5, facecolor=c,
                                   alpha=0.18, edgecolor=c))
        ax.plot([med, med], [y - 0.3, y + 0.3], color=c, linewidth=2.5)
        ax.scatter(xs, [y + rng.uniform(-0.15, 0.15) for _ in xs], s=14, color=c, alpha=0.75,
                   zorder=3, linewidths=0)
        ax.annotate(f"p50 {med:,.1f} ms" if med < 100 else f"p50 {med:,.0f} ms",
                    (max(xs), y), xytext=(8, 0), textcoords="offset points", va="center",
                    fontsize=8, color="#212121")
    pub = (result.get("published") or {}).get("mean_ms") or {}
    if "Cloudflare Python Workers" in pub:
        v = pub["Cloudflare Python Workers"]
        ax.axvline(v, color="#f57c00", linestyle="--", linewidth=1, alpha=0.8)
        ax.text(v, len(rows) - 0.45, f" Cloudflare published mean {v:,.0f} ms\n (not measured here)",
                fontsize=7, color="#e65100", va="top")
        lo, hi = min(lo, v), max(hi, v)
    if hi > 0:
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.6, hi * 4)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("request issued -> whole first response (ms, log scale)")
    ax.grid(axis="x", which="both", alpha=0.25)
    w = result["workload"]
    n = result["method"]["runs"]
    ax.set_title(f"pyworkers bench: cold start, workload {w['name']} (GET {w['path']}), "
                 f"n={n} per mode", fontsize=10)
    fig.text(0.01, 0.01, machine_line(result["machine"]), fontsize=6, color="#616161")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
