"""The cold-start result of ``pyworkers bench`` (issue 8) as text: the report
(:func:`format_table`), its cold-start table (also as Markdown for the README), the targets and
peers lines, and ``pyworkers bench compare A.json B.json`` (:func:`compare`,
:func:`format_compare`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pyworkers.benchmarks.common import BenchError
from pyworkers.benchmarks.phases import breakdown_lines
from pyworkers.benchmarks.results import (KIND, LABELS, MODE_KEYS, PYODIDE_SNAPSHOT_NOTE,
                                          targets)


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _ratio(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}x" if v < 10 else f"{v:.0f}x"


def _x(v: float) -> str:
    return f"{v:.1f}x" if v < 100 else f"{v:.0f}x"


def _mib(v: int | float | None) -> str:
    return "-" if v is None else f"{v / (1 << 20):.1f} MiB"


def machine_line(m: dict) -> str:
    """One line naming the machine of a result (its ``"machine"`` entry)."""
    rt = m.get("runtime") or {}
    return (f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('os')} {m.get('arch')}, "
            f"host Python {m.get('python')}, wasmtime {m.get('wasmtime')}, runtime "
            f"{rt.get('release')} (Pyodide {rt.get('pyodide')}, Python {rt.get('python')}), "
            f"node {m.get('node') or 'absent'}, pyworkers {m.get('pyworkers')}"
            + (f" @ {m['commit']}" if m.get("commit") else "") + f", {m.get('date')}")


def cold_table(result: dict, markdown: bool = False) -> list[str]:
    """The cold-start table: one row per mode."""
    head = ["mode", "n", "mean", "p50", "p99", "min", "max", "p50 / mode 2", "mean / mode 2"]
    rows = []
    for m in MODE_KEYS:
        e = result["modes"].get(m) or {}
        label = LABELS[m] + (" *" if m == "pyodide_node" and e.get("note", "").startswith(
            "Pyodide's") else "")
        if e.get("skipped"):
            rows.append([label, "-", "skipped", "", "", "", "", "", ""])
            continue
        s = e["summary"]
        r = (result.get("ratios_to_mode2") or {}).get(m) or {}
        rows.append([label, str(s["n"]), _ms(s["mean"]), _ms(s["p50"]), _ms(s["p99"]),
                     _ms(s["min"]), _ms(s["max"]), _ratio(r.get("p50")), _ratio(r.get("mean"))])
    if markdown:
        out = ["| " + " | ".join(head[:1] + [h + (" (ms)" if h in ("mean", "p50", "p99", "min",
                                                                      "max") else "")
                                             for h in head[1:]]) + " |",
               "|" + "---|" + "---:|" * (len(head) - 1)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return out
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])  # noqa: E731
                              for i, c in enumerate(r))
    return [fmt(head), fmt(["-" * x for x in widths])] + [fmt(r) for r in rows]


def target_lines(result: dict) -> list[str]:
    """Issue 13's targets, met or not (none when the run measured none of them)."""
    t = result.get("targets") or targets(result)
    if not t:
        return []
    lines = ["targets (issue 13), from this run:"]
    for e in t.values():
        lines.append(f"  {e['what']:62} {e['value']:>8.2f}  target {e['op']} {e['bound']:g}: "
                     + ("met" if e["met"] else "NOT met"))
    lines.append("")
    return lines


