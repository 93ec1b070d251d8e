"""Wall-time limits for running wasm: one process-wide daemon thread advances the shared
engine's epoch every :data:`EPOCH_TICK_S` seconds, and each store traps once the epoch passes
its deadline (wasmtime epoch interruption; see :meth:`pyworkers.runtime.isolate.Isolate.set_timeout`).

The ticker only runs while some isolate needs it: one that has a deadline armed
(:class:`EpochClaim`) and is not parked in a host-side wait (poll, sleep, a stream), where no
wasm runs and the host enforces the deadline itself. An idle server, or a guest sleeping on the
host, costs no ticks (the ticker woke 100 times a second before, ~2-5 % of a core, counted
against every sleeping isolate). Because the epoch stands still while nobody needs it, a deadline
is always armed relative to the current epoch: :class:`EpochClaim` re-arms a wall-clock deadline
when its isolate leaves a host wait, and the CPU watchdog re-arms at every return from poll.
"""
from __future__ import annotations

import threading
import time

from pyworkers.runtime.engine import get_engine

#: a store's epoch deadline meaning "never" (ticks)
NO_DEADLINE = 1 << 62
#: Epoch tick (seconds): timeouts are enforced with this granularity.
EPOCH_TICK_S = 0.01
_cond = threading.Condition(threading.Lock())
_ticker: threading.Thread | None = None
#: claims that are armed and not parked: the ticker runs while this is above 0
_active = 0


def _tick_while_needed(engine) -> None:
    while True:
        with _cond:
            while _active <= 0:
                _cond.wait()
        time.sleep(EPOCH_TICK_S)
        engine.increment_epoch()


def _change_locked(delta: int) -> None:
    """Adjust the active count (``_cond`` held); start or wake the ticker when it becomes
    needed."""
    global _active, _ticker
    _active += delta
    if _active > 0:
        if _ticker is None:
            _ticker = threading.Thread(target=_tick_while_needed, args=(get_engine(),),
                                       name="pyworkers-epoch", daemon=True)
            _ticker.start()
        if _active == delta:  # it was 0: the ticker may be waiting
            _cond.notify()


def ticker_active() -> int:
    """How many isolates keep the ticker running now (armed and not parked); 0 = it sleeps."""
    return _active


class EpochClaim:
    """One store's need for epoch ticks: it counts while :meth:`arm`-ed and not :meth:`park`-ed.

    ``store`` is the isolate's ``wasmtime.Store``. :meth:`arm` with ``wall_deadline``
    (``time.monotonic()`` seconds) also re-arms the store's epoch deadline to the wall time left
    each time the isolate leaves a host wait (the epoch may not have advanced meanwhile).
    Thread-safe; an isolate arms, parks and unparks from its own thread, and may be released
    (closed) from another."""

    __slots__ = ("store", "armed", "parked", "wall_deadline", "__weakref__")

    def __init__(self, store) -> None:
        self.store = store
        self.armed = False
        self.parked = False
        self.wall_deadline: float | None = None

    def arm(self, ticks: int, wall_deadline: float | None = None) -> None:
        """Set the store's epoch deadline ``ticks`` from now and keep the ticker running."""
        self.store.set_epoch_deadline(ticks)
        with _cond:
            self.wall_deadline = wall_deadline
            if not self.armed:
                self.armed = True
                if not self.parked:
                    _change_locked(1)

    def rearm(self, ticks: int) -> None:
        """Move the store's epoch deadline to ``ticks`` from now (already armed: no lock)."""
        self.store.set_epoch_deadline(ticks)

    def disarm(self) -> None:
        """No deadline: the store never traps on the epoch, the ticker may sleep."""
        store = self.store
        if store is not None:
            store.set_epoch_deadline(NO_DEADLINE)
        self.release()

    def release(self) -> None:
        """Stop counting (the isolate is closed or dead); the store is left alone."""
        with _cond:
            self.wall_deadline = None
            if self.armed:
                self.armed = False
                if not self.parked:
                    _change_locked(-1)

    def park(self) -> None:
        """The isolate waits on the host (no wasm runs): its ticks are not needed."""
        if self.armed:
            with _cond:
                if self.armed and not self.parked:
                    _change_locked(-1)
                self.parked = True
        else:
            self.parked = True

    def unpark(self) -> None:
        """Back from a host wait: count again, and re-arm a wall-clock deadline for the time
        left (at least one tick)."""
        if not self.armed:
            self.parked = False
            return
        with _cond:
            if self.armed and self.parked:
                _change_locked(1)
            self.parked = False
            wall = self.wall_deadline
        if wall is not None and self.store is not None:
            self.store.set_epoch_deadline(deadline_ticks(wall - time.monotonic()))


def deadline_ticks(seconds: float) -> int:
    """The epoch deadline (ticks from now, at least 1) for ``seconds`` of wall time, rounded up."""
    return max(1, int(seconds / EPOCH_TICK_S + 0.999))
