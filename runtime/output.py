"""Guest output limiting: what an isolate writes to fd 1/2 becomes bounded log lines.

A guest can print without limit (200 MB without a newline, or millions of short lines); the
host must neither buffer it nor spend unbounded CPU on it, and the guest's ``write`` must never
wait for the log. :class:`LineLimiter` sits between an isolate's stdout/stderr sink and the log:

- **lines cut at** ``max_line`` bytes (default 16 KiB): the first ``max_line`` bytes are emitted
  with the suffix ``" [line cut: N more bytes]"`` once the line ends; at most ``max_line`` bytes of
  a pending line are held;
- **a per-isolate rate limit**: a token bucket of ``rate`` bytes/s holding at most ``burst``
  bytes (the classic token bucket, e.g. RFC 2697's single-rate scheme without colours). A line
  that does not fit is dropped whole, and so is everything after it until the bucket is half
  full again; then one line ``"[pyworkers] N bytes of output dropped (rate limit R bytes/s)"``
  precedes the next line (one notice per episode, like journald's rate limiting), or comes at
  the end of the request that flooded (:meth:`LineLimiter.announce`), whichever is first, so a
  drop is reported even when the isolate never prints again. While
  dropping, a write costs O(1) Python steps (no per-line work), so a flood costs little CPU;
- **never blocking**: :meth:`LineLimiter.write` only calls ``emit`` for finished lines; give it a
  :class:`QueueSink` to make the emitting itself non-blocking (a bounded queue drained by a
  daemon thread; what does not fit is dropped and counted).

Units: bytes and seconds. Defaults come from ``PYWORKERS_LOG_LINE_MAX`` (16384),
``PYWORKERS_LOG_RATE`` (65536 bytes/s) and ``PYWORKERS_LOG_BURST`` (262144 bytes) when set
(:func:`limits_from_env`).
"""
from __future__ import annotations

import collections
import os
import threading
import time
from typing import Callable, TextIO

DEFAULT_MAX_LINE = 16 << 10
DEFAULT_RATE = 64 << 10
DEFAULT_BURST = 256 << 10

__all__ = ["LineLimiter", "QueueSink", "limits_from_env", "DEFAULT_MAX_LINE", "DEFAULT_RATE",
           "DEFAULT_BURST"]


def limits_from_env(environ: dict[str, str] | None = None) -> dict[str, int]:
    """``{"max_line", "rate", "burst"}`` from ``PYWORKERS_LOG_LINE_MAX``/``_RATE``/``_BURST``
    (bytes, bytes/s, bytes), defaults where unset. Raises ``ValueError`` naming the variable for
    a value that is not a positive integer."""
    env = os.environ if environ is None else environ
    out = {}
    for key, var, default in (("max_line", "PYWORKERS_LOG_LINE_MAX", DEFAULT_MAX_LINE),
                              ("rate", "PYWORKERS_LOG_RATE", DEFAULT_RATE),
                              ("burst", "PYWORKERS_LOG_BURST", DEFAULT_BURST)):
        raw = env.get(var)
        if raw is None or raw == "":
            out[key] = default
            continue
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value <= 0:
            raise ValueError(f"{var}={raw!r}: expected a positive integer (bytes{'/s' if key == 'rate' else ''})")
        out[key] = value
    return out