def format_table(result: dict) -> str:
    """The human-readable report."""
    w, mach = result["workload"], result["machine"]
    lines = [f"pyworkers bench: cold start of workload {w['name']!r} ({w['app']}: {w['about']}), "
             f"GET {w['path']}, {result['method']['runs']} counted runs per mode after "
             f"{result['method']['warmup']} warm-up rounds, interleaved",
             f"machine: {machine_line(mach)}",
             "time from the request being issued to the whole first response, in ms "
             "(p99 by nearest rank: the max when n < 100):", ""]
    lines += cold_table(result)
    lines.append("")
    modes = result["modes"]
    p5 = modes.get("pyodide_node") or {}
    if p5.get("skipped"):
        lines.append(f"mode 5 skipped: {p5['skipped']}")
    elif p5.get("note", "").startswith("Pyodide's"):
        lines.append(f"* mode 5 runs benchmarks/workloads/{p5['workload']} (GET {p5['path']}): "
                     f"{PYODIDE_SNAPSHOT_NOTE}.")
    for m in ("no_snapshot", "snapshot_restore", "prewarmed", "native_uvicorn"):
        e = modes.get(m) or {}
        if e.get("skipped") and m != "pyodide_node":
            lines.append(f"mode {LABELS[m]} skipped: {e['skipped']}")
    ph = {m: (modes.get(m) or {}).get("phases_p50_ms") or {} for m in MODE_KEYS}
    parts = []
    for m, key, what in (("no_snapshot", "isolate_ready_ms", "boot+import+lifespan"),
                         ("snapshot_restore", "isolate_ready_ms", "restore+lifespan"),
                         ("prewarmed", "prewarm_ms", "pre-warm, not timed"),
                         ("native_uvicorn", "ready_ms", "process to ready"),
                         ("pyodide_node", "boot_ms", "node: load Pyodide + restore")):
        if key in ph[m]:
            parts.append(f"mode {LABELS[m][0]}: {what} {_ms(ph[m][key])}")
    if parts:
        lines.append("phases (p50, ms): " + "; ".join(parts))
    lines.append("modes 1-3: pyworkers serve's ASGI front in this process (fresh pool per run, "
                 "max 1 isolate, httpx ASGITransport); modes 4-5: new process per run, spawn to "
                 "response over loopback / stdout.")
    lines.append("")

    warm = result.get("warm") or {}
    if warm.get("skipped"):
        lines.append(f"warm requests: skipped: {warm['skipped']}")
    elif warm:
        lines.append(f"warm requests over HTTP on 127.0.0.1, GET {warm['path']} ({warm['client']}; "
                     f"{warm['requests']} sequential on 1 connection, then {warm['requests']} "
                     f"on {warm['concurrency']} connections):")
        lines.append(f"  {'server':48} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
                     f"{'req/s @' + str(warm['concurrency']):>9} {'RSS':>10}")
        for key in ("pyworkers", "native"):
            s = warm.get(key)
            if s:
                lines.append(f"  {s['server']:48} {s['sequential']['rps']:>8.0f} "
                             f"{s['sequential']['p50']:>8.2f} {s['sequential']['p99']:>8.2f} "
                             f"{s['concurrent']['rps']:>9.0f} {_mib(s.get('rss_bytes')):>10}")
        if warm.get("ratio"):
            r = warm["ratio"]
            seq = r.get("rps_sequential_pyworkers_over_native")
            lines.append("  pyworkers / native: req/s "
                         + (f"x{seq:.2f} sequential, " if seq is not None else "")
                         + f"x{r['rps_pyworkers_over_native']:.2f} @{warm['concurrency']}, "
                         f"p50 x{r['p50_pyworkers_over_native']:.2f}, "
                         f"p99 x{r['p99_pyworkers_over_native']:.2f}")
    wi = result.get("warm_inprocess") or {}
    if wi.get("p50") is not None:
        lines.append(f"warm requests in process (modes 1-3's path: ASGI front + "
                     f"httpx.ASGITransport, one warm isolate, {wi['n']} sequential): "
                     f"p50 {wi['p50']:.2f} ms, p99 {wi['p99']:.2f} ms")
    lines.append("")
    lines += breakdown_lines(result)
    mem = result.get("memory") or {}
    if mem.get("skipped"):
        lines.append(f"memory per isolate: skipped: {mem['skipped']}")
    elif mem:
        lines.append("memory per added restored isolate (after lifespan startup and its first "
                     "request; growth of the "
                     "process divided by the number of isolates):")
        lines.append(f"  {'isolates':>8} {'RSS':>10} {'PSS':>10} {'private dirty':>14}")
        for k, v in mem["counts"].items():
            lines.append(f"  {k:>8} {_mib(v['rss_per_isolate_bytes']):>10} "
                         f"{_mib(v.get('pss_per_isolate_bytes')):>10} "
                         f"{_mib(v.get('private_dirty_per_isolate_bytes')):>14}")
        native_rss = (modes.get("native_uvicorn") or {}).get("process_rss_bytes_p50")
        lines.append("  (RSS counts the snapshot image's shared copy-on-write pages once per "
                     "isolate; PSS counts them once)"
                     + (f"; one native uvicorn process of this app: {_mib(native_rss)} RSS"
                        if native_rss else ""))
    snap = result.get("snapshot")
    if snap:
        lines.append(f"snapshot: {_mib(snap['memory_raw_bytes'])} memory raw, "
                     f"{_mib(snap['memory_compressed_bytes'])} compressed ({snap['compression']}), "
                     f"file {_mib(snap['file_bytes'])}; restorer opened in "
                     f"{_ms(result.get('restorer_open_ms'))} ms (compiling the image module "
                     "the first time: once per machine, in the background under serve)")
    t = result["deploy"].get("timings_ms") or {}
    if t:
        stages = ", ".join(f"{k} {_ms(v)}" for k, v in t.items() if k != "total")
        lines.append(f"deploy: {(t.get('total') or 0) / 1000:.1f} s ({stages} ms)")
    lines.append("")
    lines += target_lines(result)
    lines += peer_lines(result)
    if result.get("wall_s") is not None:
        lines.append(f"wall time of this benchmark: {result['wall_s']:.0f} s")
    return "\n".join(lines)


