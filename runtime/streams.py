"""Host-backed streams a guest reaches through file descriptors, and the isolate's waker.

A *stream* is an fd whose data comes from the host, not from the VFS: the serve channel (the
host<->guest event pipe of ``pyworkers serve``) today, host sockets later. The guest reads,
writes and ``poll``\\ s it like any fd; ``__syscall_poll`` (``runtime/host_poll.py``) asks each
stream for its readiness and, when nothing is ready, blocks the isolate's thread in
:meth:`Waker.wait` until a stream becomes ready, the timeout passes, or the isolate is
interrupted. That one wait is where an isolate's event loop sleeps: host events and the guest's
own timers are waited for in one place.

Readiness bits are Linux/Emscripten ``poll`` bits: :data:`POLLIN` 1, :data:`POLLOUT` 4,
:data:`POLLERR` 8, :data:`POLLHUP` 16.
"""
from __future__ import annotations

import os
import select
import threading
from collections import deque
from typing import Callable, Iterable

POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 1, 4, 8, 16, 32
EAGAIN = 6   # WASI errno numbers (Emscripten uses them)
EPIPE = 64


class StreamError(OSError):
    """A stream operation failed; ``errno`` is a WASI errno (e.g. :data:`EAGAIN`)."""


class Stream:
    """Base of host-backed fds. Subclasses implement :meth:`read`, :meth:`write`,
    :meth:`revents` and may expose :meth:`os_fd` (a real OS fd to wait on)."""

    #: ``st_mode`` type bits reported by fstat (S_IFIFO by default)
    mode = 0o010000 | 0o600

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; ``b""`` at end of stream. Raises :class:`StreamError`
        (``EAGAIN``) when nothing is available yet."""
        raise StreamError(EAGAIN, "not readable")

    def write(self, data: bytes) -> int:
        """Accept ``data``; returns the number of bytes taken."""
        raise StreamError(EPIPE, "not writable")

    def revents(self) -> int:
        """Current readiness bits (``POLLIN``/``POLLOUT``/``POLLHUP``/``POLLERR``)."""
        return POLLOUT

    def os_fd(self) -> int | None:
        """A real OS file descriptor whose readability means this stream may be ready, or
        ``None`` when the stream wakes the isolate's :class:`Waker` itself."""
        return None

    def close(self) -> None:
        """Called when the guest closes its last fd of this stream."""


class Waker:
    """Wakes one isolate's thread out of :meth:`wait` from any thread (a self-pipe, so a wait
    can also cover real OS fds such as host sockets with one ``select``)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._closed = False
        self._lock = threading.Lock()

    def wake(self) -> None:
        """Make the current or next :meth:`wait` return (thread-safe, never blocks)."""
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._w, b"\0")
            except BlockingIOError:
                pass  # the pipe is full: a wake-up is pending anyway

    def wait(self, timeout: float | None, fds: Iterable[int] = (),
             write_fds: Iterable[int] = ()) -> None:
        """Block until :meth:`wake` was called, one of ``fds`` (OS fds) is readable, one of
        ``write_fds`` writable (or in error), or ``timeout`` seconds passed (``None``: no
        limit). Spurious returns are allowed: the caller re-checks what it waits for.
        (``select.poll``, so fds above ``FD_SETSIZE`` work.)"""
        if self._closed:
            return
        p = select.poll()
        p.register(self._r, select.POLLIN)
        for fd in fds:
            p.register(fd, select.POLLIN | select.POLLPRI)
        for fd in write_fds:
            try:
                p.modify(fd, select.POLLIN | select.POLLPRI | select.POLLOUT)
            except (KeyError, FileNotFoundError):
                p.register(fd, select.POLLOUT)
        try:
            ready = p.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
        except InterruptedError:
            return
        if any(fd == self._r for fd, _ in ready):
            self.drain()

    def drain(self) -> None:
        """Forget pending wake-ups (call before re-checking readiness)."""
        try:
            while os.read(self._r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._r)
            os.close(self._w)


class Channel(Stream):
    """A duplex byte stream between the host and one isolate.

    Host -> guest: :meth:`push` (any thread) appends bytes the guest reads from its fd; the
    guest's ``poll`` sees ``POLLIN`` and the isolate's :class:`Waker` is woken.
    Guest -> host: every ``write`` by the guest is handed to ``on_write(data: bytes)`` on the
    isolate's thread, synchronously, so what the guest sends reaches the host before its
    ``write`` returns. :meth:`close_input` ends the host -> guest direction (the guest reads
    ``b""``, ``POLLHUP``).
    """

    def __init__(self, waker: Waker, on_write: Callable[[bytes], None]):
        self.waker = waker
        self.on_write = on_write
        self._chunks: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._eof = False
        #: bytes pushed but not yet read by the guest
        self.pending = 0

    def push(self, data: bytes) -> None:
        """Queue ``data`` for the guest (thread-safe) and wake the isolate."""
        if not data:
            return
        with self._lock:
            self._chunks.append(data)
            self.pending += len(data)
        self.waker.wake()

    def close_input(self) -> None:
        """End of the host -> guest direction (thread-safe)."""
        with self._lock:
            self._eof = True
        self.waker.wake()

    def read(self, n: int) -> bytes:
        with self._lock:
            if not self._chunks:
                if self._eof:
                    return b""
                raise StreamError(EAGAIN, "no data")
            out = []
            got = 0
            while self._chunks and got < n:
                c = self._chunks.popleft()
                if got + len(c) > n:
                    take = n - got
                    self._chunks.appendleft(c[take:])
                    c = c[:take]
                out.append(c)
                got += len(c)
            self.pending -= got
        return b"".join(out)

    def write(self, data: bytes) -> int:
        self.on_write(data)
        return len(data)

    def revents(self) -> int:
        with self._lock:
            bits = POLLOUT
            if self._chunks:
                bits |= POLLIN
            elif self._eof:
                bits |= POLLIN | POLLHUP
            return bits


__all__ = ["Channel", "Stream", "StreamError", "Waker", "POLLIN", "POLLOUT", "POLLERR",
           "POLLHUP", "POLLNVAL"]