class LineLimiter:
    """Turns a stream of guest output chunks into bounded lines for ``emit``.

    Args:
        emit: called with one finished line (``bytes``, no trailing newline) at a time.
        max_line: longest line emitted, in bytes (longer ones are cut, see the module doc).
        rate: sustained bytes per second let through (token bucket refill rate).
        burst: bucket size in bytes (what may pass at once after a quiet period); at least
            ``max_line`` so any cut line can pass.
        clock: monotonic seconds (for tests).

    Not thread-safe: one limiter per isolate, written from the thread running it. Counters:
    :attr:`emitted` (bytes of lines emitted), :attr:`dropped` (bytes dropped by the rate limit,
    total), :attr:`cut` (bytes cut off long lines).
    """

    def __init__(self, emit: Callable[[bytes], None], *, max_line: int = DEFAULT_MAX_LINE,
                 rate: float = DEFAULT_RATE, burst: int = DEFAULT_BURST,
                 clock: Callable[[], float] = time.monotonic):
        if max_line <= 0 or rate <= 0 or burst <= 0:
            raise ValueError("max_line, rate and burst must be positive")
        self.emit = emit
        self.max_line = max_line
        self.rate = float(rate)
        self.burst = max(int(burst), max_line)
        self.clock = clock
        self.tokens = float(self.burst)
        self.stamp = clock()
        self._line = bytearray()   # pending partial line (<= max_line bytes)
        self._over = 0             # bytes of the pending line beyond max_line (discarded)
        self._dropping = False     # inside a line that is being dropped whole
        self._unreported = 0       # dropped bytes not yet announced
        self._suppressed = False   # dropping until the bucket is half full again
        self.emitted = 0
        self.dropped = 0
        self.cut = 0

    # -- token bucket
    def _refill(self) -> None:
        now = self.clock()
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._unreported += n
        self._suppressed = True

    def _closed_gate(self) -> bool:
        """True while output is being dropped: the bucket is empty, or drops happened and it
        has not refilled to half its size yet (so one notice covers a whole episode)."""
        return self.tokens < 1 or (self._suppressed and self.tokens < self.burst / 2)

    def _notice(self) -> bytes:
        return (f"[pyworkers] {self._unreported} bytes of output dropped "
                f"(rate limit {int(self.rate)} bytes/s)").encode()

    def announce(self) -> None:
        """Emit the pending drop notice now, if any (call at the end of a request): the drops
        are reported even if this isolate never prints again (it may be idle for hours, or
        retired), and the notice sits next to the request that flooded. Costs no tokens and
        keeps the gate closed: lines are still dropped until the bucket is half full again."""
        if self._unreported:
            notice = self._notice()
            self._unreported = 0
            self.emit(notice)

    def _send(self, line: bytes) -> bool:
        """Emit ``line`` if the bucket allows (announcing earlier drops first), else drop it;
        True if emitted."""
        self._refill()
        notice = self._notice() if self._unreported else b""
        cost = len(line) + 1 + (len(notice) + 1 if notice else 0)
        if self.tokens < cost or self._closed_gate():
            self._drop(len(line) + 1)
            return False
        self._suppressed = False
        self.tokens -= cost
        if notice:
            self._unreported = 0
            self.emit(notice)
        self.emitted += len(line)
        self.emit(line)
        return True

    # -- input
    def write(self, data: bytes) -> None:
        """Take one chunk of guest output. Never blocks and never holds more than
        ``max_line`` bytes; finished lines go to ``emit`` (or are dropped)."""
        n = len(data)
        if not n:
            return
        self._refill()
        if self._closed_gate():
            self._drop_rest(data, 0)
            return
        start = 0
        while start < n:
            nl = data.find(b"\n", start)
            end = n if nl < 0 else nl
            piece_len = end - start
            if self._dropping:
                self._drop(piece_len + (nl >= 0))
            else:
                room = self.max_line - len(self._line)
                if piece_len <= room:
                    self._line += data[start:end]
                else:
                    if room > 0:
                        self._line += data[start:start + room]
                    self._over += piece_len - max(room, 0)
                if nl >= 0 and not self._finish():
                    # over the rate: the rest of this chunk is dropped without per-line work
                    self._drop_rest(data, nl + 1)
                    return
            if nl < 0:
                break
            self._dropping = False
            start = nl + 1

    def _drop_rest(self, data: bytes, start: int) -> None:
        """Drop ``data[start:]`` and the pending line in O(1) Python steps; the line the chunk
        ends inside is dropped too (a line is emitted whole or not at all)."""
        if start >= len(data):
            return
        self._drop(len(data) - start + len(self._line) + self._over)
        self._line.clear()
        self._over = 0
        self._dropping = data[-1:] != b"\n"

    def _finish(self) -> bool:
        line = bytes(self._line)
        if self._over:
            self.cut += self._over
            line += f" [line cut: {self._over} more bytes]".encode()
        self._line.clear()
        self._over = 0
        return self._send(line)

    def flush(self) -> None:
        """Emit the pending partial line (end of a request, or before the isolate goes away),
        and a final drop notice if drops are still unannounced and the bucket allows."""
        if self._dropping:
            self._dropping = False
        elif self._line or self._over:
            self._finish()
        if self._unreported:
            self._refill()
            notice = self._notice()
            if self.tokens >= len(notice) + 1:
                self.tokens -= len(notice) + 1
                self._unreported = 0
                self.emit(notice)

    __call__ = write  # usable directly as an isolate's stdout/stderr sink


class QueueSink:
    """A non-blocking ``emit`` for :class:`LineLimiter`: lines go to a bounded in-memory queue
    that a daemon thread writes to ``stream`` (one line each, with ``prefix``). When the queue
    holds ``max_bytes`` (the stream is slow or stuck), further lines are dropped and counted in
    :attr:`dropped`; a ``"[pyworkers] N bytes of output dropped (log sink full)"`` line follows
    once it drains. :meth:`close` drains and stops the thread (waits at most ``timeout`` s)."""

    def __init__(self, stream: TextIO | Callable[[str], None], *, prefix: str = "",
                 max_bytes: int = 1 << 20):
        self._write = stream if callable(stream) and not hasattr(stream, "write") else stream.write  # type: ignore[union-attr]
        self._flush = getattr(stream, "flush", None)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self._q: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._unreported = 0
        self.dropped = 0
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pyworkers-output", daemon=True)
        self._thread.start()

    def __call__(self, line: bytes) -> None:
        with self._cv:
            if self._closed or self._size + len(line) > self.max_bytes:
                self.dropped += len(line) + 1
                self._unreported += len(line) + 1
                return
            self._q.append(line)
            self._size += len(line)
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._closed:
                    self._cv.wait()
                if not self._q and self._closed:
                    return
                line = self._q.popleft()
                self._size -= len(line)
                lost, self._unreported = self._unreported, 0
            try:
                text = self.prefix + line.decode("utf-8", "replace") + "\n"
                if lost:
                    text += f"{self.prefix}[pyworkers] {lost} bytes of output dropped (log sink full)\n"
                self._write(text)
                if self._flush:
                    self._flush()
            except Exception:  # noqa: BLE001 - a broken log stream must not kill the thread
                pass

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)
