"""The admin address of a real ``pyworkers serve`` process (``--admin-port``): probes,
Prometheus metrics that count exactly the requests sent, and graceful shutdown on SIGTERM.

The app is ``tests/data/cluster/app`` (plain ASGI, no requirements: no package index), served
as an app directory on 127.0.0.1 with ``--port 0 --admin-port 0``; the ports are read from the
server's start-up log line. Every process is stopped by the fixtures.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "data" / "cluster" / "app"
STARTED = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+) \(Press CTRL\+C to quit\); "
                     r"admin on http://127\.0\.0\.1:(\d+) ")


class ServeProcess:
    """``pyworkers serve ... --port 0 --admin-port 0`` with stderr in ``log``; ``url`` and
    ``admin`` (base URLs) once :meth:`wait_started` saw the start-up line."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pyworkers", "serve", "--host", "127.0.0.1", "--port", "0",
                 "--admin-port", "0", *args],
                stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})})
        self.url = self.admin = ""
        self.port = self.admin_port = 0

    def text(self) -> str:
        return self.log.read_bytes().decode("utf-8", "replace")

    def wait_started(self, timeout: float = 180) -> "ServeProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = STARTED.search(self.text())
            if m:
                self.port, self.admin_port = int(m.group(1)), int(m.group(2))
                self.url = f"http://127.0.0.1:{self.port}"
                self.admin = f"http://127.0.0.1:{self.admin_port}"
                return self
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"serve did not start within {timeout} s:\n{self.text()[-4000:]}")

    def stop(self) -> int | None:
        """SIGINT, then SIGKILL after 30 s; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def scrape(admin: str) -> dict[tuple[str, tuple], float]:
    """``GET /metrics`` parsed with prometheus_client's parser:
    ``{(sample name, sorted label items): value}``."""
    r = httpx.get(admin + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def samples(metrics: dict, name: str) -> dict[tuple, float]:
    return {labels: v for (n, labels), v in metrics.items() if n == name}


def requests_by_status(metrics: dict) -> dict[tuple[str, str], float]:
    return {(dict(lb)["worker"], dict(lb)["status"]): v
            for lb, v in samples(metrics, "pyworkers_requests_total").items()}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("admin") / "serve.log"
    s = ServeProcess([str(APP)], log).wait_started()
    yield s
    rc = s.stop()
    assert rc == 0, s.text()[-3000:]


@pytest.mark.timeout(180)
def test_probes_and_metrics_count_exactly_the_requests_sent(server):
    r = httpx.get(server.admin + "/healthz", timeout=10)
    assert (r.status_code, r.text) == (200, "ok\n")
    deadline = time.monotonic() + 60
    while (r := httpx.get(server.admin + "/readyz", timeout=10)).status_code != 200:
        assert r.status_code == 503 and r.text.startswith("not ready: "), r.text
        assert time.monotonic() < deadline, f"/readyz still {r.status_code}: {r.text}"
        time.sleep(0.2)
    assert r.text == "ready\n"

    before = scrape(server.admin)
    assert requests_by_status(before) == {}, "no request sent yet"

    with httpx.Client(base_url=server.url, timeout=30) as c:
        ok = [c.get("/").status_code for _ in range(4)] \
            + [c.get("/cluster/version").status_code for _ in range(3)]
        # /metrics on the app's port is the app's (its 404), never the admin's metrics
        missing = [c.get("/metrics") for _ in range(3)]
    assert ok == [200] * 7
    for r in missing:
        assert r.status_code == 404 and r.text == "not found by the cluster app: /metrics\n"
        assert "pyworkers_requests_total" not in r.text

    m = scrape(server.admin)
    assert requests_by_status(m) == {("cluster", "200"): 7.0, ("cluster", "404"): 3.0}
    assert samples(m, "pyworkers_request_duration_seconds_count") == {(("worker", "cluster"),): 10}
    buckets = samples(m, "pyworkers_request_duration_seconds_bucket")
    assert buckets[(("le", "+Inf"), ("worker", "cluster"))] == 10
    assert 0 < samples(m, "pyworkers_request_duration_seconds_sum")[(("worker", "cluster"),)] < 10
    assert samples(m, "pyworkers_inflight_requests") == {(("worker", "cluster"),): 0}
    isolates = {dict(lb)["state"]: v for lb, v in samples(m, "pyworkers_isolates").items()}
    assert set(isolates) == {"ready", "booting", "retiring"} and isolates["ready"] >= 1, isolates
    assert samples(m, "pyworkers_isolate_start_seconds_count")[(("worker", "cluster"),)] >= 1
    assert not samples(m, "pyworkers_isolate_deaths_total")
    assert not samples(m, "pyworkers_registry_up"), "no --registry: no registry gauge"

    # The admin port never serves the app, however the request is addressed.
    with httpx.Client(base_url=server.admin, timeout=10) as c:
        for path, headers in [("/", {}), ("/version", {}), ("/cluster/version", {}),
                              ("/version", {"host": "cluster.localhost"}),
                              ("/slow", {})]:
            r = c.get(path, headers=headers)
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert r.text == "admin endpoints: /healthz /readyz /metrics\n", (path, r.text)

    # Scrapes and admin requests are not app requests: the counters did not move.
    assert requests_by_status(scrape(server.admin)) == {("cluster", "200"): 7.0,
                                                        ("cluster", "404"): 3.0}


def _refused(port: int) -> bool:
    """Whether a new TCP connection to 127.0.0.1:``port`` is refused (reset counts too: the
    listener closed with the connection still in its backlog)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /version HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            s.settimeout(2)
            return s.recv(1) == b""  # closed without an answer
    except (ConnectionRefusedError, ConnectionResetError):
        return True


