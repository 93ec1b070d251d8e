"""Wall-time limits for running wasm: one process-wide daemon thread advances the shared
engine's epoch every :data:`EPOCH_TICK_S` seconds, and each store traps once the epoch passes
its deadline (wasmtime epoch interruption; see :meth:`pyworkers.runtime.isolate.Isolate.set_timeout`)."""
from __future__ import annotations

import threading
import time

from pyworkers.runtime.engine import get_engine

#: a store's epoch deadline meaning "never" (ticks)
NO_DEADLINE = 1 << 62
#: Epoch tick (seconds): timeouts are enforced with this granularity.
EPOCH_TICK_S = 0.01
_ticker_lock = threading.Lock()
_ticker: threading.Thread | None = None


def ensure_epoch_ticker() -> None:
    """Start (once per process) the daemon thread that advances the engine's epoch every
    :data:`EPOCH_TICK_S`; running wasm checks its store's deadline against it."""
    global _ticker
    with _ticker_lock:
        if _ticker is not None:
            return
        engine = get_engine()

        def tick() -> None:
            while True:
                time.sleep(EPOCH_TICK_S)
                engine.increment_epoch()

        _ticker = threading.Thread(target=tick, name="pyworkers-epoch", daemon=True)
        _ticker.start()


def deadline_ticks(seconds: float) -> int:
    """The epoch deadline (ticks from now, at least 1) for ``seconds`` of wall time, rounded up."""
    return max(1, int(seconds / EPOCH_TICK_S + 0.999))
