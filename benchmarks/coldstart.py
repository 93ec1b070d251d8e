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
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from pyworkers.benchmarks.phases import breakdown_lines, flat_phases, traced_http, warm_inprocess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FORMAT = 1
KIND = "pyworkers-bench-coldstart"

#: Built-in workloads: the app deployed, the request, and the pure-Python stand-in for peer 5.
WORKLOADS = {
    "reference": {"app": "examples/fastapi-full", "path": "/items/1",
                  "peer": "starlette_app", "peer_path": "/",
                  "about": "fastapi + pydantic + httpx (the workload Cloudflare publishes)"},
    "hello": {"app": "examples/hello", "path": "/", "peer": "hello_asgi", "peer_path": "/",
              "about": "a one-route FastAPI app"},
}

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
MEMORY_COUNTS = (1, 8, 32)
MEMORY_LIMIT = 512 << 20  # pyworkers serve's default --memory-limit
READY = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")
PYODIDE_SNAPSHOT_NOTE = ("Pyodide's snapshot API copies linear memory only and does not reload C "
                         "extensions (.so side modules) on restore, so peer 5 runs a pure-Python "
                         "stand-in workload")


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


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _smaps(pid: int | str = "self") -> dict[str, int]:
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


# --------------------------------------------------------------------------- mode 4

def _native_packages(record: dict) -> list[str]:
    """``name==version`` of the lock's packages whose wheel is not pure Python."""
    lock = record.get("lock") or {}
    out = []
    for p in lock.get("packages", []):
        wheel = p.get("wheel") or ""
        if wheel and not wheel.endswith("-none-any.whl"):
            out.append(f"{p['name']}=={p['version']}")
    return out


class NativePeer:
    """Mode 4 (and the native side of the warm comparison): uvicorn on this machine's CPython."""

    def __init__(self, dep, work: Path, path: str, progress: Callable[[str], None]):
        self.app_dir = dep.app_dir
        self.path = path
        self.native_dir = work / "native-site"
        self.pycache = work / "pycache"
        self.pycache.mkdir(parents=True, exist_ok=True)
        self.packages = _native_packages(dep.record)
        if self.packages:
            progress(f"native peer: pip install --only-binary {' '.join(self.packages)}")
            r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                                "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
                                "--target", str(self.native_dir), *self.packages],
                               capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                raise BenchError("pip could not install native builds of "
                                 f"{', '.join(self.packages)}: {r.stderr.strip()[-400:]}")
        paths = [str(self.native_dir)] if self.packages else []
        if dep.layer_dir is not None:
            paths.append(str(dep.layer_dir))
        self.env = {**os.environ, **dep.record["config"]["vars"],
                    "PYTHONPYCACHEPREFIX": str(self.pycache), "PYTHONUNBUFFERED": "1"}
        if paths:
            self.env["PYTHONPATH"] = os.pathsep.join(paths)
        else:
            self.env.pop("PYTHONPATH", None)
        self.argv = [sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(self.app_dir),
                     "--host", "127.0.0.1", "--port", "0", "--no-access-log"]
        main = dep.record["config"]["main"]
        if main != "main:app":
            self.argv[3] = main
        self.work = work

    def run_once(self) -> dict:
        """Spawn -> ready line -> GET on a new connection -> whole response; then stop it."""
        t0 = time.perf_counter()
        proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=self.env, cwd=str(self.work))
        try:
            seen = b""
            while True:
                line = proc.stderr.readline()
                if not line:
                    proc.wait(30)
                    raise BenchError(f"native uvicorn exited ({proc.returncode}) before it was "
                                     f"ready:\n{seen.decode('utf-8', 'replace')[-2000:]}")
                seen += line
                m = READY.search(line)
                if m:
                    break
            t_ready = time.perf_counter()
            status, body = _one_request("127.0.0.1", int(m.group(1)), self.path)
            t1 = time.perf_counter()
            rss = _smaps(proc.pid).get("Rss")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            proc.stderr.close()
        if status >= 500:
            raise BenchError(f"native uvicorn: GET {self.path} -> {status}")
        return {"ms": (t1 - t0) * 1000, "ready_ms": (t_ready - t0) * 1000,
                "request_ms": (t1 - t_ready) * 1000, "status": status, "body_bytes": len(body),
                "rss_bytes": rss}


