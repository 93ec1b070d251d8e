"""Scaling policy of a pool: which isolate takes a request, when to restore another, when one
retires. Pure decisions over the workers' observable state (``state``, ``load``,
``last_used``), no I/O: the pool (``pyworkers.serve.pool``) acts on them."""
from __future__ import annotations

import dataclasses
import os
from typing import Protocol, Sequence


class _WorkerView(Protocol):
    state: str
    load: int
    last_used: float
    recycle: str | None
    busy_for: float


#: seconds a guest may run without awaiting before its isolate stops taking new requests
#: (a sync endpoint or a CPU loop is blocking its event loop)
BLOCKED_AFTER = 0.1


@dataclasses.dataclass(frozen=True)
class ScalingPolicy:
    """Pool sizing rules.

    Attributes:
        min_idle: isolates with room for another request kept booted ahead of demand.
        max_isolates: live isolates per deployment (booting + ready + stopping ones of the
            current generation).
        max_concurrency: in-flight requests (HTTP and WebSocket) per isolate.
        idle_timeout: seconds an isolate with no request may stay before it retires (never
            below ``min_idle`` live isolates).
    """

    min_idle: int = 1
    max_isolates: int = 2
    max_concurrency: int = 32
    idle_timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.max_isolates < 1 or self.max_concurrency < 1:
            raise ValueError("max_isolates and max_concurrency must be at least 1")
        if self.min_idle > self.max_isolates:
            raise ValueError(f"min_idle {self.min_idle} is more than max_isolates "
                             f"{self.max_isolates}")

    def has_room(self, w: _WorkerView) -> bool:
        return (w.state == "ready" and w.recycle is None and w.load < self.max_concurrency
                and w.busy_for < BLOCKED_AFTER)

    def pick(self, workers: Sequence[_WorkerView]) -> _WorkerView | None:
        """The least-loaded ready worker with room (oldest first among equals), or None. An
        isolate whose loop has been blocked for :data:`BLOCKED_AFTER` seconds has no room."""
        best = None
        for w in workers:
            if self.has_room(w) and (best is None or w.load < best.load):
                best = w
        return best

    def to_spawn(self, workers: Sequence[_WorkerView], waiting: int) -> int:
        """How many isolates to start now: enough that ``min_idle`` (at least one while
        requests wait) have room, counting booting ones, within ``max_isolates``."""
        live = [w for w in workers if w.state in ("booting", "ready")]
        spare = sum(1 for w in live if w.state == "booting" or self.has_room(w))
        want = max(self.min_idle, 1 if waiting else 0)
        return max(0, min(want - spare, self.max_isolates - len(live)))

    def to_retire(self, workers: Sequence[_WorkerView], now: float) -> list[_WorkerView]:
        """Idle isolates past ``idle_timeout`` (longest idle first), keeping ``min_idle``
        live ones; plus any flagged for recycling that has no request left."""
        out = [w for w in workers if w.state == "ready" and w.recycle and w.load == 0]
        live = sum(1 for w in workers if w.state in ("booting", "ready")) - len(out)
        idle = sorted((w for w in workers if w.state == "ready" and not w.recycle
                       and w.load == 0 and now - w.last_used >= self.idle_timeout),
                      key=lambda w: w.last_used)
        for w in idle:
            if live <= self.min_idle:
                break
            out.append(w)
            live -= 1
        return out


def default_max_isolates() -> int:
    """Default ``--max-isolates``: the number of CPUs (at least 2)."""
    return max(2, os.cpu_count() or 1)


__all__ = ["ScalingPolicy", "default_max_isolates"]
