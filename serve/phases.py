"""Where the time of one request goes: per-request phase timings (``pyworkers serve
--trace-phases FILE``, the benchmarks).

A traced HTTP request collects monotonic clock readings (ns) on both sides of the host<->guest
boundary; the guest's readings come back in its ``G_DONE`` frame and are moved to the host's
clock with the isolate's ``mono_offset_ns`` (the guest's monotonic clock is the host's plus that
offset). :func:`request_phases` turns them into consecutive phases (ms):

============  =============================================================================
uvicorn_in    bytes of the request received -> ``ServerApp`` called (h11 parsing, uvicorn's
              task; only under uvicorn)
front_in      ``ServerApp`` called -> ``H_HTTP`` frame pushed (routing, pool, scope encoding),
              less ``queue``
queue         waiting for an isolate with room (for a cold start: the isolate's start-up)
to_guest      frame pushed -> the guest dispatches it (channel, waking the isolate's thread,
              its ``poll`` returning, reading and decoding the frame)
guest_in      dispatched -> the app is called (scope, the conversation's task scheduled)
app           the app's ASGI call, until it returns
to_host       app returned -> its response reaches the server's loop (frames flushed at the
              guest loop's next ``select``, decoded, handed to the server's thread)
front_out     response on the server's loop -> written to the client's transport (uvicorn's
              h11 serialisation and ``transport.write``)
============  =============================================================================

``to_host`` assumes a response sent before the app returns (any non-streaming response); for
a streamed one it can be negative and is reported as measured.
"""
from __future__ import annotations

import contextvars
import dataclasses
import json
import time
from pathlib import Path
from typing import Iterable

#: the phase names, in request order
PHASES = ("uvicorn_in", "front_in", "queue", "to_guest", "guest_in", "app", "to_host",
          "front_out")

#: monotonic ns at which the connection's current request bytes arrived (set by
#: :class:`pyworkers.serve.connections.ServeH11Protocol` before uvicorn starts the request's
#: task, which copies the context)
arrived_ns: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "pyworkers_arrived_ns", default=None)


@dataclasses.dataclass
class RequestTrace:
    """Clock readings of one request (host monotonic ns; ``None``: not reached).
    ``guest``: ``[dispatched, app called, app returned]`` already on the host's clock."""

    arrived: int | None = None
    called: int = dataclasses.field(default_factory=time.monotonic_ns)
    pushed: int | None = None
    guest: list[int] | None = None
    start_rx: int | None = None
    sent: int | None = None
    worker: str = ""
    status: int | None = None
    #: ns spent waiting for an isolate with room (``Pool.acquire``)
    queue_ns: int = 0

    def complete(self) -> bool:
        return None not in (self.pushed, self.start_rx, self.sent) and bool(self.guest) \
            and len(self.guest) == 3  # type: ignore[arg-type]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def request_phases(t: RequestTrace) -> dict[str, float]:
    """Phase durations (ms) of a complete trace (see the module docstring); ``uvicorn_in`` only
    when the arrival time is known. Raises ``ValueError`` for an incomplete trace."""
    if not t.complete():
        raise ValueError("incomplete request trace")
    d, a, r = t.guest  # type: ignore[misc]
    out = {}
    if t.arrived is not None:
        out["uvicorn_in"] = (t.called - t.arrived) / 1e6
    out.update({"front_in": (t.pushed - t.called - t.queue_ns) / 1e6,  # type: ignore[operator]
                "queue": t.queue_ns / 1e6,
                "to_guest": (d - t.pushed) / 1e6,  # type: ignore[operator]
                "guest_in": (a - d) / 1e6,
                "app": (r - a) / 1e6,
                "to_host": (t.start_rx - r) / 1e6,  # type: ignore[operator]
                "front_out": (t.sent - t.start_rx) / 1e6})  # type: ignore[operator]
    out["total"] = ((t.sent - (t.arrived if t.arrived is not None else t.called))  # type: ignore
                    / 1e6)
    return out


def summarize(traces: Iterable[RequestTrace | dict], skip: int = 0) -> dict:
    """Median of each phase over the complete traces (after the first ``skip``):
    ``{"n": int, "p50_ms": {phase: ms, ..., "total": ms}}``."""
    rows = []
    for t in traces:
        if isinstance(t, dict):
            t = RequestTrace(**t)
        if t.complete():
            rows.append(request_phases(t))
    rows = rows[skip:]
    out: dict = {"n": len(rows), "p50_ms": {}}
    if rows:
        for name in (*PHASES, "total"):
            xs = sorted(r[name] for r in rows if name in r)
            if xs:
                out["p50_ms"][name] = round(xs[(len(xs) - 1) // 2], 4)
    return out


def write_traces(path: str | Path, traces: Iterable[RequestTrace]) -> int:
    """Write traces as JSON lines to ``path`` (atomically: a temporary file renamed). Returns
    the number written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w") as f:
        for t in traces:
            f.write(json.dumps(t.as_dict()) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_traces(path: str | Path) -> list[dict]:
    """The traces :func:`write_traces` wrote (a list of dicts)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


__all__ = ["PHASES", "RequestTrace", "arrived_ns", "read_traces", "request_phases", "summarize",
           "write_traces"]
