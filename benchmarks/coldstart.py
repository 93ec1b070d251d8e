"""Cold start side by side: ``pyworkers bench`` (issue 8).

One run deploys the workload once (:func:`pyworkers.deploy.deploy`, into a temporary store or
``store``), prepares every mode outside the timed window, then runs ``warmup`` uncounted and
``runs`` counted *rounds*. A round runs every mode once; the order is rotated by one mode per
round (round r starts at mode ``r mod 5``) so drift and position effects hit all modes alike.
Every sample is the wall time from "the request is issued" to "the whole first response is
in", in milliseconds, measured in this process with ``time.perf_counter``:

1. ``no_snapshot``: pyworkers without a snapshot. A fresh :class:`ServerApp` (the ASGI front of
   ``pyworkers serve``, in process, ``min_idle=0``, ``max_isolates=1``) whose factory is an
   :class:`~pyworkers.serve.AppFactory` built from the deployment's ``isolate_kwargs()``;
   the request (``httpx.ASGITransport``) finds no isolate, so the pool boots one (new isolate,
   import of the app's top level, guest ASGI adapter ``load``), runs lifespan startup and then
   the request.
2. ``snapshot_restore``: the same, with the factory ``pyworkers serve`` uses for a deployment
   (:func:`pyworkers.serve.targets.deployment_target`: restore from the dedicated snapshot).
   The :class:`~pyworkers.snapshot.Restorer` is opened once before timing (its image module is
   compiled once per machine and snapshot, at deploy: reported separately). This is the cold
   start users see: a request arrives and no isolate is idle.
3. ``prewarmed``: a fresh ``ServerApp`` with ``min_idle=1``, ``max_isolates=1``: its startup
   restores one isolate and runs lifespan startup (not timed); then the first request.
4. ``native_uvicorn`` (peer): ``python -m uvicorn main:app`` of the deployment's own app copy on
   this machine's CPython, started as a new process; spawn -> "Uvicorn running on" -> one
   ``GET`` on a new connection -> whole response. Same pure-Python packages (the deployment's
   layer dir on ``PYTHONPATH``), native builds of its C extensions (the lock's versions, pip
   ``--only-binary`` into a temporary dir, first on ``PYTHONPATH``), bytecode cached in a
   ``PYTHONPYCACHEPREFIX`` (warmed by the warm-up rounds), as a container image would have it.
5. ``pyodide_node`` (peer): Pyodide in Node with Pyodide's own snapshot API
   (:mod:`pyworkers.benchmarks.node_peer`): spawn -> restore -> one ASGI call -> response.
   Pyodide's snapshot cannot restore C extensions (pydantic-core), so the ``reference`` and
   ``hello`` workloads use pure-Python stand-ins (``workloads/starlette_app``,
   ``workloads/hello_asgi``); skipped with a note when node or the Pyodide package is missing.

Plus, outside the rounds: warm requests over real HTTP on 127.0.0.1 (``pyworkers serve`` of the
deployment vs native uvicorn, both as subprocesses, one asyncio raw HTTP/1.1 keep-alive client
for both: sequential latency p50/p99 on one connection, then requests/s with ``concurrency``
connections), memory per isolate (a fresh process restores isolates through the serve factory
and runs their lifespan startup: RSS and private-memory growth per added isolate at 1, 8, 32),
the snapshot's sizes and the deploy's stage timings.

Percentiles are nearest-rank (with fewer than 100 samples p99 is the maximum). Ratios are
``mode / mode 2`` of the p50 and of the mean.

Run: ``pyworkers bench [--workload reference|hello|APP_DIR] [--runs N] [--json] [--plot F]``;
``pyworkers bench compare A.json B.json``.

This module is the run: the workload, modes 1-3 in process (:class:`InProcess`), the memory
measurement and the pipeline (:func:`run`). The peers and the warm-HTTP servers are in
:mod:`pyworkers.benchmarks.peers`, the result's modes, ratios and targets in
:mod:`pyworkers.benchmarks.results`, the text report and ``bench compare`` in
:mod:`pyworkers.benchmarks.report` (:func:`format_table`, :func:`compare`,
:func:`format_compare` and :func:`load_result` are importable from here too), the phase
breakdown in :mod:`pyworkers.benchmarks.phases`, statistics and the machine description in
:mod:`pyworkers.benchmarks.common`.
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from pyworkers.benchmarks.common import ROOT, BenchError, describe_machine, pct, smaps, summary
from pyworkers.benchmarks.peers import NativePeer, NodePeer, warm_http
from pyworkers.benchmarks.phases import flat_phases, traced_http, warm_inprocess
# format_table, compare, load_result, format_compare: also what `pyworkers bench` calls here
from pyworkers.benchmarks.report import compare, format_compare, format_table, load_result
from pyworkers.benchmarks.results import (FORMAT, KIND, LABELS, MODE_KEYS, MODES, PUBLISHED,
                                          PYODIDE_SNAPSHOT_NOTE, peer_ratios, ratios, targets)

#: Built-in workloads: the app deployed, the request, and the pure-Python stand-in for peer 5.
WORKLOADS = {
    "reference": {"app": "examples/fastapi-full", "path": "/items/1",
                  "peer": "starlette_app", "peer_path": "/",
                  "about": "fastapi + pydantic + httpx (the workload Cloudflare publishes)"},
    "hello": {"app": "examples/hello", "path": "/", "peer": "hello_asgi", "peer_path": "/",
              "about": "a one-route FastAPI app"},
}
MEMORY_COUNTS = (1, 8, 32)
MEMORY_LIMIT = 512 << 20  # pyworkers serve's default --memory-limit


# --------------------------------------------------------------------------- workload

def resolve_workload(workload: str, path: str | None = None) -> dict:
    """``reference``, ``hello`` or an app directory -> ``{"name", "app", "path", "peer",
    "peer_path", "peer_substitute", "about"}``."""
    if workload in WORKLOADS:
        w = dict(WORKLOADS[workload], name=workload)
        app = ROOT / w["app"]
        if not app.is_dir():
            raise BenchError(f"workload {workload!r} needs {w['app']} from a pyworkers source "
                             "checkout; pass an app directory instead")
        w["app"] = str(app)
        w["peer_substitute"] = True
    else:
        app = Path(workload)
        if not app.is_dir():
            raise BenchError(f"--workload {workload!r}: not 'reference', 'hello' or an app "
                             "directory")
        w = {"name": app.resolve().name, "app": str(app.resolve()), "path": "/",
             "peer": str(app.resolve()), "peer_path": "/", "peer_substitute": False,
             "about": "app directory"}
    if path:
        w["path"] = path
        if not w["peer_substitute"]:
            w["peer_path"] = path
    return w


# --------------------------------------------------------------------------- modes 1-3

class InProcess:
    """Modes 1-3: the ASGI front of ``pyworkers serve`` in this process, one event loop."""

    def __init__(self, dep, store, path: str, progress: Callable[[str], None]):
        from pyworkers.serve import AppFactory
        from pyworkers.serve.targets import deployment_target

        self.path = path
        self.loop = asyncio.new_event_loop()
        main = dep.record["config"]["main"]
        kw = dep.isolate_kwargs()
        self.boot_factory = AppFactory(release=kw["release"], app_dir=kw["mounts"]["/app"],
                                       main=main, site_packages=kw["site_packages"],
                                       env=kw["env"], memory_limit=MEMORY_LIMIT)
        self.restorer_open_ms = None
        self.restore_factory = None
        if dep.snapshot_path is not None:
            t0 = time.perf_counter()
            _id, self.restore_factory = deployment_target(store, dep.name,
                                                          memory_limit=MEMORY_LIMIT)
            self.restorer_open_ms = round((time.perf_counter() - t0) * 1000, 1)
            progress(f"restorer opened in {self.restorer_open_ms:.0f} ms (image module cached)")

    def close(self) -> None:
        self.loop.close()

    async def _request(self, factory, min_idle: int) -> dict:
        import httpx

        from pyworkers.serve import ServeConfig, ServerApp

        app = ServerApp({"bench": factory}, ServeConfig(
            min_idle=min_idle, max_isolates=1, memory_limit=MEMORY_LIMIT,
            request_timeout=300.0, queue_timeout=300.0, trace_phases=True))
        await app.startup()  # min_idle=1: restores one isolate + lifespan (not timed)
        try:
            pool = app.pools["bench"]
            prewarm_ms = (pool.workers[0].boot_seconds * 1000) if pool.workers else None
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://bench.localhost",
                                         timeout=300) as client:
                t0 = time.perf_counter()
                r = await client.get(self.path)
                ms = (time.perf_counter() - t0) * 1000
            if r.status_code >= 500:
                raise BenchError(f"GET {self.path}: {r.status_code} {r.text[:300]}")
            w = pool.workers[0] if pool.workers else None
            out = {"ms": ms, "status": r.status_code, "body_bytes": len(r.content)}
            if min_idle == 0 and w is not None:
                out["isolate_ready_ms"] = w.boot_seconds * 1000  # factory + lifespan startup
                out["request_ms"] = ms - out["isolate_ready_ms"]
            elif prewarm_ms is not None:
                out["prewarm_ms"] = prewarm_ms
            trace = app.traces[-1] if app.traces else None
            for _ in range(200):  # the guest's readings come with G_DONE, just after the body
                if trace is None or trace.complete():
                    break
                await asyncio.sleep(0.001)
            out.update(flat_phases(w, trace, startup=min_idle == 0))
            return out
        finally:
            await app.shutdown()

    def warm(self, requests: int) -> dict:
        """Sequential warm requests in process (see :func:`benchmarks.phases.warm_inprocess`)."""
        return self.loop.run_until_complete(warm_inprocess(
            self.restore_factory or self.boot_factory, self.path, requests, MEMORY_LIMIT))

    def run(self, mode: str) -> dict:
        if mode == "no_snapshot":
            return self.loop.run_until_complete(self._request(self.boot_factory, 0))
        if self.restore_factory is None:
            raise BenchError("the deployment has no snapshot")
        return self.loop.run_until_complete(
            self._request(self.restore_factory, 0 if mode == "snapshot_restore" else 1))


# --------------------------------------------------------------------------- memory

MEMORY_CHILD = r"""
import json, sys
from pyworkers.benchmarks.coldstart import memory_child
print(json.dumps(memory_child(sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[4:]],
                              path=sys.argv[3])))
