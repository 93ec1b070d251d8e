"""Probes and metrics for orchestrators, on the admin address (``--admin-port``), apart from
the apps' port.

- ``GET /healthz``: liveness, ``200 ok`` while the process serves.
- ``GET /readyz``: ``200`` when the server started and every served worker has an isolate
  ready (and, with ``--registry``, the follower has a deployment); else ``503`` with the
  reason.
- ``GET /metrics``: Prometheus text format (``prometheus_client``, a registry of our own):

  ========================================== ==========================================
  ``pyworkers_requests_total``               counter {worker, status} (HTTP requests)
  ``pyworkers_request_duration_seconds``     histogram {worker}
  ``pyworkers_websockets_total``             counter {worker}
  ``pyworkers_cold_starts_total``            counter {worker}: requests that waited for
                                             an isolate to be restored for them
  ``pyworkers_isolate_start_seconds``        histogram {worker}: restore + lifespan startup
  ``pyworkers_isolate_deaths_total``         counter {worker, fault}: crash / timeout
  ``pyworkers_isolates``                     gauge {worker, state}: ready / booting /
                                             retiring
  ``pyworkers_inflight_requests``            gauge {worker}
  ``pyworkers_registry_up``                  gauge: last registry sync succeeded (0/1)
  ``pyworkers_registry_last_sync_timestamp`` gauge: unix time of the last good sync
  ========================================== ==========================================
"""
from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The server's metrics. Pools and the front call the ``on_*`` hooks; gauges are read from
    the live pools (and the registry follower's status) at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("pyworkers_requests", "HTTP requests answered",
                                ["worker", "status"], registry=r)
        self.latency = Histogram("pyworkers_request_duration_seconds",
                                 "Time from dispatch to the end of the response",
                                 ["worker"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                          2.5, 5, 10, 30))
        self.websockets = Counter("pyworkers_websockets", "WebSocket connections", ["worker"],
                                  registry=r)
        self.cold_starts = Counter("pyworkers_cold_starts",
                                   "Requests that waited for an isolate restored for them",
                                   ["worker"], registry=r)
        self.starts = Histogram("pyworkers_isolate_start_seconds",
                                "Isolate restore + lifespan startup", ["worker"], registry=r,
                                buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.deaths = Counter("pyworkers_isolate_deaths", "Isolates that crashed or were "
                              "interrupted by the CPU watchdog", ["worker", "fault"], registry=r)
        self.pools: Callable[[], dict] = dict
        self.registry_status: Callable[[], dict | None] = lambda: None
        r.register(_LiveCollector(self))

    # hooks
    def on_request(self, worker: str, status: int, seconds: float) -> None:
        self.requests.labels(worker, str(status)).inc()
        self.latency.labels(worker).observe(seconds)

    def on_websocket(self, worker: str) -> None:
        self.websockets.labels(worker).inc()

    def on_cold_start(self, worker: str) -> None:
        self.cold_starts.labels(worker).inc()

    def on_isolate_started(self, worker: str, seconds: float) -> None:
        self.starts.labels(worker).observe(seconds)

    def on_isolate_death(self, worker: str, fault: str) -> None:
        self.deaths.labels(worker, fault).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    def __init__(self, metrics: Metrics):
        self.m = metrics

    def describe(self):
        return []

    def collect(self):
        iso = GaugeMetricFamily("pyworkers_isolates", "Isolates by state", labels=["worker", "state"])
        inflight = GaugeMetricFamily("pyworkers_inflight_requests", "Open conversations",
                                     labels=["worker"])
        for name, pool in self.m.pools().items():
            snap = pool.snapshot()
            for state in ("ready", "booting", "retiring"):
                iso.add_metric([name, state], snap[state])
            inflight.add_metric([name], snap["inflight"])
        yield iso
        yield inflight
        st = self.m.registry_status()
        if st is not None:
            up = GaugeMetricFamily("pyworkers_registry_up", "Last registry sync succeeded")
            up.add_metric([], 1.0 if st.get("ok") else 0.0)
            yield up
            last = GaugeMetricFamily("pyworkers_registry_last_sync_timestamp",
                                     "Unix time of the last good registry sync")
            last.add_metric([], float(st.get("last_sync") or 0.0))
            yield last


class AdminApp:
    """ASGI app of the admin address. ``server`` is the :class:`ServerApp`; ``ready_extra``
    returns a reason the node is not ready (e.g. the registry follower has nothing) or None."""

    def __init__(self, server: Any, metrics: Metrics,
                 ready_extra: Callable[[], str | None] = lambda: None):
        self.server, self.metrics, self.ready_extra = server, metrics, ready_extra

    def not_ready(self) -> str | None:
        if not self.server.started:
            return "starting"
        for name, pool in self.server.pools.items():
            if pool.closed:
                return "shutting down"
            if pool.policy.min_idle and not pool.snapshot()["ready"]:
                return f"worker {name} has no ready isolate"
        return self.ready_extra()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz":
            status, body, ctype = 200, b"ok\n", "text/plain"
        elif path == "/readyz":
            why = self.not_ready()
            status, body, ctype = (200, b"ready\n", "text/plain") if why is None else (
                503, f"not ready: {why}\n".encode(), "text/plain")
        elif path == "/metrics":
            status, body, ctype = 200, self.metrics.render(), CONTENT_TYPE
        else:
            status, body, ctype = 404, b"admin endpoints: /healthz /readyz /metrics\n", "text/plain"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


__all__ = ["AdminApp", "Metrics"]