def _one_request(host: str, port: int, path: str, timeout: float = 120) -> tuple[int, bytes]:
    """One ``GET path`` on a new connection (``Connection: close``): (status, body)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: pyworkers-bench\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


# --------------------------------------------------------------------------- mode 5

class NodePeer:
    def __init__(self, workload: dict, release: str, work: Path, progress: Callable[[str], None]):
        from pyworkers.benchmarks import node_peer

        self.np = node_peer
        self.path = workload["peer_path"]
        self.workload = workload["peer"]
        ok, why = node_peer.available(release if release else node_peer.RELEASE)
        self.release = release
        if not ok and release != node_peer.RELEASE:
            ok, why = node_peer.available(node_peer.RELEASE)
            self.release = node_peer.RELEASE
        if not ok:
            raise BenchError(why)
        progress(f"Pyodide-in-Node peer: {why}; preparing {Path(self.workload).name}")
        try:
            self.snapshot = node_peer.prepare(self.workload, work / "node-peer",
                                              release=self.release,
                                              progress=lambda m: None)
        except node_peer.NodePeerError as e:
            raise BenchError(str(e)) from None
        make = json.loads((work / "node-peer" / "make.json").read_text())
        self.make = {"heap_bytes": make.get("heap_bytes"), "file_bytes": make.get("file_bytes"),
                     "make_total_ms": make.get("total_ms")}

    def run_once(self) -> dict:
        try:
            r = self.np.run_once(self.snapshot, path=self.path)
        except self.np.NodePeerError as e:
            raise BenchError(str(e)) from None
        return {"ms": r["spawn_to_first_response_ms"], "status": r.get("status"),
                "body_bytes": r.get("body_len"), "node_total_ms": r.get("total_ms"),
                "boot_ms": r.get("boot_ms"), "first_response_ms": r.get("first_response_ms")}


# --------------------------------------------------------------------------- warm HTTP

class ServerProcess:
    """A server subprocess (stderr to ``log``) that is ready once uvicorn's line names its
    port (:attr:`port`). ``env`` defaults to this environment with ``PYTHONUNBUFFERED=1``,
    ``cwd`` to the log's folder; ``about`` names it in errors. :meth:`wait_ready` raises
    :class:`BenchError` (with the log's tail) if it exits or is not ready in time."""

    def __init__(self, argv: list[str], log: Path, about: str | None = None,
                 env: dict | None = None, cwd: Path | None = None):
        self.argv, self.log = argv, log
        self.about = about or f"server {log.stem}"
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                env=env if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=str(cwd or log.parent))
        self.port = 0

    def wait_ready(self, timeout: float = 300) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = READY.search(self.log.read_bytes())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"{self.about} did not start:\n"
                         f"{self.log.read_bytes().decode('utf-8', 'replace')[-2000:]}")

    def rss(self) -> int | None:
        """Resident set size in bytes (``None`` once it is gone)."""
        return _smaps(self.proc.pid).get("Rss")

    rss_bytes = rss

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def workload_selection(app_dir: Path) -> dict | None:
    """The runtime selection of a workload's ``pyworkers.toml`` as JSON, for the machine
    description (``None`` if it cannot be read: it is informative only)."""
    from pyworkers.config import load_worker_config

    try:
        return load_worker_config(app_dir).runtime_selection().to_json()
    except Exception:  # noqa: BLE001
        return None


