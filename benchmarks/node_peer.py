"""Peer 5 of the cold-start benchmark: Pyodide in Node with Pyodide's own memory-snapshot API.

The same workload apps as pyworkers (``benchmarks/workloads/<name>/``: ``main.py``,
``pyworkers.toml``, optional ``requirements.txt``), run by ``node benchmarks/node_peer.mjs``
against the release's npm package (the one pyworkers unpacks, Pyodide 314.0.7 by default):

- :func:`prepare`: site-packages from ``requirements.txt`` with :mod:`pyworkers.packages`
  (pure-Python wheels; see below), then ``node_peer.mjs make``: boot Pyodide with
  ``_makeSnapshot``, mount the layer and the app (NODEFS), import the app, write
  ``pyodide.makeMemorySnapshot()`` (+ a ``.json`` sidecar);
- :func:`run_once`: one fresh ``node`` process, ``run`` mode (restore the snapshot, one
  ``GET /`` through the ASGI app) or ``cold`` mode (boot + import + first response, no
  snapshot); returns node's JSON line plus the wall time measured here from spawn to the first
  response (``spawn_to_first_response_ms``, the user-visible cold start) and to exit;
- :func:`run`: ``runs`` of those, summarised (n, median, p50, p99, min, max).

Limits of Pyodide's snapshot API on 314.0.7 (see the header of ``node_peer.mjs``): it copies
linear memory only. Memory above the module's initial 30 MiB must be grown before restore
(``node_peer.mjs`` does it), the JS file system is re-mounted, and C extensions (``.so`` side
modules) loaded before the snapshot are not reloaded: :func:`prepare` refuses a workload whose
import loaded one unless ``allow_so=True``.

Run: ``python benchmarks/node_peer.py [--runs N] [--cold-runs N] [--json] [WORKLOAD ...]``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "node_peer.mjs"
WORKLOADS = HERE / "workloads"
RELEASE = "314.0.7"
PACKAGE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json")
MIN_NODE = 18
DEFAULT_TIMEOUT = 180.0


class NodePeerError(RuntimeError):
    """A node_peer.mjs step failed; ``result`` is its JSON line (if any), ``stderr`` its tail."""

    def __init__(self, msg: str, result: dict | None = None, stderr: str = ""):
        super().__init__(msg)
        self.result = result
        self.stderr = stderr


# --------------------------------------------------------------------------- environment

def node_path() -> str | None:
    return shutil.which("node")


def node_version() -> tuple[int, ...] | None:
    node = node_path()
    if not node:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
        return tuple(int(x) for x in out.strip().lstrip("v").split("."))
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def package_dir(release: str = RELEASE, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where pyworkers unpacks the release's npm package (no network, nothing installed)."""
    from pyworkers.runtime.install import cache_root

    return cache_root(cache_dir) / "releases" / release / "package"


def available(release: str = RELEASE,
              cache_dir: str | os.PathLike | None = None) -> tuple[bool, str]:
    """``(True, description)`` when node and the release's Pyodide package are present, else
    ``(False, reason)``."""
    v = node_version()
    if v is None:
        return False, "node is not installed (not on PATH)"
    if v[0] < MIN_NODE:
        return False, f"node {'.'.join(map(str, v))} is too old (need >= {MIN_NODE})"
    pkg = package_dir(release, cache_dir)
    missing = [n for n in PACKAGE_FILES if not (pkg / n).is_file()]
    if missing:
        return False, (f"the Pyodide {release} package is not installed in {pkg} (missing "
                       f"{', '.join(missing)}): run `pyworkers runtimes install` first")
    return True, f"node {'.'.join(map(str, v))}, Pyodide {release} package in {pkg}"


# --------------------------------------------------------------------------- node

