"""Hot pages: pre-fault the linear-memory pages a restored isolate is going to write anyway.

A restored isolate maps its snapshot image copy-on-write (:mod:`pyworkers.snapshot.restore`):
the first write to each 4 KiB page is a page fault in which the kernel copies the page (~1.7 µs
each on a small VM; a FastAPI app's lifespan and first request write ~1,000 pages). Those
pages are the same from one isolate of a snapshot to the next: they are learned once, from an
isolate that has served, and later isolates can take them all in a few ``madvise`` calls
(``MADV_POPULATE_WRITE``, Linux >= 5.14: the same copy-on-write, without a trap per page)
before a request needs them, e.g. while the isolate waits idle in a pool.

Learning reads ``/proc/self/pagemap`` (Documentation/admin-guide/mm/pagemap.rst in the Linux
sources: one little-endian u64 per virtual page; bit 63 present, bit 61 file-page or
shared-anonymous, bit 56 exclusively mapped): a page of the image that the isolate wrote is no
longer the file's page but a private anonymous copy (present, not file, exclusive); a page it
only read stays the file's page, and a never-written page beyond the image maps the shared zero
page (not exclusive). So the learned set is exactly what that isolate dirtied: pre-faulting it
in a later isolate adds no private memory beyond the pages that isolate dirties too, if it
behaves the same.

Everything here fails soft: without ``/proc/self/pagemap`` or ``MADV_POPULATE_WRITE``
(older kernels, other systems) learning returns ``None`` and pre-faulting does nothing. Where
the kernel allows it (Linux >= 6.13), the ranges go in one ``process_madvise`` call on this
process instead of one ``madvise`` each.
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys
import time
from typing import Any

#: ``madvise`` advice values (linux/mman.h, Linux 5.14)
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_PRESENT = 1 << 63
_FILE = 1 << 61
_EXCLUSIVE = 1 << 56

#: syscall numbers (the same on every Linux architecture since 5.1's unified table)
_SYS_PIDFD_OPEN = 434
_SYS_PROCESS_MADVISE = 440
_IOV_MAX = 1024

_madvise_fn: Any = None
_syscall_fn: Any = None
_unsupported = False
_batch_unsupported = not sys.platform.startswith("linux")
_pidfd: tuple[int, int] | None = None  # (pid, pidfd): re-opened after a fork


def _libc():
    global _madvise_fn, _syscall_fn
    if _madvise_fn is None:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        fn.restype = ctypes.c_int
        sc = libc.syscall
        sc.restype = ctypes.c_long
        _madvise_fn, _syscall_fn = fn, sc
    return _madvise_fn, _syscall_fn


def _own_pidfd(syscall) -> int:
    global _pidfd
    pid = os.getpid()
    if _pidfd is None or _pidfd[0] != pid:
        fd = syscall(_SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0))
        if fd < 0:
            return -1
        _pidfd = (pid, fd)
    return _pidfd[1]


def _populate_batched(ranges: list[tuple[int, int]], advice: int) -> int | None:
    """``process_madvise`` on this process over up to :data:`_IOV_MAX` ranges per call (one
    syscall instead of one per range: ~1 µs less per range). Linux >= 6.13 accepts any advice
    for the calling process; ``None`` when the kernel refuses (the caller falls back)."""
    global _batch_unsupported
    _madv, syscall = _libc()
    fd = _own_pidfd(syscall)
    if fd < 0:
        _batch_unsupported = True
        return None
    done = 0
    for i in range(0, len(ranges), _IOV_MAX):
        chunk = ranges[i:i + _IOV_MAX]
        flat = [x for span in chunk for x in span]  # struct iovec = {void *base; size_t len}
        iov = (ctypes.c_size_t * len(flat))(*flat)
        r = syscall(_SYS_PROCESS_MADVISE, ctypes.c_int(fd), iov, ctypes.c_size_t(len(chunk)),
                    ctypes.c_int(advice), ctypes.c_uint(0))
        if r < 0:
            if i == 0:
                _batch_unsupported = True  # older kernel: per-range madvise from now on
                return None
            return done
        done += r
    return done


def memory_range(iso) -> tuple[int, int]:
    """``(host address, length in bytes)`` of ``iso``'s linear memory as its host last saw it
    (the base never moves: wasmtime reserves the whole 4 GiB range; the length may lag a
    growth). Reads no wasmtime store, so any thread may call it."""
    mem = iso.mem
    return mem.base, mem.size


def _coalesce(pages: list[int], gap: int = 0) -> list[tuple[int, int]]:
    """Sorted page numbers -> ``[(offset, length)]`` in bytes, joining runs at most ``gap``
    pages apart."""
    out: list[tuple[int, int]] = []
    start = prev = -2 - gap
    for p in pages:
        if p - prev > gap + 1:
            if prev >= start >= 0:
                out.append((start * PAGE, (prev - start + 1) * PAGE))
            start = p
        prev = p
    if prev >= start >= 0:
        out.append((start * PAGE, (prev - start + 1) * PAGE))
    return out


def touched_ranges(addr: int, length: int, *, read_gap: int = 16
                   ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]] | None:
    """The pages of ``[addr, addr + length)`` (page-aligned ``addr``) this process has touched:
    ``(written, read)``, each ``[(offset, length)]`` in bytes from ``addr``, sorted and
    coalesced. ``written``: private anonymous pages (written after a copy-on-write mapping, or
    written anonymous memory), exact runs; ``read``: pages mapped from the file and not
    written, runs joined across gaps of up to ``read_gap`` pages (mapping an unread page of the
    file costs a page-table entry, no memory). ``None`` if ``/proc/self/pagemap`` cannot be
    read."""
    first, n = addr // PAGE, length // PAGE
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            f.seek(first * 8)
            raw = b""
            while len(raw) < n * 8:
                chunk = f.read(n * 8 - len(raw))
                if not chunk:
                    break
                raw += chunk
    except OSError:
        return None
    mask = _PRESENT | _FILE | _EXCLUSIVE
    written_bits = _PRESENT | _EXCLUSIVE
    written, read = [], []
    for i, e in enumerate(memoryview(raw).cast("Q")):
        e &= mask
        if e == written_bits:
            written.append(i)
        elif e & _FILE and e & _PRESENT:
            read.append(i)
    return _coalesce(written), _coalesce(read, read_gap)


def written_ranges(addr: int, length: int) -> list[tuple[int, int]] | None:
    """The ``written`` part of :func:`touched_ranges`."""
    t = touched_ranges(addr, length)
    return None if t is None else t[0]


def populate(addr: int, ranges: list[tuple[int, int]], limit: int,
             advice: int = MADV_POPULATE_WRITE) -> int:
    """Apply ``advice`` to each range (``(offset, length)`` from ``addr``, clipped to ``limit``
    bytes from ``addr``): one ``process_madvise`` per 1,024 ranges where the kernel allows it
    (Linux >= 6.13), else ``madvise`` per range. Returns the bytes advised, 0 when the kernel
    does not support the advice (remembered: later calls return 0 at once). Never raises for
    a kernel refusal."""
    global _unsupported
    if _unsupported or not ranges:
        return 0
    spans = []
    for off, n in ranges:
        if off >= limit:
            break
        spans.append((addr + off, min(n, limit - off)))
    if not _batch_unsupported:
        done = _populate_batched(spans, advice)
        if done is not None:
            return done
    madvise, _sc = _libc()
    done = 0
    for a, n in spans:
        if madvise(a, n, advice) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP):
                _unsupported = True  # kernel < 5.14 (or a sandbox refusing it)
                return 0
            continue  # ENOMEM/EFAULT on one range (e.g. unmapped): skip it
        done += n
    return done


class HotPages:
    """The pages isolates of one snapshot touch after restore, learned once, pre-faulted in
    later isolates. Thread-safe; one per :class:`~pyworkers.snapshot.restore.Restorer`.

    ``written``/``read`` are ``None`` until :meth:`learn` succeeded, then ``[(offset,
    length)]`` (bytes of linear memory, page-aligned; see :func:`touched_ranges`)."""

    def __init__(self, written: list[tuple[int, int]] | None = None,
                 read: list[tuple[int, int]] | None = None) -> None:
        self.written = written
        self.read = read

    @property
    def pages(self) -> int:
        """How many written pages were learned (0 before :meth:`learn`)."""
        return sum(n for _o, n in self.written or ()) // PAGE

    def learn(self, iso, *, image_size: int) -> bool:
        """Record the pages ``iso`` (restored copy-on-write from the snapshot and since used:
        lifespan, first requests) touched within the first ``image_size`` bytes of its memory
        (the image; pages beyond it are fresh heap that does not exist yet in a new isolate).
        Call while ``iso`` is idle. Returns whether anything was learned (False without
        pagemap). A later call replaces the sets."""
        addr, length = memory_range(iso)
        t = touched_ranges(addr, min(length, image_size))
        if t is None:
            return False
        self.written, self.read = t  # one assignment each: readers see old or new lists
        return True

    def prefault(self, iso, *, read: bool = True) -> dict:
        """Pre-fault the learned pages in ``iso``: ``MADV_POPULATE_READ`` over the read ranges
        (``read=True``: maps the file's pages, no copy, no private memory), then
        ``MADV_POPULATE_WRITE`` per written range (memory contents are unchanged; those pages
        become private copies now instead of at their first write). Safe while the isolate
        runs (the kernel does what a write fault would), cheapest on an idle one, off a
        request's critical path. Returns ``{"bytes": written bytes populated, "read_bytes",
        "ranges": madvise calls, "ms": time taken}``; ``bytes`` is 0 when nothing was learned
        or the kernel lacks ``MADV_POPULATE_WRITE``."""
        t0 = time.perf_counter()
        written, rd = self.written, self.read
        if not written:
            return {"bytes": 0, "read_bytes": 0, "ranges": 0, "ms": 0.0}
        addr, length = memory_range(iso)
        done_read = populate(addr, rd or [], length, MADV_POPULATE_READ) if read else 0
        done = populate(addr, written, length)
        calls = (len(rd or ()) if done_read else 0) + (len(written) if done else 0)
        return {"bytes": done, "read_bytes": done_read, "ranges": calls,
                "ms": (time.perf_counter() - t0) * 1000}