@pytest.mark.timeout(180)
def test_sigterm_during_load_finishes_every_request_in_flight(tmp_path):
    n, slow = 20, 1.5
    s = ServeProcess([str(APP), "--drain-timeout", "20"], tmp_path / "serve.log").wait_started()
    try:
        results: list = [None] * n
        done_at: list = [None] * n

        def one(k: int) -> None:
            try:  # a client of its own: one connection per request
                with httpx.Client(timeout=30) as c:
                    results[k] = c.get(f"{s.url}/slow?s={slow}")
            except Exception as e:  # noqa: BLE001 - recorded, asserted below
                results[k] = e
            done_at[k] = time.monotonic()

        threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while True:  # every request reached the app (the admin's gauge counts them)
            inflight = samples(scrape(s.admin), "pyworkers_inflight_requests")
            if inflight.get((("worker", "cluster"),)) == n:
                break
            assert time.monotonic() < deadline, f"in flight: {inflight}"
            time.sleep(0.05)
        t_term = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)

        # New connections are refused while the requests in flight are still running.
        refused_at = None
        while time.monotonic() - t_term < slow:
            if _refused(s.port):
                refused_at = time.monotonic()
                break
            time.sleep(0.02)
        assert refused_at is not None, f"app port still accepting {slow} s after SIGTERM"
        assert any(d is None for d in done_at), "every request finished before the refusal"
        assert _refused(s.admin_port)
        with pytest.raises(httpx.TransportError):
            httpx.get(s.url + "/version", timeout=5)

        for t in threads:
            t.join(60)
        rc = s.proc.wait(60)
    finally:
        s.stop()
    bad = [r for r in results if not isinstance(r, httpx.Response) or r.status_code != 200]
    assert not bad, bad[:5]
    assert all(r.text.startswith("slow v1 ") for r in results)
    assert max(done_at) > refused_at  # they really were in flight across the shutdown
    text = s.text()
    print(f"\nSIGTERM: new connections refused {refused_at - t_term:.2f} s after the signal; "
          f"{n} in-flight requests completed 200, the last {max(done_at) - t_term:.2f} s after "
          f"it; exit status {rc}")
    assert "lifespan shutdown v1" in text and "Application shutdown complete." in text, text[-3000:]
    assert rc == 0, f"exit status {rc} after SIGTERM:\n{text[-2000:]}"
