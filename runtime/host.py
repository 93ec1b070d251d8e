"""Host functions: the part of Emscripten's JavaScript glue that Pyodide's CPython imports.

Each import of ``pyodide.asm.wasm`` that pyworkers implements is a method registered with
:func:`imp` under the import's name; semantics mirror the release's glue (``pyodide.asm.mjs``,
Emscripten's ``library_syscall.js``, ``library_wasi.js``, ``library_fs.js``) over the sandboxed
:class:`~pyworkers.runtime.vfs.VFS` instead of Emscripten's FS. Syscalls return ``-errno``,
WASI functions return ``errno`` (WASI numbering), like the glue.

The functions are defined **once per compiled module** on a store-independent
``wasmtime.Linker`` and dispatch to the isolate running on the current thread
(:data:`current`): per-store closures that reference the host leak in wasmtime-py (its function
registry keeps them alive), see ``shared/ENGINE-FACTS.md``.

Imports of the JavaScript bridge (``Jsv*``, ``JsProxy*``, ``hiwire*``, ``python2js*``...) are stubs
that raise :class:`JsBridgeUnavailable` if ever called: nothing JavaScript runs in pyworkers.

:class:`Host` holds the per-isolate state and the fd/stdio WASI calls; its imports are grouped in
mixins: :mod:`~pyworkers.runtime.host_files` (file syscalls), :mod:`~pyworkers.runtime.host_poll`
(poll, waits, host streams), :mod:`~pyworkers.runtime.host_proc` (environment, clocks, exit,
heap); the ABI (``imp``, ``Mem``, ``current``, the exceptions) is :mod:`~pyworkers.runtime.host_abi`.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

import wasmtime

from pyworkers.runtime import ffi
from pyworkers.runtime import vfs as V
from pyworkers.runtime.engine import get_engine
from pyworkers.runtime.hostcall import define_raw
from pyworkers.runtime.streams import POLLIN, POLLOUT, Stream, Waker
from pyworkers.runtime.vfs import FSError
from pyworkers.runtime.volume import VolFile

# the ABI's names are re-exported: the isolate and the import modules use them through this one
from pyworkers.runtime.host_abi import (AT_FDCWD, HEAP_MAX, WASM_PAGE,  # noqa: F401
                                         IMPLS as _IMPLS, GuestAbort, GuestExit,
                                         GuestInterrupted, JsBridgeUnavailable, Mem, current,
                                         imp, syscall, wasi)
from pyworkers.runtime.host_files import FileSyscalls
from pyworkers.runtime.host_poll import PollStreams
from pyworkers.runtime.host_proc import ProcessCalls


class Host(FileSyscalls, PollStreams, ProcessCalls):
    """Per-isolate host state: the VFS, the fd table, environment, stdio sinks, clocks.

    ``stdout``/``stderr`` are callables receiving ``bytes`` (fd 1 and 2); ``environ`` is the
    guest's environment (``dict[str, str]``); ``stdin`` is bytes read by fd 0.
    """

    def __init__(self, fs: V.VFS, environ: dict[str, str], stdout: Callable[[bytes], None],
                 stderr: Callable[[bytes], None], stdin: bytes = b"", argv0: str = "python"):
        self.fs = fs
        self.environ = environ
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = bytearray(stdin)
        self.argv0 = argv0
        self.fds: dict[int, V.OpenFile | Stream | str] = {0: "stdin", 1: "stdout", 2: "stderr"}
        #: guest paths opened as host streams: ``{path: () -> Stream}`` (e.g. serve's channel)
        self.devices: dict[str, Callable[[], Stream]] = {}
        #: open fds per stream (a stream is closed with its last fd)
        self.stream_refs: dict[Stream, int] = {}
        #: wakes this isolate's thread out of a host-side wait (poll, sleep) from any thread
        self.waker = Waker()
        #: called each time ``poll`` returns to the guest (serve re-arms its CPU watchdog)
        self.on_poll_return: Callable[[], None] | None = None
        #: whether the guest waits in ``poll`` now, and since when it runs if not
        #: (``time.monotonic()``): read from other threads to tell a busy guest from a stuck one
        self.in_poll = False
        self.left_poll_at = time.monotonic()
        self.mem: Mem = None  # type: ignore[assignment]  # set by the isolate
        self.isolate: Any = None
        self.exit_code: int | None = None
        self.pending_exc: BaseException | None = None
        #: wall-clock deadline (``time.monotonic()`` seconds) of the current call, or None
        self.deadline: float | None = None
        #: the isolate's :class:`~pyworkers.runtime.epoch.EpochClaim`, parked while it waits here
        self.epoch: Any = None
        #: set from any thread by ``Isolate.interrupt()``; host-side waits stop at once
        self.interrupted = threading.Event()
        self.abort_message: str | None = None
        #: the egress policy (:class:`pyworkers.runtime.egress.Policy`); None = the default
        self.egress: Any = None
        #: per-isolate socket state (:class:`pyworkers.runtime.net.NetState`), made on first use
        self.net: Any = None
        self.mono_offset_ns = 0  # keeps the guest's monotonic clock increasing across a restore
        self.entropy_calls = 0
        self.entropy_bytes = 0
        self.host_calls = 0

    # ----------------------------------------------------------------- helpers
    def _of(self, fd: int) -> V.OpenFile:
        of = self.fds.get(fd)
        if of is None:
            raise FSError(V.EBADF)
        if isinstance(of, str):
            raise FSError(V.ESPIPE)
        return of

    def _path_at(self, dirfd: int, ptr: int, allow_empty: bool = False) -> str:
        path = self.mem.cstr(ptr)
        if path.startswith("/"):
            return path
        if dirfd == AT_FDCWD:
            base = self.fs.cwd
        else:
            of = self._of(dirfd)
            base = of.path
        if not path:
            if allow_empty:
                return base
            raise FSError(V.ENOENT)
        return base.rstrip("/") + "/" + path

    def _new_fd(self, of: V.OpenFile | str, lowest: int = 3) -> int:
        fd = lowest
        while fd in self.fds:
            fd += 1
        if fd >= 4096:
            raise FSError(V.EMFILE)
        self.fds[fd] = of
        return fd

    def _ref(self, of: V.OpenFile | Stream | str) -> None:
        if isinstance(of, V.OpenFile):
            of.refs += 1
        elif isinstance(of, Stream):
            self.stream_refs[of] = self.stream_refs.get(of, 0) + 1

    def _write_stat(self, buf: int, s: dict) -> int:
        mtime = s.get("mtime", 0.0)
        sec = int(mtime)
        nsec = int((mtime - sec) * 1e9)
        size = s.get("size", 0)
        self.mem.pack("<IIIIIIqii qI4x qI4x qI4x Q", buf,
                      s.get("dev", 1), s["mode"], s.get("nlink", 1), 0, 0, s.get("rdev", 0),
                      size, 4096, (size + 511) // 512,
                      sec, nsec, sec, nsec, sec, nsec, s["ino"])
        return 0

    def _stdio_stat(self, fd: int) -> dict:
        return dict(mode=V.S_IFCHR | 0o666, size=0, ino=fd + 1, mtime=0.0, nlink=1, rdev=0x500 + fd)

    # ----------------------------------------------------------------- WASI
    @imp("fd_write")
    @wasi
    def fd_write(self, fd, iov, iovcnt, pnum):
        total = 0
        chunks = []
        for i in range(iovcnt):
            ptr, ln = self.mem.unpack("<II", iov + 8 * i)
            if ln:
                chunks.append(self.mem.read(ptr, ln))
        data = b"".join(chunks)
        of = self.fds.get(fd)
        if of == "stdout":
            self.stdout(data)
            total = len(data)
        elif of == "stderr":
            self.stderr(data)
            total = len(data)
        elif of is None or of == "stdin":
            raise FSError(V.EBADF)
        elif isinstance(of, Stream):
            total = self._stream_io(of, of.write, data, POLLOUT)
        else:
            total = self.fs.write(of, data)  # type: ignore[arg-type]
        self.mem.set_u32(pnum, total)

    def _readv(self, of, iov, iovcnt, offset=None):
        total = 0
        for i in range(iovcnt):
            ptr, ln = self.mem.unpack("<II", iov + 8 * i)
            if of == "stdin":
                data = bytes(self.stdin[:ln])
                del self.stdin[:ln]
            elif isinstance(of, Stream):
                if total:
                    break  # do not block (EAGAIN) once something was read
                data = self._stream_io(of, of.read, ln, POLLIN)
            elif isinstance(of, str):
                raise FSError(V.EBADF)
            else:
                data = self.fs.read(of, ln, None if offset is None else offset + total)
            self.mem.write(ptr, data)
            total += len(data)
            if len(data) < ln:
                break
        return total

    @imp("fd_read")
    @wasi
    def fd_read(self, fd, iov, iovcnt, pnum):
        of = self.fds.get(fd)
        if of is None:
            raise FSError(V.EBADF)
        self.mem.set_u32(pnum, self._readv(of, iov, iovcnt))

    @imp("fd_pread")
    @wasi
    def fd_pread(self, fd, iov, iovcnt, offset, pnum):
        self.mem.set_u32(pnum, self._readv(self._of(fd), iov, iovcnt, offset))

    @imp("fd_pwrite")
    @wasi
    def fd_pwrite(self, fd, iov, iovcnt, offset, pnum):
        of = self._of(fd)
        total = 0
        for i in range(iovcnt):
            ptr, ln = self.mem.unpack("<II", iov + 8 * i)
            total += self.fs.write(of, self.mem.read(ptr, ln), offset + total)
        self.mem.set_u32(pnum, total)

    @imp("fd_close")
    @wasi
    def fd_close(self, fd):
        of = self.fds.pop(fd, None)
        if of is None:
            raise FSError(V.EBADF)
        if isinstance(of, V.OpenFile):
            self.fs.close(of)
        elif isinstance(of, Stream):
            self._stream_unref(of)

    @imp("fd_seek")
    @wasi
    def fd_seek(self, fd, offset, whence, pnew):
        of = self._of(fd)
        if of.node.is_dir:
            if offset == 0 and whence == 0:
                of.entries = None
            base = {0: 0, 1: of.pos}.get(whence)
            if base is None:
                raise FSError(V.EINVAL)
        else:
            base = {0: 0, 1: of.pos, 2: self.fs.size_of(of.node)}.get(whence)
            if base is None:
                raise FSError(V.EINVAL)
        pos = base + offset
        if pos < 0:
            raise FSError(V.EINVAL)
        of.pos = pos
        self.mem.set_u64(pnew, pos)

    @imp("fd_fdstat_get")
    @wasi
    def fd_fdstat_get(self, fd, buf):
        of = self.fds.get(fd)
        if of is None:
            raise FSError(V.EBADF)
        if isinstance(of, str):
            ftype = 2  # character device (tty-like)
        elif isinstance(of, Stream):
            ftype = 6  # WASI socket_stream: a host stream
        elif of.node.is_dir:
            ftype = 3
        else:
            ftype = 4
        self.mem.pack("<BxHxxxxQQ", buf, ftype, 0, 0, 0)

    @imp("fd_sync")
    @wasi
    def fd_sync(self, fd):
        of = self.fds.get(fd)
        if of is None:
            raise FSError(V.EBADF)
        if isinstance(of, V.OpenFile) and isinstance(of.node, VolFile) and of.host_fd is not None:
            os.fsync(of.host_fd)  # a volume file: durable on the host

    @imp("__syscall_statfs64", "__syscall_fstatfs64")
    @syscall
    def __syscall_statfs64(self, p, size, buf):
        self.mem.pack("<I", buf + 4, 4096)
        self.mem.pack("<qqqqq", buf + 8, 1 << 20, 1 << 19, 1 << 19, 1 << 16, 1 << 15)
        self.mem.pack("<III", buf + 56, 255, 4096, 0)

    @imp("_mmap_js")
    @syscall
    def _mmap_js(self, length, prot, flags, fd, *rest):
        of = self.fds.get(fd)
        if isinstance(of, V.OpenFile) and isinstance(of.node, VolFile) \
                and not getattr(self, "_told_mmap", False):
            # SQLite's WAL index (<db>-shm) is shared memory: isolates share no memory
            self._told_mmap = True
            self.stderr(f"pyworkers: cannot map {of.path} into memory: shared file mappings are "
                        "not supported on volumes (SQLite: keep the default rollback journal, "
                        "not journal_mode=WAL)\n".encode())
        raise FSError(V.ENODEV)

    @imp("_munmap_js", "_msync_js")
    @syscall
    def _munmap_js(self, *args):
        return 0

    # Sockets and DNS (the Emscripten socket syscalls, getaddrinfo...): runtime/net.py.

    @imp("getprotobyname")
    def _no_lookup(self, *args):
        return 0

    # Pyodide's socket helpers (EM_JS in Pyodide's C code): they handle only Node sockets and
    # report "not handled" (false / null), so the plain syscalls run (fcntl: __syscall_fcntl64
    # below; shutdown: runtime/net.py handles _try_shutdown for host sockets).
    @imp("_try_fcntl64")
    def _not_a_socket(self, *args):
        return 0

    @imp("_maybe_poll_async", "_maybe_connect_async", "_maybe_recvfrom_async", "_maybe_sendto_async")
    def _no_async_socket(self, *args):
        return None

    # hiwire's JS-side deduplication map (created by constructors; never used without JS)
    @imp("__hiwire_deduplicate_new", "__hiwire_deduplicate_get")
    def _hiwire_dedup_null(self, *args):
        return None

    @imp("__hiwire_deduplicate_set", "__hiwire_deduplicate_delete")
    def _hiwire_dedup_noop(self, *args):
        return None

    # ----------------------------------------------------------------- CPython trampolines
    @imp("_PyEM_TrampolineCall_JS")
    def _trampoline_js(self, func, a1, a2, a3):
        return self.isolate._call_table(func, a1, a2, a3)

    @imp("_PyEM_InitTrampoline_js")
    def _init_trampoline(self):
        self.isolate._install_count_args()

    @imp("_PyEM_GetCountArgsPtr")
    def _get_count_args(self):
        return self.isolate._count_args_ptr

    # ----------------------------------------------------------------- libffi (ctypes)
    @imp("ffi_call_js")
    def _ffi_call_js(self, cif, fn, rvalue, avalue):
        ffi.call(self, cif, fn, rvalue, avalue)

    @imp("ffi_closure_alloc_js")
    def _ffi_closure_alloc_js(self, size, code):
        return ffi.closure_alloc(self, size, code)

    @imp("ffi_closure_free_js")
    def _ffi_closure_free_js(self, closure):
        ffi.closure_free(self, closure)

    @imp("ffi_prep_closure_loc_js")
    def _ffi_prep_closure_loc_js(self, closure, cif, fun, user_data, codeloc):
        return ffi.prep_closure_loc(self, closure, cif, fun, user_data, codeloc)

    # ----------------------------------------------------------------- dynamic linking
    @imp("_dlopen_js")
    def _dlopen_js(self, handle):
        return self.isolate.linker.dlopen_js(handle)

    @imp("_dlsym_js")
    def _dlsym_js(self, handle, symbol, psymidx):
        return self.isolate.linker.dlsym_js(handle, self.mem.cstr(symbol), psymidx)

    @imp("_emscripten_dlopen_js")
    def _emscripten_dlopen_js(self, handle, onsuccess, onerror, user_data):
        raise JsBridgeUnavailable("asynchronous dlopen is not supported in pyworkers")


def implemented(name: str) -> Callable[..., Any] | None:
    """The implementation of import ``name`` or None."""
    return _IMPLS.get(name)


def _dispatch(name: str, fn: Callable[..., Any]):
    def call(*args):
        h = current.host
        if h is None:
            raise RuntimeError(f"host import {name} called with no isolate current on this thread")
        try:
            return fn(h, *args)
        except BaseException as e:
            # wasmtime-py carries a host function's exception across the trap in one
            # process-wide variable; keep it on this isolate too, so concurrent isolates on
            # other threads cannot swap their errors
            h.pending_exc = e
            raise

    call.__name__ = name
    return call


def _stub(name: str):
    def call(*args):
        raise JsBridgeUnavailable(
            f"{name}: the JavaScript bridge is not available in pyworkers (no JavaScript engine "
            "runs here; `js`, `pyodide.ffi` and `pyodide.http` cannot be used)")

    return call


def build_linker(module: wasmtime.Module) -> tuple[wasmtime.Linker, list[str]]:
    """A store-independent Linker with every function import of ``module`` defined.

    Returns the linker and the names that are stubs (JS bridge or unknown). Raises
    ``ValueError`` if ``module`` has non-function imports (run
    :func:`pyworkers.runtime.wasmbin.internalize_imports` at install time).
    """
    linker = wasmtime.Linker(get_engine())
    stubs = []
    for im in module.imports:
        ty = im.type
        if not isinstance(ty, wasmtime.FuncType):
            raise ValueError(f"import {im.module}.{im.name} is not a function: module not prepared")
        fn = _IMPLS.get(im.name)
        if fn is not None:
            call = _dispatch(im.name, fn)
        else:
            stubs.append(im.name)
            call = _stub(im.name)
        try:  # numbers only: the raw trampoline (see runtime/hostcall.py), else wasmtime-py's
            define_raw(linker, im.module, im.name, ty, call)
        except TypeError:
            linker.define_func(im.module, im.name, ty, call)
    return linker, stubs