"""


def memory_child(store_root: str, name: str, counts: list[int], path: str = "/") -> dict:
    """In a fresh process: restore isolates through ``pyworkers serve``'s factory and worker
    (each on its own thread and event loop) and have each do its lifespan startup and its first
    request (``GET path``), as issue 13's memory target says; RSS / PSS / private memory growth
    per added isolate."""
    return asyncio.run(_memory_child(store_root, name, counts, path))


async def _memory_child(store_root: str, name: str, counts: list[int], path: str) -> dict:
    from pyworkers.serve.oneshot import request, start_worker
    from pyworkers.serve.targets import deployment_target
    from pyworkers.store import Store

    _id, factory = deployment_target(Store(store_root), name, memory_limit=MEMORY_LIMIT)
    for _ in range(3):  # first-use code paths, caches
        w = await start_worker(factory, "warm")
        await request(w, "GET", "/")
        await w.stop(0, 10)
    gc.collect()
    base = smaps()
    workers = []
    out = {"baseline_rss_bytes": base.get("Rss"), "counts": {}}
    for k in sorted(counts):
        while len(workers) < k:
            w = await start_worker(factory, "mem")
            await request(w, "GET", path)
            workers.append(w)
        gc.collect()
        s = smaps()
        grow = lambda key: int((s.get(key, 0) - base.get(key, 0)) / k)  # noqa: E731
        out["counts"][str(k)] = {"rss_per_isolate_bytes": grow("Rss"),
                                 "pss_per_isolate_bytes": grow("Pss"),
                                 "private_dirty_per_isolate_bytes": grow("Private_Dirty"),
                                 "rss_bytes": s.get("Rss")}
    await asyncio.gather(*(w.stop(0, 10) for w in workers))
    return out


def memory_per_isolate(store_root: Path, name: str, work: Path, path: str = "/") -> dict:
    """:func:`memory_child` in a new process (``MEMORY_COUNTS`` isolates)."""
    r = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(store_root), name, path,
                        *map(str, MEMORY_COUNTS)], capture_output=True, text=True, timeout=900,
                       cwd=str(work))
    if r.returncode != 0:
        raise BenchError(f"memory measurement failed: {r.stderr.strip()[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the run

def _stderr(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(workload: str = "reference", runs: int = 20, *, warmup: int = 2,
        store: str | os.PathLike | None = None, path: str | None = None,
        requests: int = 2000, concurrency: int = 4, skip: tuple[str, ...] = (),
        progress: Callable[[str], None] | None = _stderr) -> dict:
    """Deploy ``workload``, run ``warmup`` + ``runs`` interleaved rounds of the five modes and
    the extra measurements; returns the result dict (see ``format_table``). ``skip``: mode keys
    or ``"warm"``/``"memory"`` to leave out (recorded as skipped)."""
    from pyworkers.deploy import DeployError, deploy
    from pyworkers.store import Store

    say = progress or (lambda m: None)
    t_start = time.perf_counter()
    w = resolve_workload(workload, path)
    tmp = tempfile.TemporaryDirectory(prefix="pyworkers-bench-")
    work = Path(tmp.name)
    store_root = Path(store) if store else work / "store"
    try:
        say(f"deploying {w['app']} into {store_root}")
        t0 = time.perf_counter()
        try:
            dep = deploy(w["app"], store=store_root, progress=None)
        except DeployError as e:
            raise BenchError(f"deploy of {w['app']} failed in stage {e.stage}: {e.message}"
                             + (f"\n{e.detail}" if e.detail else "")) from None
        deploy_wall = time.perf_counter() - t0
        rec = dep.record
        st = Store(store_root)
        say(f"deployed {dep.id} in {deploy_wall:.1f} s")

        result: dict[str, Any] = {
            "format": FORMAT, "kind": KIND, "machine": describe_machine(rec["selection"]),
            "workload": {"name": w["name"], "about": w["about"],
                         "app": os.path.relpath(w["app"], ROOT) if w["app"].startswith(str(ROOT))
                         else w["app"], "path": w["path"], "deployment": dep.id,
                         "main": rec["config"]["main"],
                         "peer5_workload": Path(w["peer"]).name, "peer5_path": w["peer_path"],
                         "peer5_substitute": w["peer_substitute"]},
            "method": {"runs": runs, "warmup": warmup,
                       "order": "rounds of all modes, order rotated by one mode per round",
                       "timer": "time.perf_counter in the bench process: request issued -> "
                                "whole first response",
                       "percentiles": "nearest rank",
                       "modes_1_3": "pyworkers serve's ASGI front (ServerApp) in process, fresh "
                                    "pool per sample, max_isolates=1, driven by "
                                    "httpx.ASGITransport",
                       "mode_4": "new `python -m uvicorn` process: spawn -> ready -> GET -> "
                                 "response",
                       "mode_5": "new node process: spawn -> Pyodide snapshot restore -> ASGI "
                                 "GET -> response"},
            "deploy": {"wall_ms": round(deploy_wall * 1000, 1),
                       "timings_ms": rec.get("timings_ms"),
                       "image_module_compile_ms": (rec.get("smoke") or {}).get("prepare_ms"),
                       "smoke": {k: (rec.get("smoke") or {}).get(k)
                                 for k in ("ready_ms", "requests_ms", "status")}},
            "snapshot": None, "modes": {}, "published": PUBLISHED if workload == "reference"
            else None,
        }
        snap = rec.get("snapshot")
        if snap:
            sizes = (snap.get("metadata") or {}).get("sizes") or {}
            result["snapshot"] = {"memory_raw_bytes": sizes.get("memory_raw"),
                                  "memory_compressed_bytes": sizes.get("memory_compressed"),
                                  "file_bytes": snap.get("bytes"), "compression": "zstd",
                                  "side_modules": [os.path.basename(m["path"]) for m in
                                                   snap["metadata"].get("side_modules", [])]}

        runners: dict[str, Callable[[], dict]] = {}
        skipped: dict[str, str] = {}
        inproc = InProcess(dep, st, w["path"], say)
        result["restorer_open_ms"] = inproc.restorer_open_ms
        for m in ("no_snapshot", "snapshot_restore", "prewarmed"):
            if m in skip:
                skipped[m] = "skipped on request (--skip)"
            elif m != "no_snapshot" and inproc.restore_factory is None:
                skipped[m] = "the deployment has no snapshot"
            else:
                runners[m] = (lambda m=m: inproc.run(m))
        native = None
        if "native_uvicorn" in skip and "warm" in skip:
            skipped["native_uvicorn"] = "skipped on request (--skip)"
        else:
            try:
                native = NativePeer(dep, work, w["path"], say)
                if "native_uvicorn" in skip:
                    skipped["native_uvicorn"] = "skipped on request (--skip)"
                else:
                    runners["native_uvicorn"] = native.run_once
            except BenchError as e:
                skipped["native_uvicorn"] = str(e)
        if "pyodide_node" in skip:
            skipped["pyodide_node"] = "skipped on request (--skip)"
        else:
            try:
                node = NodePeer(w, rec["selection"]["pyodide_version"], work, say)
                runners["pyodide_node"] = node.run_once
                result["workload"]["peer5_snapshot"] = node.make
            except BenchError as e:
                skipped["pyodide_node"] = str(e)

        samples: dict[str, list[dict]] = {m: [] for m in runners}
        order = [m for m in MODE_KEYS if m in runners]
        total = warmup + runs
        for rnd in range(total):
            counted = rnd >= warmup
            rot = order[rnd % len(order):] + order[:rnd % len(order)] if order else []
            line = []
            for m in rot:
                if m in skipped:
                    continue
                try:
                    r = runners[m]()
                except BenchError as e:
                    skipped[m] = f"failed in round {rnd + 1}: {e}"
                    samples.pop(m, None)
                    say(f"mode {LABELS[m]} failed, dropped: {e}")
                    continue
                if counted:
                    samples[m].append(r)
                line.append(f"{LABELS[m][0]}: {r['ms']:.1f}")
            say(f"{'warm-up' if not counted else 'round'} "
                f"{rnd + 1 - (warmup if counted else 0)}/{runs if counted else warmup}: "
                + ", ".join(line) + " ms")
        if "warm" not in skip and runners:
            say(f"warm requests in process: {min(requests, 1000)} sequential")
            try:
                result["warm_inprocess"] = inproc.warm(min(requests, 1000))
            except Exception as e:  # noqa: BLE001 - reported, the rest of the run goes on
                result["warm_inprocess"] = {"skipped": f"{type(e).__name__}: {e}"}
        inproc.close()

        for m in MODE_KEYS:
            entry: dict[str, Any] = {"number": dict((k, n) for k, n, _ in MODES)[m],
                                     "label": dict((k, lb) for k, _, lb in MODES)[m]}
            if m in skipped or m not in samples:
                entry["skipped"] = skipped.get(m, "not run")
            else:
                xs = [s["ms"] for s in samples[m]]
                entry["samples_ms"] = [round(x, 3) for x in xs]
                entry["summary"] = summary(xs)
                keys = ["isolate_ready_ms", "request_ms", "ready_ms", "prewarm_ms",
                        "node_total_ms", "boot_ms", "first_response_ms"]
                keys += sorted({k for s in samples[m] for k in s if k.startswith("phase:")})
                entry["phases_p50_ms"] = {
                    k: round(pct([s[k] for s in samples[m]], 50), 3)
                    for k in keys
                    if samples[m] and all(isinstance(s.get(k), (int, float)) for s in samples[m])}
                entry["statuses"] = sorted({s.get("status") for s in samples[m]},
                                           key=lambda v: (v is None, v))
                if m == "native_uvicorn":
                    rss = [s["rss_bytes"] for s in samples[m] if s.get("rss_bytes")]
                    entry["process_rss_bytes_p50"] = int(pct(rss, 50)) if rss else None
            if m == "pyodide_node":
                entry["workload"] = Path(w["peer"]).name
                entry["path"] = w["peer_path"]
                entry["note"] = PYODIDE_SNAPSHOT_NOTE if w["peer_substitute"] else (
                    "same app directory as modes 1-4")
            result["modes"][m] = entry
        result["ratios_to_mode2"] = ratios(result)

        if "warm" in skip:
            result["warm"] = {"skipped": "skipped on request (--skip)"}
        else:
            try:
                result["warm"] = warm_http(store_root, dep.name, native, w["path"], work,
                                           requests, concurrency, MEMORY_LIMIT, say)
                result["warm"]["pyworkers"]["phases"] = traced_http(
                    store_root, dep.name, w["path"], work, min(requests, 1000), MEMORY_LIMIT,
                    say)
            except BenchError as e:
                result["warm"] = {"skipped": str(e)}
        if "memory" in skip or not snap:
            result["memory"] = {"skipped": "skipped on request (--skip)" if snap
                                else "the deployment has no snapshot"}
        else:
            say(f"memory per restored isolate at {', '.join(map(str, MEMORY_COUNTS))} isolates")
            try:
                result["memory"] = memory_per_isolate(store_root, dep.name, work, w["path"])
            except BenchError as e:
                result["memory"] = {"skipped": str(e)}
        result["peers"] = peer_ratios(result)
        result["targets"] = targets(result)
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        return result
    finally:
        tmp.cleanup()


__all__ = ["BenchError", "InProcess", "MEMORY_CHILD", "MEMORY_COUNTS", "MEMORY_LIMIT",
           "WORKLOADS", "compare", "format_compare", "format_table", "load_result", "memory_child",
           "memory_per_isolate", "resolve_workload", "run"]


if __name__ == "__main__":  # pragma: no cover
    print(format_table(run()))