def _node(args: Sequence[str], *, node_args: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT
          ) -> tuple[dict, dict]:
    """Run ``node [node_args] node_peer.mjs args``; return (its JSON line, wall times in ms)."""
    node = node_path()
    if not node:
        raise NodePeerError("node is not installed")
    cmd = [node, *node_args, str(SCRIPT), *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    err_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        line = proc.stdout.readline()  # node prints its one JSON line right after the response
        first = time.perf_counter()
        rest = proc.stdout.read()
        proc.wait()
    finally:
        timer.cancel()
    t_exit = time.perf_counter()
    reader.join(timeout=10)
    stderr = b"".join(err_chunks).decode("utf-8", "replace")
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    try:
        result = json.loads(line)
    except ValueError:
        why = "timed out" if proc.returncode == -9 else f"exit code {proc.returncode}"
        raise NodePeerError(f"node_peer.mjs {args[0]}: no result ({why}); stdout "
                            f"{(line + rest)[:300]!r}", None, tail) from None
    wall = {"spawn_to_first_response_ms": round((first - t0) * 1000, 3),
            "spawn_to_exit_ms": round((t_exit - t0) * 1000, 3)}
    if not result.get("ok"):
        raise NodePeerError(f"node_peer.mjs {args[0]} failed in {result.get('phase')}: "
                            f"{result.get('error')}", result, tail)
    return result, wall


# --------------------------------------------------------------------------- prepare

def workload_dir(workload: str | os.PathLike) -> Path:
    """A workload name under ``benchmarks/workloads`` or a directory."""
    p = Path(workload)
    if not p.is_dir() and (WORKLOADS / str(workload)).is_dir():
        p = WORKLOADS / str(workload)
    if not (p / "main.py").is_file() and not (p / "pyworkers.toml").is_file():
        raise FileNotFoundError(f"{workload}: not a workload directory (no main.py/pyworkers.toml)")
    return p.resolve()


def _entry(app_dir: Path) -> str:
    toml = app_dir / "pyworkers.toml"
    if toml.is_file():
        import tomllib

        return tomllib.loads(toml.read_text()).get("main", "main:app")
    return "main:app"


def build_site(app_dir: Path, work_dir: Path, release: str = RELEASE,
               cache_dir: str | os.PathLike | None = None, progress: Any = None) -> Path | None:
    """``requirements.txt`` -> ``work_dir/site-packages`` (pyworkers.packages); None if none."""
    req = app_dir / "requirements.txt"
    if not req.is_file() or not [ln for ln in req.read_text().splitlines()
                                 if ln.strip() and not ln.lstrip().startswith("#")]:
        return None
    from pyworkers.packages import download, install_layer, resolve
    from pyworkers.runtime.install import ensure_release

    inst = ensure_release(release, cache_dir=cache_dir)
    # package_base_url=None: the lock's versions are preferred, but wheels come from the index
    # (the release's package CDN is not used by this benchmark).
    res = resolve(req, inst.release, pyodide_lock=inst.lock_json, package_base_url=None,
                  lock_path=work_dir / "pylock.toml", cache_dir=cache_dir, progress=progress)
    cached = download(res, cache_dir, progress=progress)
    return install_layer(cached, work_dir / "site-packages", progress=progress).path


def prepare(workload_dir_: str | os.PathLike, work_dir: str | os.PathLike, *,
            release: str = RELEASE, freeze: bool = False, allow_so: bool = False,
            node_args: Sequence[str] = (), cache_dir: str | os.PathLike | None = None,
            progress: Any = None) -> Path:
    """Build the workload's site-packages and its Pyodide snapshot in ``work_dir``; returns the
    snapshot path (``<work_dir>/snapshot.bin``; the make step's JSON is in ``make.json``).

    ``freeze``: ``gc.collect(); gc.freeze()`` before the snapshot. ``allow_so``: keep a
    snapshot whose import loaded C extensions (restoring it is expected to fail)."""
    app = workload_dir(workload_dir_)
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ok, why = available(release, cache_dir)
    if not ok:
        raise NodePeerError(why)
    site = build_site(app, work, release, cache_dir, progress)
    snap = work / "snapshot.bin"
    args = ["make", "--package", str(package_dir(release, cache_dir)), "--app", str(app),
            "--entry", _entry(app), "--out", str(snap)]
    if site is not None:
        args += ["--site", str(site)]
    if freeze:
        args.append("--freeze")
    result, wall = _node(args, node_args=node_args)
    result["wall"] = wall
    (work / "make.json").write_text(json.dumps(result, indent=1))
    if result.get("so_modules") and not allow_so:
        raise NodePeerError(
            f"the app's import loaded C extensions {result['so_modules']}: Pyodide's snapshot "
            "API does not reload side modules on restore (requests die with 'table index is "
            "out of bounds'); use a pure-Python workload or pass allow_so=True", result)
    return snap


# --------------------------------------------------------------------------- run

def run_once(snapshot: str | os.PathLike, *, mode: str = "run", path: str = "/",
             node_args: Sequence[str] = (), grow: bool = True,
             timeout: float = DEFAULT_TIMEOUT) -> dict:
    """One fresh node process. ``mode="run"``: restore ``snapshot`` and serve one ``GET path``;
    ``mode="cold"``: the same app (from the snapshot's sidecar) booted and imported without a
    snapshot. Returns node's JSON (``status``, ``body_len``, ``boot_ms``, ``app_ms``,
    ``first_response_ms``, ``total_ms`` since node's process start, ...) plus
    ``spawn_to_first_response_ms`` and ``spawn_to_exit_ms`` measured here."""
    snapshot = Path(snapshot)
    meta = json.loads(Path(str(snapshot) + ".json").read_text())
    if mode == "run":
        args = ["run", "--snapshot", str(snapshot), "--path", path]
        if not grow:
            args.append("--no-grow")
    elif mode == "cold":
        args = ["cold", "--package", meta["package"], "--entry", meta["entry"], "--path", path]
        for where, host in meta["mounts"]:
            args += ["--site" if where.endswith("site-packages") else "--app", host]
    else:
        raise ValueError(f"mode must be 'run' or 'cold', not {mode!r}")
    result, wall = _node(args, node_args=node_args, timeout=timeout)
    result.update(wall)
    result["node_args"] = list(node_args)
    return result


def _pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, math.ceil(q / 100 * len(xs)) - 1))]


def summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"n": len(xs), "median_ms": round(statistics.median(xs), 1),
            "p50_ms": round(_pct(xs, 50), 1), "p99_ms": round(_pct(xs, 99), 1),
            "min_ms": round(xs[0], 1), "max_ms": round(xs[-1], 1)}


PHASES = ("node_start_ms", "import_pyodide_ms", "boot_ms", "app_ms", "first_response_ms",
          "total_ms", "spawn_to_exit_ms")


def run(workload: str | os.PathLike = "hello_asgi", runs: int = 10, *, mode: str = "run",
        work_dir: str | os.PathLike | None = None, snapshot: str | os.PathLike | None = None,
        release: str = RELEASE, freeze: bool = False, node_args: Sequence[str] = (),
        path: str = "/") -> dict:
    """``runs`` fresh node processes for ``workload`` (``mode`` ``"run"``: restore from the
    snapshot; ``"cold"``: no snapshot). The headline is ``cold_start`` = spawn to first
    response (n, median, p50, p99, min, max in ms); ``phases`` holds node-side medians.
    Prepares the snapshot in ``work_dir`` (default a temporary directory) unless ``snapshot``
    is given."""
    import tempfile

    tmp = None
    if snapshot is None:
        if work_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="pyworkers-node-peer-")
            work_dir = tmp.name
        snapshot = prepare(workload, work_dir, release=release, freeze=freeze,
                           node_args=node_args)
    try:
        make = {}
        mj = Path(snapshot).parent / "make.json"
        if mj.is_file():
            make = json.loads(mj.read_text())
        results = [run_once(snapshot, mode=mode, path=path, node_args=node_args)
                   for _ in range(runs)]
        statuses = sorted({r["status"] for r in results})
        return {
            "peer": "pyodide-node", "workload": Path(workload).name, "mode": mode,
            "pyodide": results[0].get("pyodide"), "node": ".".join(map(str, node_version() or ())),
            "node_args": list(node_args), "statuses": statuses,
            "body_len": results[0].get("body_len"),
            "cold_start": summary([r["spawn_to_first_response_ms"] for r in results]),
            "phases": {k: round(statistics.median(r[k] for r in results), 1)
                       for k in PHASES if all(k in r for r in results)},
            "snapshot": {"heap_bytes": make.get("heap_bytes"), "file_bytes": make.get("file_bytes"),
                         "freeze": make.get("freeze", freeze), "make_total_ms": make.get("total_ms")}
            if mode == "run" else None,
        }
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workloads", nargs="*", default=["hello_asgi", "starlette_app"])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--freeze", action="store_true", help="gc.freeze() before the snapshot")
    ap.add_argument("--node-arg", action="append", default=[], help="extra node flag")
    ap.add_argument("--work-dir", help="keep the prepared snapshots here")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    ok, why = available()
    if not ok:
        print(f"skipped: {why}", file=sys.stderr)
        return 2
    import tempfile

    out = []
    with tempfile.TemporaryDirectory(prefix="pyworkers-node-peer-") as tmp:
        for w in a.workloads:
            wd = Path(a.work_dir or tmp) / Path(w).name
            snap = prepare(w, wd, freeze=a.freeze, node_args=a.node_arg)
            for mode, n in (("run", a.runs), ("cold", a.cold_runs)):
                if n > 0:
                    r = run(w, n, mode=mode, snapshot=snap, node_args=a.node_arg)
                    out.append(r)
                    if not a.json:
                        c = r["cold_start"]
                        print(f"{r['workload']:<14} {mode:<4} n={c['n']:<3} median "
                              f"{c['median_ms']:8.1f} ms  p99 {c['p99_ms']:8.1f}  min "
                              f"{c['min_ms']:8.1f}  max {c['max_ms']:8.1f}  phases {r['phases']}")
    if a.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