def peer_lines(result: dict) -> list[str]:
    """Mode 2 against the peers and the published numbers (none without a mode 2)."""
    p = result.get("peers") or {}
    out = []
    base = (result["modes"].get("snapshot_restore") or {}).get("summary")
    if not base:
        return out
    out.append(f"pyworkers cold start (mode 2, p50 {_ms(base['p50'])} ms, mean "
               f"{_ms(base['mean'])} ms) against the peers:")
    names = {"native_uvicorn": "native CPython + uvicorn, new process (measured here)",
             "pyodide_node": "Pyodide in Node with its own snapshot (measured here, "
                             f"{(result['modes'].get('pyodide_node') or {}).get('workload')})",
             "no_snapshot": "pyworkers without a snapshot (measured here)"}
    for m in ("native_uvicorn", "pyodide_node", "no_snapshot"):
        if m in p:
            out.append(f"  {_x(p[m]['speedup_p50'])} faster (p50; mean {_x(p[m]['speedup_mean'])}) "
                       f"than {names[m]}")
    for name, v in (p.get("published_not_measured_here") or {}).items():
        out.append(f"  {_x(v['speedup_mean'])} lower mean than the published mean of {name}, "
                   f"{v['mean_ms']:,.0f} ms (NOT measured here: their hardware, their method)")
    if p.get("published_not_measured_here"):
        out.append(f"  (published: {result['published']['source']})")
    return out


# --------------------------------------------------------------------------- compare

def load_result(path: str | os.PathLike) -> dict:
    """A ``pyworkers bench --json`` result file; raises :class:`BenchError` naming the file
    when it cannot be read or is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"{path}: cannot read a result file: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise BenchError(f"{path}: not a `pyworkers bench --json` result")
    return data


def compare(a: dict, b: dict, names: tuple[str, str] = ("A", "B")) -> dict:
    """Per-mode p50 (and mean) of ``a`` and ``b`` side by side, ``b / a``."""
    rows = []
    for m in MODE_KEYS:
        sa = ((a.get("modes") or {}).get(m) or {}).get("summary")
        sb = ((b.get("modes") or {}).get(m) or {}).get("summary")
        rows.append({"mode": m, "label": LABELS[m],
                     "a_p50": sa and sa["p50"], "b_p50": sb and sb["p50"],
                     "a_mean": sa and sa["mean"], "b_mean": sb and sb["mean"],
                     "b_over_a_p50": round(sb["p50"] / sa["p50"], 3) if sa and sb else None})
    extra = []

    def get(d, *keys):
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    for label, keys in (("warm req/s pyworkers (sequential)", ("warm", "pyworkers", "sequential", "rps")),
                        ("warm req/s native (sequential)", ("warm", "native", "sequential", "rps")),
                        ("warm p50 ms pyworkers", ("warm", "pyworkers", "sequential", "p50")),
                        ("warm p50 ms native", ("warm", "native", "sequential", "p50")),
                        ("memory/isolate MiB at 32 (RSS)", ("memory", "counts", "32", "rss_per_isolate_bytes")),
                        ("memory/isolate MiB at 32 (PSS)", ("memory", "counts", "32", "pss_per_isolate_bytes")),
                        ("snapshot file MiB", ("snapshot", "file_bytes")),
                        ("deploy total s", ("deploy", "timings_ms", "total"))):
        va, vb = get(a, *keys), get(b, *keys)
        scale = (1 << 20) if "MiB" in label else 1000 if label.endswith(" s") else 1
        va = va / scale if isinstance(va, (int, float)) else None
        vb = vb / scale if isinstance(vb, (int, float)) else None
        extra.append({"what": label, "a": va, "b": vb,
                      "b_over_a": round(vb / va, 3) if va and vb else None})
    same = {k: a["machine"].get(k) == b["machine"].get(k)
            for k in ("cpu", "cores", "python", "wasmtime", "runtime")}
    return {"names": list(names), "machines": [a["machine"], b["machine"]],
            "workloads": [a["workload"]["name"], b["workload"]["name"]],
            "same": same, "modes": rows, "extra": extra}


def format_compare(c: dict) -> str:
    """:func:`compare`'s result as text."""
    na, nb = c["names"]
    lines = [f"A = {na}: {c['workloads'][0]}, {machine_line(c['machines'][0])}",
             f"B = {nb}: {c['workloads'][1]}, {machine_line(c['machines'][1])}"]
    diff = [k for k, v in c["same"].items() if not v]
    if c["workloads"][0] != c["workloads"][1]:
        diff.append("workload")
    lines.append("differences: " + (", ".join(diff) if diff else "none in cpu, cores, python, "
                                                                  "wasmtime, runtime, workload"))
    lines.append("")
    w = max(len(LABELS[m]) for m in MODE_KEYS)
    lines.append(f"{'cold start, p50 ms':{w}}  {'A':>9}  {'B':>9}  {'B / A':>7}")
    for r in c["modes"]:
        lines.append(f"{r['label']:{w}}  {_ms(r['a_p50']):>9}  {_ms(r['b_p50']):>9}  "
                     f"{(format(r['b_over_a_p50'], '.2f') + 'x') if r['b_over_a_p50'] else '-':>7}")
    lines.append("")
    for e in c["extra"]:
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"{e['what']:{w}}  {f(e['a']):>9}  {f(e['b']):>9}  "
                     f"{(format(e['b_over_a'], '.2f') + 'x') if e['b_over_a'] else '-':>7}")
    return "\n".join(lines)


def readme_section(result: dict, command: str) -> str:
    """A Markdown "Performance" block for the README from a result."""
    lines = [f"`{command}` on {machine_line(result['machine'])}:", ""]
    lines += cold_table(result, markdown=True)
    return "\n".join(lines)