async def _http_load(port: int, path: str, host: str, total: int, concurrency: int
                     ) -> tuple[list[float], float, dict[int, int]]:
    """``total`` ``GET path`` requests over ``concurrency`` keep-alive HTTP/1.1 connections
    (a minimal asyncio client: Content-Length or chunked bodies). Returns (latencies in ms,
    elapsed seconds, status counts)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pyworkers-bench\r\n"
               "Accept: */*\r\n\r\n").encode()
    left = [total]
    lat: list[float] = []
    statuses: dict[int, int] = {}

    async def conn() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left[0] > 0:
                left[0] -= 1
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
                hdrs = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        hdrs[k.strip().lower()] = v.strip()
                if "content-length" in hdrs:
                    await reader.readexactly(int(hdrs["content-length"]))
                elif hdrs.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                else:
                    raise BenchError("warm load: response without a length")
                lat.append((time.perf_counter() - t0) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                if hdrs.get("connection", "").lower() == "close":
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(concurrency)))
    return lat, time.perf_counter() - t0, statuses


def _warm_one(port: int, path: str, host: str, requests: int, concurrency: int) -> dict:
    warm = max(50, requests // 10)
    asyncio.run(_http_load(port, path, host, warm, concurrency))
    lat, _, st1 = asyncio.run(_http_load(port, path, host, requests, 1))
    lat_c, elapsed, st2 = asyncio.run(_http_load(port, path, host, requests, concurrency))
    statuses = {str(k): st1.get(k, 0) + st2.get(k, 0) for k in sorted(set(st1) | set(st2))}
    return {"sequential": {**summary(lat), "p90": round(pct(lat, 90), 3),
                           "rps": round(len(lat) / (sum(lat) / 1000), 1)},
            "concurrent": {**summary(lat_c), "concurrency": concurrency,
                           "rps": round(len(lat_c) / elapsed, 1)},
            "statuses": statuses}


def warm_http(store_root: Path, name: str, native: NativePeer | None, path: str, work: Path,
              requests: int, concurrency: int, progress: Callable[[str], None]) -> dict:
    """Warm requests over real HTTP: ``pyworkers serve`` (subprocess, ``--min-idle 2
    --max-isolates 2``) and native uvicorn (one process), the same client for both."""
    out: dict[str, Any] = {"requests": requests, "concurrency": concurrency, "path": path,
                           "client": "asyncio raw HTTP/1.1 keep-alive client in the bench "
                                     "process, 127.0.0.1"}
    env = {**os.environ}
    argv = [sys.executable, "-m", "pyworkers", "serve", name, "--store", str(store_root),
            "--host", "127.0.0.1", "--port", "0", "--min-idle", "2", "--max-isolates", "2",
            "--memory-limit", str(MEMORY_LIMIT >> 20), "--no-access-log"]
    servers = [("pyworkers", argv, env, f"{name}.localhost",
                "pyworkers serve (--min-idle 2 --max-isolates 2)")]
    if native is not None:
        servers.append(("native", native.argv, native.env, "127.0.0.1",
                        "uvicorn main:app (1 process)"))
    for key, argv, env, host, about in servers:
        progress(f"warm HTTP: {about}")
        srv = ServerProcess(argv, work / f"{key}.log", env=env, cwd=work).wait_ready()
        try:
            res = _warm_one(srv.port, path, host, requests, concurrency)
            res["rss_bytes"] = srv.rss()
        finally:
            srv.stop()
        res["server"] = about
        out[key] = res
    if "native" in out:
        p, n = out["pyworkers"], out["native"]
        out["ratio"] = {
            "rps_pyworkers_over_native": round(p["concurrent"]["rps"] / n["concurrent"]["rps"], 3),
            "p50_pyworkers_over_native": round(p["sequential"]["p50"] / n["sequential"]["p50"], 3),
            "p99_pyworkers_over_native": round(p["sequential"]["p99"] / n["sequential"]["p99"], 3),
            "rps_sequential_pyworkers_over_native": round(
                p["sequential"]["rps"] / n["sequential"]["rps"], 3)}
    return out


# --------------------------------------------------------------------------- memory

MEMORY_CHILD = r"""
import json, sys
from pyworkers.benchmarks.coldstart import memory_child
print(json.dumps(memory_child(sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3:]])))
"""


def memory_child(store_root: str, name: str, counts: list[int]) -> dict:
    """In a fresh process: restore isolates through ``pyworkers serve``'s factory and worker
    (each on its own thread and event loop, lifespan startup done: idle pool isolates); RSS /
    private memory growth per added isolate."""
    return asyncio.run(_memory_child(store_root, name, counts))


async def _memory_child(store_root: str, name: str, counts: list[int]) -> dict:
    from pyworkers.serve.oneshot import request, start_worker
    from pyworkers.serve.targets import deployment_target
    from pyworkers.store import Store

    _id, factory = deployment_target(Store(store_root), name, memory_limit=MEMORY_LIMIT)
    for _ in range(3):  # first-use code paths, caches
        w = await start_worker(factory, "warm")
        await request(w, "GET", "/")
        await w.stop(0, 10)
    gc.collect()
    base = _smaps()
    workers = []
    out = {"baseline_rss_bytes": base.get("Rss"), "counts": {}}
    for k in sorted(counts):
        while len(workers) < k:
            workers.append(await start_worker(factory, "mem"))
        gc.collect()
        s = _smaps()
        grow = lambda key: int((s.get(key, 0) - base.get(key, 0)) / k)  # noqa: E731
        out["counts"][str(k)] = {"rss_per_isolate_bytes": grow("Rss"),
                                 "pss_per_isolate_bytes": grow("Pss"),
                                 "private_dirty_per_isolate_bytes": grow("Private_Dirty"),
                                 "rss_bytes": s.get("Rss")}
    await asyncio.gather(*(w.stop(0, 10) for w in workers))
    return out


def memory_per_isolate(store_root: Path, name: str, work: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(store_root), name,
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
                                           requests, concurrency, say)
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
                result["memory"] = memory_per_isolate(store_root, dep.name, work)
            except BenchError as e:
                result["memory"] = {"skipped": str(e)}
        result["peers"] = peer_ratios(result)
        result["targets"] = targets(result)
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        return result
    finally:
        tmp.cleanup()


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


# --------------------------------------------------------------------------- output

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


def target_lines(result: dict) -> list[str]:
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
        lines.append("memory per added restored isolate (after lifespan startup; growth of the "
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


if __name__ == "__main__":  # pragma: no cover
    print(format_table(run()))
