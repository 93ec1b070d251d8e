"""The cold-start benchmark's processes (``pyworkers bench``, issue 8): the peers it measures
against and the servers of its warm comparison.

- :class:`NativePeer` (mode 4, and the native side of the warm comparison): ``python -m uvicorn``
  of the deployment's own app copy on this machine's CPython, with native builds of its C
  extensions;
- :class:`NodePeer` (mode 5): Pyodide in Node with Pyodide's own snapshot API
  (:mod:`pyworkers.benchmarks.node_peer`);
- :class:`ServerProcess`: a server subprocess that is ready once uvicorn's line names its port
  (also used by ``bench concurrency``, ``bench proxy``, ``bench workers`` and the traced run of
  :mod:`pyworkers.benchmarks.phases`);
- :func:`warm_http`: warm requests over real HTTP on 127.0.0.1, ``pyworkers serve`` against
  native uvicorn, through one minimal asyncio HTTP/1.1 keep-alive client (:func:`http_load`).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pyworkers.benchmarks.common import BenchError, pct, smaps, summary

READY = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


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
            rss = smaps(proc.pid).get("Rss")
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
    """Mode 5: Pyodide in Node restoring its own snapshot of the workload's pure-Python peer app
    (prepared once here); raises :class:`BenchError` when node or the Pyodide package is
    missing or the peer fails."""

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
        return smaps(self.proc.pid).get("Rss")

    rss_bytes = rss

    def stop(self) -> None:
        """SIGINT, then SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def http_load(port: int, path: str, host: str, total: int, concurrency: int,
                    expect: bytes | None = None) -> tuple[list[float], float, dict[int, int]]:
    """``total`` ``GET path`` requests over ``concurrency`` keep-alive HTTP/1.1 connections to
    127.0.0.1:``port`` (a minimal asyncio client: Content-Length or chunked bodies). Returns
    (latencies in ms, elapsed seconds, status counts). ``expect``: the body a ``200`` must have.
    Raises :class:`BenchError` for a failed connection, a response without a length or an
    unexpected body."""
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
                    body = await reader.readexactly(int(hdrs["content-length"]))
                elif hdrs.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        parts.append((await reader.readexactly(size + 2))[:size])
                        if size == 0:
                            break
                    body = b"".join(parts)
                else:
                    raise BenchError(f"GET {path}: response without a length")
                if expect is not None and status == 200 and body != expect:
                    raise BenchError(f"GET {path} on port {port}: unexpected body {body[:200]!r}")
                lat.append((time.perf_counter() - t0) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                if hdrs.get("connection", "").lower() == "close":
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except (OSError, asyncio.IncompleteReadError) as e:
            raise BenchError(f"GET {path} on port {port}: {type(e).__name__}: {e}") from None
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(min(concurrency, total))))
    return lat, time.perf_counter() - t0, statuses


def _warm_one(port: int, path: str, host: str, requests: int, concurrency: int) -> dict:
    warm = max(50, requests // 10)
    asyncio.run(http_load(port, path, host, warm, concurrency))
    lat, _, st1 = asyncio.run(http_load(port, path, host, requests, 1))
    lat_c, elapsed, st2 = asyncio.run(http_load(port, path, host, requests, concurrency))
    statuses = {str(k): st1.get(k, 0) + st2.get(k, 0) for k in sorted(set(st1) | set(st2))}
    return {"sequential": {**summary(lat), "p90": round(pct(lat, 90), 3),
                           "rps": round(len(lat) / (sum(lat) / 1000), 1)},
            "concurrent": {**summary(lat_c), "concurrency": concurrency,
                           "rps": round(len(lat_c) / elapsed, 1)},
            "statuses": statuses}


def warm_http(store_root: Path, name: str, native: NativePeer | None, path: str, work: Path,
              requests: int, concurrency: int, memory_limit: int,
              progress: Callable[[str], None]) -> dict:
    """Warm requests over real HTTP: ``pyworkers serve`` (subprocess, ``--min-idle 2
    --max-isolates 2 --memory-limit`` ``memory_limit`` bytes) and native uvicorn (one process),
    the same client for both: ``requests`` sequential on one connection, then ``requests`` on
    ``concurrency`` connections. Returns ``{"pyworkers": ..., "native": ..., "ratio": ...}``
    (latencies in ms); raises :class:`BenchError` if a server does not start."""
    out: dict[str, Any] = {"requests": requests, "concurrency": concurrency, "path": path,
                           "client": "asyncio raw HTTP/1.1 keep-alive client in the bench "
                                     "process, 127.0.0.1"}
    env = {**os.environ}
    argv = [sys.executable, "-m", "pyworkers", "serve", name, "--store", str(store_root),
            "--host", "127.0.0.1", "--port", "0", "--min-idle", "2", "--max-isolates", "2",
            "--memory-limit", str(memory_limit >> 20), "--no-access-log"]
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
