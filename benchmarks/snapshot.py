"""Snapshot restore: speed, memory and leaks, beside booting the same app without a snapshot.

Workload: a deployment of an app directory (default ``examples/fastapi-full``: fastapi,
pydantic, httpx), made with :func:`pyworkers.deploy.deploy` into a private store.

Measured side by side in one run (medians; shared machine, so ratios matter more than values):

- ``restore``: a request for a new isolate with nothing prepared: :meth:`Restorer.new_isolate`
  (CoW instantiate, side modules at recorded bases, table, host state, ``random`` reseeded);
- ``first_call``: the first guest call on a restored isolate;
- ``boot_and_import``: the same app without a snapshot (fresh isolate + import of ``main``);
- ``private_per_isolate``: growth of the process's private dirty memory per idle restored
  isolate (``/proc/self/smaps_rollup``), with ``k`` isolates alive;
- ``leak``: process RSS before and after restoring and dropping 100 isolates in a loop;
- sizes (raw image, file), the snapshot stage time at deploy, and the one-off per-machine build
  of the image module (a full compile).

Run: ``pyworkers bench snapshot [--app DIR] [--runs N] [--json]``.
"""
from __future__ import annotations

import gc
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from pyworkers.benchmarks.common import smaps  # the one /proc/<pid>/smaps_rollup reader


def _private() -> int:
    s = smaps()
    return s.get("Private_Dirty", 0) + s.get("Private_Clean", 0)


def _summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"n": len(xs), "median_ms": round(statistics.median(xs), 3), "min_ms": round(xs[0], 3),
            "p90_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.9))], 3), "max_ms": round(xs[-1], 3)}


def deploy_app(app: str | os.PathLike, store: str | os.PathLike):
    """Deploy ``app`` into ``store`` (quietly); returns the deployment."""
    from pyworkers.deploy import deploy

    return deploy(app, store=store, progress=lambda msg: None)


