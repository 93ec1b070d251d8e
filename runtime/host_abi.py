"""The host-function ABI shared by the modules that implement Pyodide's imports
(``runtime/host.py``, ``host_files.py``, ``net.py``, ``dns.py``, ``ffi.py``...): the import
registry (:func:`imp`), errno conventions (:data:`syscall` returns ``-errno``, :data:`wasi`
``errno``, like Emscripten's glue), the guest-memory view :class:`Mem`, the thread-local
:data:`current` isolate host and the exceptions host functions raise to end a call."""
from __future__ import annotations

import ctypes
import struct
import threading
from typing import Any, Callable

import wasmtime

from pyworkers.runtime import vfs as V
from pyworkers.runtime.vfs import FSError

#: import name -> implementation ``fn(host, *args)`` (filled by :func:`imp`)
IMPLS: dict[str, Callable[..., Any]] = {}


def imp(*names: str):
    """Register the decorated method as the implementation of import(s) ``names``."""

    def deco(fn):
        for n in names:
            IMPLS[n] = fn
        return fn

    return deco


class JsBridgeUnavailable(RuntimeError):
    """A JavaScript-bridge import was called: there is no JavaScript engine in pyworkers."""


class GuestExit(Exception):
    """Raised inside a host function when the guest calls ``exit``/``proc_exit``."""

    def __init__(self, code: int):
        super().__init__(f"guest exited with status {code}")
        self.code = code


class GuestAbort(Exception):
    """The guest called ``abort()`` (or failed an assertion)."""


class GuestInterrupted(Exception):
    """A host-side wait reached the isolate's deadline, or :meth:`Isolate.interrupt` was called."""


class _Current(threading.local):
    host: Any = None  #: the running isolate's :class:`~pyworkers.runtime.host.Host`


#: The host of the isolate executing on this thread (set by Isolate around every guest call).
current = _Current()

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EMPTY_PATH = 0x1000
HEAP_MAX = 4294901760  # the glue's getHeapMax(): 4 GiB - 64 KiB
WASM_PAGE = 65536


class Mem:
    """Typed access to an instance's linear memory through a ctypes view of its base address.

    wasmtime reserves the full 4 GiB range for a 32-bit memory, so the base does not move on
    growth; the view is rebuilt when the size changes. Out-of-range guest pointers raise
    :class:`FSError` (``EFAULT``) instead of touching host memory.
    """

    def __init__(self, memory: wasmtime.Memory, store: wasmtime.Store):
        self.memory = memory
        self.store = store
        self.size = 0
        self.refresh()

    def refresh(self) -> None:
        size = self.memory.data_len(self.store)
        ptr = self.memory.data_ptr(self.store)
        self.base = ctypes.cast(ptr, ctypes.c_void_p).value or 0
        self.size = size
        self.buf = (ctypes.c_ubyte * size).from_address(self.base)

    def check(self, addr: int, n: int) -> None:
        if addr < 0 or addr + n > self.size:
            self.refresh()
            if addr < 0 or addr + n > self.size:
                raise FSError(V.EFAULT, f"bad guest pointer {addr:#x}+{n}")

    def read(self, addr: int, n: int) -> bytes:
        self.check(addr, n)
        return ctypes.string_at(self.base + addr, n)

    def write(self, addr: int, data: bytes) -> None:
        self.check(addr, len(data))
        ctypes.memmove(self.base + addr, data, len(data))

    def cstr(self, addr: int, limit: int = 1 << 20) -> str:
        """The NUL-terminated string at ``addr`` (at most ``limit`` bytes, never past the end
        of memory). Reads 256 bytes first, then 16x more until the NUL: a path costs one small
        copy instead of a ``limit``-sized one."""
        self.check(addr, 1)
        end = min(self.size, addr + limit)
        n = 256
        while True:
            stop = min(end, addr + n)
            raw = ctypes.string_at(self.base + addr, stop - addr)
            i = raw.find(b"\0")
            if i >= 0 or stop >= end:
                return (raw if i < 0 else raw[:i]).decode("utf-8", "surrogateescape")
            n *= 16

    def write_cstr(self, addr: int, s: str | bytes, maxlen: int) -> int:
        """Write NUL-terminated ``s`` truncated to ``maxlen`` bytes (incl. NUL); returns bytes
        written excluding the NUL (``stringToUTF8`` semantics)."""
        b = s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s
        if maxlen <= 0:
            return 0
        b = b[: maxlen - 1]
        self.write(addr, b + b"\0")
        return len(b)

    def u32(self, addr: int) -> int:
        self.check(addr, 4)
        return struct.unpack_from("<I", self.buf, addr)[0]

    def i32(self, addr: int) -> int:
        self.check(addr, 4)
        return struct.unpack_from("<i", self.buf, addr)[0]

    def set_u32(self, addr: int, v: int) -> None:
        self.check(addr, 4)
        struct.pack_into("<I", self.buf, addr, v & 0xFFFFFFFF)

    def set_i32(self, addr: int, v: int) -> None:
        self.check(addr, 4)
        struct.pack_into("<i", self.buf, addr, v)

    def set_u64(self, addr: int, v: int) -> None:
        self.check(addr, 8)
        struct.pack_into("<Q", self.buf, addr, v & 0xFFFFFFFFFFFFFFFF)

    def pack(self, fmt: str, addr: int, *vals) -> None:
        self.check(addr, struct.calcsize(fmt))
        struct.pack_into(fmt, self.buf, addr, *vals)

    def unpack(self, fmt: str, addr: int) -> tuple:
        self.check(addr, struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.buf, addr)


def _errno_of(e: BaseException) -> int:
    if isinstance(e, FSError):
        return e.errno
    if isinstance(e, OSError):
        return V._HOST_TO_WASI.get(e.errno or 0, V.EIO)
    raise e


def _errno_result(sign: int):
    """Decorator factory: a body's :class:`FSError`/``OSError`` becomes ``sign * errno``
    (``-1``: Emscripten syscalls return ``-errno``; ``+1``: WASI calls return ``errno``);
    ``None`` becomes 0."""

    def deco(fn):
        def wrapper(self, *args):
            try:
                r = fn(self, *args)
                return 0 if r is None else r
            except (FSError, OSError) as e:
                return sign * _errno_of(e)

        wrapper.__name__ = fn.__name__
        return wrapper

    return deco


#: Wrap a syscall body (``-errno`` on error) / a WASI call body (``errno`` on error).
syscall = _errno_result(-1)
wasi = _errno_result(+1)
