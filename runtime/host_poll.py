"""Waiting and host streams (a mixin of :class:`pyworkers.runtime.host.Host`): ``poll(2)``
over files and host streams (:class:`~pyworkers.runtime.streams.Stream`: sockets, TLS, serve's
channel), the host-side wait that honours the isolate's deadline and interruption, and the
reference counting of stream fds. ``__syscall_poll`` is registered with
:func:`~pyworkers.runtime.host_abi.imp`."""
from __future__ import annotations

import time
from typing import Any, Callable

from pyworkers.runtime.host_abi import GuestInterrupted, imp, syscall
from pyworkers.runtime.streams import (EAGAIN, POLLHUP, POLLIN, POLLNVAL, POLLOUT, Stream,
                                        StreamError)
from pyworkers.runtime.vfs import FSError


class PollStreams:
    """``poll``, :meth:`wait` and the stream fd helpers; the host provides ``mem``, ``fds``,
    ``waker``, ``stream_refs``, ``deadline``, ``interrupted``, ``on_poll_return`` and
    ``_new_fd``."""

    # ----------------------------------------------------------------- poll, waiting
    @imp("__syscall_poll")
    @syscall
    def __syscall_poll(self, fds, nfds, timeout):
        """poll(2): files are always ready; host streams report their own readiness. When
        nothing is ready the isolate's thread waits on the host (woken by a stream, the
        timeout, the deadline or :meth:`interrupt`). ``timeout`` is in ms, -1 = no limit;
        a poll that watches no stream waits at most 1 s for -1 (nothing else can wake it)."""
        end = None if timeout < 0 else time.monotonic() + timeout / 1000.0
        while True:
            count, streams = self._poll_once(fds, nfds)
            if count or timeout == 0:
                break
            if not streams and timeout < 0:
                end = time.monotonic() + 1.0
                timeout = 1000
            remaining = None if end is None else end - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self.waker.drain()
            count, streams = self._poll_once(fds, nfds)
            if count:
                break
            # wait for readability only where the guest asked for input (a writer waiting
            # for POLLOUT must not spin on unread data), for writability where it asked
            os_fds = [f for f in (st.os_fd() for st, ev in streams
                                  if ev & POLLIN or not ev & POLLOUT) if f is not None]
            out_fds = [f for f in (st.os_fd() for st, ev in streams if ev & POLLOUT)
                       if f is not None]
            self.in_poll = True
            try:
                self.wait(remaining, os_fds, out_fds)
            finally:
                self.in_poll = False
        self.left_poll_at = time.monotonic()
        if self.on_poll_return is not None:
            self.on_poll_return()
        return count

    def _poll_once(self, fds: int, nfds: int) -> tuple[int, list[tuple[Stream, int]]]:
        count = 0
        streams = []
        for i in range(nfds):
            fd, events = self.mem.unpack("<ih", fds + 8 * i)
            of = self.fds.get(fd)
            if of is None:
                flags = POLLNVAL
            elif isinstance(of, Stream):
                streams.append((of, events))
                flags = of.revents() & (events | 8 | POLLHUP)
            else:
                flags = (POLLIN | POLLOUT) & (events | 8 | POLLHUP)
            if flags:
                count += 1
            self.mem.pack("<h", fds + 8 * i + 6, flags)
        return count, streams

    def wait(self, seconds: float | None, os_fds: list[int] | tuple = (),
             write_fds: list[int] | tuple = ()) -> None:
        """Sleep on the host for ``seconds`` (``None``: until woken) or until one of
        ``os_fds`` is readable, one of ``write_fds`` writable, or :attr:`waker` is woken; stop
        at the isolate's deadline or when it is interrupted: then raise :class:`GuestInterrupted` (the call traps; wasm
        code is interrupted by epochs instead, which cannot reach a host-side wait)."""
        if self.interrupted.is_set():
            raise GuestInterrupted("interrupted")
        claim = self.epoch
        if claim is not None:
            claim.park()  # no wasm runs while we wait: the epoch ticker may sleep
        try:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if seconds is None or left < seconds:
                    self.waker.wait(max(0.0, left), os_fds, write_fds)
                    if self.interrupted.is_set():
                        raise GuestInterrupted("interrupted")
                    if time.monotonic() >= self.deadline:
                        raise GuestInterrupted("time limit exceeded")
                    return
            self.waker.wait(seconds, os_fds, write_fds)
        finally:
            if claim is not None:
                claim.unpark()
        if self.interrupted.is_set():
            raise GuestInterrupted("interrupted")

    # ----------------------------------------------------------------- host streams
    def _stream_fd(self, stream: Stream) -> int:
        fd = self._new_fd(stream)
        self.stream_refs[stream] = self.stream_refs.get(stream, 0) + 1
        return fd

    def _stream_unref(self, stream: Stream) -> None:
        n = self.stream_refs.get(stream, 1) - 1
        if n <= 0:
            self.stream_refs.pop(stream, None)
            stream.close()
        else:
            self.stream_refs[stream] = n

    def _stream_io(self, stream: Stream, op: Callable[[Any], Any], arg: Any, events: int) -> Any:
        """``op(arg)``; a stream whose ``blocking`` attribute is true (a blocking guest socket)
        waits on the host for ``events`` instead of failing with ``EAGAIN``."""
        while True:
            try:
                return op(arg)
            except StreamError as e:
                if e.errno != EAGAIN or not getattr(stream, "blocking", False):
                    raise FSError(e.errno) from None
            fd = stream.os_fd()
            if events & POLLOUT:
                self.wait(None, (), () if fd is None else (fd,))
            else:
                self.wait(None, () if fd is None else (fd,))

    def close_streams(self) -> None:
        """Close every stream and the waker (the isolate is going away)."""
        for stream in list(self.stream_refs):
            stream.close()
        self.stream_refs.clear()
        self.waker.close()