def run(app: str | os.PathLike = "examples/fastapi-full", runs: int = 30, k: int = 20,
        boot_runs: int = 3, store: str | os.PathLike | None = None) -> dict:
    """Measure; returns a dict of summaries (ms) and sizes (bytes)."""
    from pyworkers.runtime import Isolate
    from pyworkers.runtime.engine import config_fingerprint
    from pyworkers.runtime.install import cache_root, compiled_path
    from pyworkers.snapshot import Restorer
    from pyworkers.store import Store

    tmp = None
    if store is None:
        tmp = tempfile.TemporaryDirectory(prefix="pyworkers-bench-")
        store = tmp.name
    dep = deploy_app(app, store)
    rec = dep.record
    root = Path(Store(store).root)
    snap_path = root / rec["snapshot"]["path"]
    layer = root / rec["layer"]["path"] if rec.get("layer") else None
    app_copy = root / rec["app"]["path"]
    mounts = {"/app": str(app_copy)}
    kwargs = dict(site_packages=layer, mounts=mounts)

    # one-off per machine: build + compile the image module (drop the cached one first)
    from pyworkers.snapshot import read_snapshot

    digest = read_snapshot(snap_path).digest
    key = hashlib.sha256(f"{digest}:{config_fingerprint()}".encode()).hexdigest()
    cw = compiled_path(cache_root(), key, "snapshot")
    for p in (cw, cw.with_suffix(".json")):
        p.unlink(missing_ok=True)
    from pyworkers.runtime import engine as _engine

    _engine._loaded.pop(str(cw), None)
    t0 = time.perf_counter()
    restorer = Restorer(snap_path, **kwargs)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    Restorer(snap_path, **kwargs)
    reopen_ms = (time.perf_counter() - t0) * 1000

    for _ in range(5):
        restorer.new_isolate()
    restore_ms, first_ms = [], []
    module, attr = rec["config"]["main"].split(":")
    for _ in range(runs):
        t0 = time.perf_counter()
        iso = restorer.new_isolate()
        restore_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        iso.eval(f"type(__import__({module!r}).{attr}).__name__")
        first_ms.append((time.perf_counter() - t0) * 1000)
        iso.close()

    boot_ms = []
    for _ in range(boot_runs):
        t0 = time.perf_counter()
        iso = Isolate(restorer.runtime, site_packages=layer, mounts=mounts, cwd="/app")
        iso.run(f"import sys; sys.path.insert(0, '/app')\nimport {module}\n{module}.{attr}")
        boot_ms.append((time.perf_counter() - t0) * 1000)
        iso.close()

    gc.collect()
    before = _private()
    alive = [restorer.new_isolate() for _ in range(k)]
    gc.collect()
    per_isolate = (_private() - before) / k
    del alive
    gc.collect()

    def rss() -> int:
        return smaps().get("Rss", 0)

    for _ in range(20):
        restorer.new_isolate().close()
    gc.collect()
    rss0 = rss()
    for _ in range(100):
        restorer.new_isolate().close()
    gc.collect()
    rss1 = rss()
    meta = rec["snapshot"]["metadata"]
    result = {
        "app": str(app),
        "release": meta.get("release"),
        "snapshot": {"memory_raw_bytes": meta.get("memory_size"), "file_bytes": rec["snapshot"]["bytes"],
                     "take_ms": rec["timings_ms"].get("snapshot"),
                     "side_modules": [os.path.basename(m["path"]) for m in meta.get("side_modules", [])]},
        "image_module": {"build_and_compile_s": round(build_s, 2), "reopen_ms": round(reopen_ms, 1)},
        "restore": _summary(restore_ms),
        "first_call": _summary(first_ms),
        "boot_and_import": _summary(boot_ms),
        "ratio_boot_over_restore": round(statistics.median(boot_ms) / statistics.median(restore_ms), 1),
        "private_per_isolate_bytes": int(per_isolate),
        "leak": {"rss_before_bytes": rss0, "rss_after_100_bytes": rss1, "delta_bytes": rss1 - rss0},
        "targets": {"restore_median_ms": 2.0, "private_per_isolate_bytes": 2 << 20},
    }
    if tmp is not None:
        tmp.cleanup()
    return result


def format_table(r: dict) -> str:
    mib = 1 << 20
    s = r["snapshot"]
    lines = [
        f"snapshot restore, {r['app']} on Pyodide {r['release']} (side modules: {', '.join(s['side_modules']) or 'none'})",
        f"  snapshot: {s['memory_raw_bytes'] / mib:.1f} MiB memory, {s['file_bytes'] / mib:.1f} MiB file (zstd), "
        f"taken in {s['take_ms']:.0f} ms at deploy",
        f"  image module: built and compiled once per machine in {r['image_module']['build_and_compile_s']:.1f} s; "
        f"reopened in {r['image_module']['reopen_ms']:.1f} ms",
        f"{'measurement':36} {'n':>3} {'median':>10} {'p90':>10} {'min':>10}",
    ]
    for name, key in (("restore to a ready isolate", "restore"), ("first call after restore", "first_call"),
                      ("boot + import without snapshot", "boot_and_import")):
        x = r[key]
        lines.append(f"{name:36} {x['n']:>3} {x['median_ms']:>8.2f}ms {x['p90_ms']:>8.2f}ms {x['min_ms']:>8.2f}ms")
    lines.append(f"  boot+import / restore: {r['ratio_boot_over_restore']}x")
    lines.append(f"  private memory per idle restored isolate: {r['private_per_isolate_bytes'] / mib:.2f} MiB")
    leak = r["leak"]
    lines.append(f"  RSS across 100 restore+drop: {leak['rss_before_bytes'] / mib:.1f} -> "
                 f"{leak['rss_after_100_bytes'] / mib:.1f} MiB ({leak['delta_bytes'] / mib:+.2f} MiB)")
    return "\n".join(lines)
