"""Isolates: one Pyodide CPython instance in its own wasmtime store, with its own VFS and host.

Typical use::

    from pyworkers.runtime import Isolate
    iso = Isolate("314.0.7")
    r = iso.run("import sys; print(sys.platform)")
    r.stdout  # b"emscripten\\n"

Boot sequence (mirrors the Emscripten glue's ``run()``: instantiate, preRun, ``initRuntime``,
``callMain``): instantiate the prepared module through the release's shared Linker, apply data
relocations (builds with a memory base), install CPython's trampoline, run
``__wasm_call_ctors``, then ``main`` (``__main_argc_argv``) with the glue's environment
(``HOME=/home/pyodide``, ``PYTHONINSPECT=1``, ...). The guest helper module
(``runtime/guest/_pyworkers_guest.py``, mounted read-only at ``/lib/pyworkers``) is then imported
and every later request goes through its ``dispatch`` function via the C API.

Exports are looked up lazily by name (``wasmtime_instance_export_get``): wrapping all ~9,700
exports eagerly costs ~1.8 s.

Parts live beside it: :mod:`~pyworkers.runtime.loaded_release` (:class:`Runtime`, a loaded
release), :mod:`~pyworkers.runtime.isolate_errors` (the errors), :mod:`~pyworkers.runtime.capi`
(the fast C-API call and reply parsing) and :mod:`~pyworkers.runtime.epoch` (time limits); this
module re-exports their public names.
"""
from __future__ import annotations

import ctypes
import dataclasses
import marshal
import os
import time
import weakref
from typing import Any, Callable

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern

from pyworkers.compat.releases import Release
from pyworkers.runtime import host as H
from pyworkers.runtime import kdf
from pyworkers.runtime import net as _net
from pyworkers.runtime import tls as _tls
from pyworkers.runtime.capi import I32Call, parse_reply
from pyworkers.runtime.engine import get_engine
from pyworkers.runtime.epoch import (EPOCH_TICK_S, NO_DEADLINE,  # noqa: F401 - part of this module's API
                                     EpochClaim, deadline_ticks)
from pyworkers.runtime.guestcode import GUEST_DIR
from pyworkers.runtime.isolate_errors import (GuestError, GuestExited, IsolateCrashed,  # noqa: F401
                                              IsolateError, explain_trap)
from pyworkers.runtime.loaded_release import Runtime
from pyworkers.runtime import vfs as V
from pyworkers.runtime.vfs import VFS

#: the host's time zone database, mounted read-only where zoneinfo looks first when the
#: isolate's layer has no ``tzdata`` package (apps without requirements)
HOST_ZONEINFO = "/usr/share/zoneinfo"
ZONEINFO_GUEST = "/usr/share/zoneinfo"
#: the guest ASGI adapter's load function (see :attr:`Isolate.loaded_app`)
ASGI_LOAD = "_pyworkers_asgi:load"
#: what the guest helper (``_pyworkers_guest``) this host boots understands; a snapshot records
#: its isolate's (its image holds the helper it was booted with): 1 = requests, the ``reseed``
#: op; 2 = also a ``reseed`` flag on any request and ``app_loaded``
GUEST_PROTOCOL = 2


@dataclasses.dataclass
class RunResult:
    """Result of :meth:`Isolate.run`: captured ``stdout``/``stderr`` (bytes), the guest's
    ``exit_code`` (0 unless ``SystemExit``), and ``value`` for eval/call requests."""

    stdout: bytes
    stderr: bytes
    exit_code: int = 0
    value: Any = None


def _default_env(rt: Runtime) -> dict[str, str]:
    return {
        "USER": "web_user", "LOGNAME": "web_user", "PATH": "/", "PWD": "/",
        "HOME": "/home/pyodide", "LANG": "C.UTF-8", "_": "/python",
        "PYTHONINSPECT": "1", "PYTHONHASHSEED": "random", "TZ": "UTC",
    }


class Isolate:
    """One sandboxed CPython.

    Args:
        release: a :class:`Release`, a Pyodide version (``"314.0.7"``) or a :class:`Runtime`.
        site_packages: host directory mounted read-only as the guest's site-packages.
        mounts: extra read-only layers ``{guest_path: host_path}`` (e.g. the app directory).
        env: extra environment variables for the guest.
        stdout, stderr: sinks for the guest's fd 1/2 (``bytes -> None``); by default output is
            captured per request and returned in :class:`RunResult`, at most ``capture_limit``
            bytes per stream and request (the rest is dropped and counted in a last line,
            ``[pyworkers] N bytes of output dropped (capture limit)``). For logging guest output
            use :class:`pyworkers.runtime.output.LineLimiter` as the sink.
        tmp_cap: byte cap of the writable in-memory ``/tmp`` (default 64 MiB).
        memory_limit: cap of linear memory in bytes (``None``: 4 GiB).
        cwd: initial working directory in the guest.
        egress: the outbound network policy (:class:`pyworkers.runtime.egress.Policy`);
            ``None``: the default (public internet only). Also settable later as
            ``isolate.host.egress`` (e.g. after a snapshot restore).

    Raises :class:`IsolateCrashed` if the interpreter fails to start.

    Attributes: ``loaded_app`` is ``(target, path)`` (e.g. ``("main:app", "/app")``) when the
    guest ASGI adapter already has that app loaded: set by a successful
    ``call("_pyworkers_asgi:load", target, path)`` and, in an isolate restored from a snapshot,
    from what the snapshot recorded (:attr:`pyworkers.snapshot.Restorer.loaded_app`); ``None``
    otherwise (load it before serving). A caller may skip the (idempotent) load when it equals
    what it would pass.
    """

    def __init__(self, release: Release | str | Runtime | None = None, *,
                 site_packages: str | os.PathLike | None = None,
                 mounts: dict[str, str | os.PathLike] | None = None,
                 env: dict[str, str] | None = None,
                 stdout: Callable[[bytes], None] | None = None,
                 stderr: Callable[[bytes], None] | None = None,
                 tmp_cap: int = 64 << 20, memory_limit: int | None = None,
                 cwd: str | None = None, cache_dir: str | os.PathLike | None = None,
                 capture_limit: int = 64 << 20, egress: Any = None, _restore: Any = None):
        t0 = time.perf_counter()
        if _restore is not None:
            self.runtime = _restore.runtime
        else:
            self.runtime = release if isinstance(release, Runtime) else Runtime.get(release, cache_dir=cache_dir)
        rt = self.runtime
        self.layers: dict[str, str] = {
            rt.stdlib_guest_path: str(rt.stdlib_zip),
            "/lib/pyworkers": str(GUEST_DIR),
        }
        if site_packages:
            self.layers[rt.site_packages_guest_path] = str(site_packages)
        self.layers.update({k: str(v) for k, v in (mounts or {}).items()})
        # an IANA time zone database for zoneinfo: the lock's pinned tzdata wheel when the
        # layer has it (deploy adds it to every resolution), else the host's, read-only
        if not (site_packages and os.path.isdir(os.path.join(str(site_packages), "tzdata"))) \
                and os.path.isdir(HOST_ZONEINFO) and ZONEINFO_GUEST not in self.layers:
            self.layers[ZONEINFO_GUEST] = HOST_ZONEINFO
        self.fs = VFS(self.layers, tmp_cap=tmp_cap)
        if rt.site_packages_guest_path not in self.layers:
            self.fs._mkdir_p(rt.site_packages_guest_path)
        self._captured: dict[int, list[bytes]] = {1: [], 2: []}
        self.capture_limit = capture_limit
        self._capture_room = {1: capture_limit, 2: capture_limit}
        self._capture_dropped = {1: 0, 2: 0}
        environ = _default_env(rt)
        environ.update(env or {})
        self.host = H.Host(self.fs, environ,
                           stdout or (lambda b: self._capture(1, b)),
                           stderr or (lambda b: self._capture(2, b)))
        self.host.isolate = self
        self.host.egress = egress
        # the text of the last connect the egress policy refused (read by the guest's socket patch)
        self.fs.add_dynamic("/dev/pyworkers/net-error", lambda: _net.net_error(self.host))
        # TLS by the host: the device, CPython's ssl.py and the host OpenSSL's constants
        _tls.register(self.host)
        self.fs.add_dynamic("/dev/pyworkers/ssl.py", _tls.host_ssl_source)
        self.fs.add_dynamic("/dev/pyworkers/ssl-constants", _tls.host_ssl_constants)
        # the host's entropy counter, read by the guest to attribute entropy use to modules
        self.fs.add_dynamic("/dev/pyworkers/entropy", lambda: str(self.host.entropy_calls).encode())
        # hashlib.pbkdf2_hmac / scrypt computed on the host's OpenSSL (runtime/kdf.py)
        self.fs.add_service(kdf.DEVICE, kdf.handle)
        self.dead: str | None = None
        #: set by a snapshot restore: the next request carries ``reseed`` (see :meth:`request`)
        self._reseed_pending = False
        #: the :data:`GUEST_PROTOCOL` of the guest helper in this isolate's memory
        self.guest_protocol = GUEST_PROTOCOL
        #: ``(target, path)`` of the last successful ``_pyworkers_asgi:load`` call in this
        #: isolate (or the one its snapshot recorded), ``None`` if none: see :attr:`loaded_app`
        self.loaded_app: tuple[str, str | None] | None = None
        self._exports: dict[str, Any] = {}
        self._fast: dict[str, I32Call] = {}
        self._cstrs: dict[str, int] = {}
        self._count_args_ptr = 0
        #: table slots this host added after instantiation: ``[(index, origin)]`` where origin is
        #: ``("trampoline_call",)``, ``("count_args",)``, ``("main", export)`` or
        #: ``("lib", library_index, export)``, ``("ffi_closure", address, layout)`` or
        #: ``("ffi_free",)`` (ctypes closures, :mod:`pyworkers.runtime.ffi`); a snapshot restore
        #: re-creates them identically.
        self.table_log: list[tuple[int, tuple]] = []
        self.store = wasmtime.Store(get_engine())
        self.store.set_epoch_deadline(NO_DEADLINE)
        #: this store's claim on the epoch ticker (armed by set_timeout/watch_cpu, parked by
        #: the host while the guest waits); released at close, or when the isolate is collected
        self.epoch = EpochClaim(self.store)
        self._release_epoch = weakref.finalize(self, self.epoch.release)
        self.host.epoch = self.epoch
        self.memory_limit = memory_limit
        if memory_limit:
            self.store.set_limits(memory_size=memory_limit)
        from pyworkers.runtime.dylink import DynamicLinker

        self.linker = DynamicLinker(self)
        self.timings: dict[str, float] = {}
        if _restore is not None:
            with self._entered():
                _restore._restore_into(self)
            self.timings["restore_ms"] = (time.perf_counter() - t0) * 1000
            return
        with self._entered():
            if rt.pre is not None:
                self.instance = rt.pre.instantiate(self.store)
            else:
                self.instance = rt.linker.instantiate(self.store, rt.module)
            self._bind_memory()
            self.timings["instantiate_ms"] = (time.perf_counter() - t0) * 1000
            if "memory_base" in rt.layout:
                self._export("__wasm_apply_data_relocs")(self.store)
            else:
                self._install_trampoline_call()
            self._export("__wasm_call_ctors")(self.store)
            t1 = time.perf_counter()
            self._main(cwd)
            self.timings["main_ms"] = (time.perf_counter() - t1) * 1000
        self._dispatch = self._import_guest_helper()
        self.timings["boot_ms"] = (time.perf_counter() - t0) * 1000

    def _bind_memory(self) -> None:
        self.memory: wasmtime.Memory = self._export("memory")
        self.table: wasmtime.Table = self._export("__indirect_function_table")
        self.host.mem = self.mem = H.Mem(self.memory, self.store)

    # ------------------------------------------------------------------ plumbing
    def _export(self, name: str) -> Any:
        ex = self._exports.get(name)
        if ex is None:
            item = ffi.wasmtime_extern_t()
            b = name.encode()
            if not ffi.wasmtime_instance_export_get(self.store._context(), ctypes.byref(self.instance._instance),
                                                    b, len(b), ctypes.byref(item)):
                raise KeyError(f"export {name!r} not found in {self.runtime.release.pyodide_version}")
            ex = wrap_extern(item)
            self._exports[name] = ex
        return ex

    def data_address(self, name: str) -> int:
        """Absolute address of exported data symbol ``name`` (adds the memory base for builds
        whose exported addresses are relative to it)."""
        return self._export(name).value(self.store) + self.runtime.memory_base

    class _Enter:
        __slots__ = ("iso", "prev")

        def __init__(self, iso):
            self.iso = iso

        def __enter__(self):
            if self.iso.dead:
                raise IsolateCrashed(f"isolate is dead ({self.iso.dead})")
            self.prev = H.current.host
            H.current.host = self.iso.host
            self.iso.host.pending_exc = None

        def __exit__(self, et, ev, tb):
            H.current.host = self.prev
            if ev is None:
                return False
            iso = self.iso
            pending, iso.host.pending_exc = iso.host.pending_exc, None
            if pending is not None and isinstance(ev, (wasmtime.Trap, wasmtime.WasmtimeError, H.GuestExit,
                                                       H.GuestAbort, H.JsBridgeUnavailable,
                                                       H.GuestInterrupted)):
                ev = pending  # this isolate's own host exception (see host._dispatch)
            if isinstance(ev, H.GuestExit):
                iso.dead = f"exited with status {ev.code}"
                raise GuestExited(ev.code) from None
            if isinstance(ev, (H.GuestAbort, H.JsBridgeUnavailable)):
                crash = str(ev)
            elif isinstance(ev, (wasmtime.Trap, wasmtime.WasmtimeError)):
                crash = explain_trap(ev)
            elif isinstance(ev, H.GuestInterrupted):
                crash = f"wasm trap: interrupted ({ev})"
            else:
                crash = None
            if crash is not None:
                iso.dead = crash
                iso.epoch.release()  # a dead store needs no ticks
                raise IsolateCrashed(crash) from None
            if isinstance(ev, (IsolateError, KeyboardInterrupt)):
                return False
            iso.dead = f"host error: {ev!r}"
            return False

    def _entered(self) -> "_Enter":
        return Isolate._Enter(self)

    def _call(self, name: str, *args) -> Any:
        """Call exported function ``name`` with i32 arguments (fast path, see
        :class:`~pyworkers.runtime.capi.I32Call`)."""
        fn = self._fast.get(name)
        if fn is None:
            fn = self._fast[name] = I32Call(self, name)
        return fn(*args)

    def _call_table(self, index: int, *args) -> Any:
        fn = self.table.get(self.store, index)
        if fn is None:
            raise wasmtime.WasmtimeError(f"call to null function pointer {index}")
        return fn(self.store, *args)

    def malloc(self, n: int) -> int:
        p = self._call("malloc", n)
        if not p:
            raise IsolateCrashed("guest malloc failed (out of memory)")
        return p

    def free(self, p: int) -> None:
        self._call("free", p)

    def _static_cstr(self, s: str) -> int:
        p = self._cstrs.get(s)
        if p is None:
            b = s.encode() + b"\0"
            p = self.malloc(len(b))
            self.mem.write(p, b)
            self._cstrs[s] = p
        return p

    def _add_function(self, func: wasmtime.Func, origin: tuple) -> int:
        """Append ``func`` to the function table (the glue's ``addFunction``); ``origin`` is
        recorded in :attr:`table_log` for snapshots."""
        idx = self.table.grow(self.store, 1, None)
        self.table.set(self.store, idx, func)
        self.table_log.append((idx, origin))
        return idx

    def _install_trampoline_call(self) -> None:
        inst = wasmtime.Instance(self.store, self.runtime.trampoline, [self.memory, self.table])
        fn = inst.exports(self.store)["trampoline_call"]
        idx = self._add_function(fn, ("trampoline_call",))
        offset = self.mem.i32(self.data_address("_PyEM_EMSCRIPTEN_TRAMPOLINE_OFFSET"))
        self.mem.set_i32(self.data_address("_PyRuntime") + offset, idx)

    def _install_count_args(self) -> None:
        inst = wasmtime.Instance(self.store, self.runtime.trampoline, [self.table])
        idx = self._add_function(inst.exports(self.store)["f"], ("count_args",))
        self._count_args_ptr = idx
        offset = self.mem.i32(self.data_address("_PyEM_EMSCRIPTEN_COUNT_ARGS_OFFSET"))
        self.mem.set_i32(self.data_address("_PyRuntime") + offset, idx)

    def _main(self, cwd: str | None) -> None:
        if cwd:
            self.fs.cwd = self.fs.abspath(cwd)
        argv0 = self._static_cstr("python")
        argv = self.malloc(8)
        self.mem.pack("<II", argv, argv0, 0)
        rc = self._call("__main_argc_argv", 1, argv)
        if rc != 0:
            err = b"".join(self._captured[2]).decode(errors="replace")
            self.dead = f"interpreter start-up failed with status {rc}"
            raise IsolateCrashed(f"{self.dead}: {err.strip()[-2000:]}")

    def _c_string_call(self, fn: str, s: str, *before: int) -> int:
        """Call C function ``fn(*before, <s as a NUL-terminated guest string>)``."""
        b = s.encode() + b"\0"
        p = self.malloc(len(b))
        try:
            self.mem.write(p, b)
            return self._call(fn, *before, p)
        finally:
            self.free(p)

    def _import_guest_helper(self) -> int:
        with self._entered():
            rc = self._c_string_call(
                "PyRun_SimpleString",
                "import sys\nsys.path.insert(0, '/lib/pyworkers')\nimport _pyworkers_guest\n")
            if rc != 0:
                err = b"".join(self._captured[2]).decode(errors="replace")
                self.dead = "guest helper failed to import"
                raise IsolateCrashed(f"{self.dead}: {err.strip()[-2000:]}")
            mod = self._c_string_call("PyImport_ImportModule", "_pyworkers_guest")
            fn = self._c_string_call("PyObject_GetAttrString", "dispatch", mod)
            self._call("Py_DecRef", mod)
            if not fn:
                raise IsolateCrashed("guest helper has no attribute dispatch")
            self._drain()
            return fn

    def _capture(self, fd: int, data: bytes) -> None:
        room = self._capture_room[fd]
        if len(data) > room:
            self._capture_dropped[fd] += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        if data:
            self._captured[fd].append(data)
            self._capture_room[fd] = room - len(data)

    def _drain(self) -> tuple[bytes, bytes]:
        for fd in (1, 2):
            if self._capture_dropped[fd]:
                self._captured[fd].append(f"\n[pyworkers] {self._capture_dropped[fd]} bytes of output "
                                          "dropped (capture limit)\n".encode())
            self._capture_room[fd] = self.capture_limit
            self._capture_dropped[fd] = 0
        out, err = b"".join(self._captured[1]), b"".join(self._captured[2])
        self._captured[1].clear()
        self._captured[2].clear()
        return out, err

    # ------------------------------------------------------------------ requests
    def request(self, req: dict) -> tuple[dict, bytes, bytes]:
        """Send one request to the guest helper; returns (reply, stdout, stderr).

        Raises :class:`IsolateCrashed`/:class:`GuestExited` if the isolate dies.
        """
        if self._reseed_pending:  # a restored isolate: reseed before any guest code runs
            req = {**req, "reseed": True}
            self._reseed_pending = False
        raw = marshal.dumps(req)
        with self._entered():
            # 7 crossings: the argument is built in place (no malloc/free, no args tuple)
            arg = self._call("PyBytes_FromStringAndSize", 0, len(raw))
            if not arg:
                self._call("PyErr_Clear")
                raise IsolateCrashed("guest malloc failed (out of memory)")
            self.mem.write(self._call("PyBytes_AsString", arg), raw)
            res = self._call("PyObject_CallOneArg", self._dispatch, arg)
            self._call("Py_DecRef", arg)
            if not res:
                self._call("PyErr_Print")
                out, err = self._drain()
                text = err.decode(errors="replace")
                if "MemoryError" in text:
                    self.dead = (f"out of memory: linear memory is {self.memory_size() >> 20} MiB"
                                 + (f" (limit {self.memory_limit >> 20} MiB)" if self.memory_limit else ""))
                else:
                    self.dead = "guest dispatch failed: " + text.strip()[-2000:]
                raise IsolateCrashed(self.dead)
            ptr = self._call("PyBytes_AsString", res)
            n = self._call("PyBytes_Size", res)
            data = self.mem.read(ptr, n)
            self._call("Py_DecRef", res)
        out, err = self._drain()
        try:
            reply = parse_reply(data)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise IsolateCrashed(f"guest sent a malformed reply ({e})") from None
        return reply, out, err

    def _result(self, req: dict) -> RunResult:
        reply, out, err = self.request(req)
        if "exit" in reply:
            return RunResult(out, err, exit_code=reply["exit"])
        if not reply.get("ok"):
            raise GuestError(reply.get("type", "Error"), reply.get("message", ""),
                             reply.get("traceback", ""), out, err)
        return RunResult(out, err, 0, reply.get("value"))

    def run(self, code: str, filename: str = "<string>") -> RunResult:
        """Execute ``code`` in the guest's ``__main__``.

        Returns stdout/stderr captured during the call and the exit code (``SystemExit``).
        Raises :class:`GuestError` (guest traceback) on an uncaught exception, and
        :class:`IsolateCrashed` when the isolate traps (it is then dead).
        """
        return self._result({"op": "run", "code": code, "filename": filename})

    def eval(self, expr: str) -> str:
        """``repr()`` of evaluating ``expr`` in the guest's ``__main__``."""
        return self._result({"op": "eval", "code": expr}).value

    def import_module(self, name: str) -> RunResult:
        """Import module ``name`` in the guest (raises :class:`GuestError` on failure)."""
        return self._result({"op": "import", "name": name})

    def call(self, target: str, *args, **kwargs) -> Any:
        """Call guest function ``"module:function"`` with marshal-able arguments; returns its
        result, which must be made of literals (str, bytes, numbers, None, list, tuple, dict).

        A successful ``call("_pyworkers_asgi:load", target, path)`` sets :attr:`loaded_app`."""
        value = self._result({"op": "call", "target": target, "args": list(args), "kwargs": kwargs}).value
        if target == ASGI_LOAD:
            bound = dict(zip(("target", "path"), args), **kwargs)
            if isinstance(bound.get("target"), str):
                self.loaded_app = (bound["target"], bound.get("path"))
        return value

    def set_timeout(self, seconds: float | None) -> None:
        """Interrupt guest execution after ``seconds`` of wall time from now (``None``: never).

        Uses wasmtime epoch interruption: the guest traps (:class:`IsolateCrashed`, "interrupted
        (time limit exceeded)") at its next epoch check once the deadline passed, and the
        isolate is dead. Granularity :data:`EPOCH_TICK_S`. Call between requests, from the
        thread that runs the isolate.
        """
        if seconds is None:
            self.epoch.disarm()
            self.host.deadline = None
            return
        self.host.deadline = deadline = time.monotonic() + seconds
        self.epoch.arm(deadline_ticks(seconds), deadline)

    def watch_cpu(self, seconds: float | None, also: Callable[[], None] | None = None) -> None:
        """CPU watchdog for an isolate that runs its own event loop: trap (epoch interruption)
        once guest code has run ``seconds`` of wall time without coming back to ``poll`` (a
        loop stuck in CPU, no await). Waiting in ``poll`` never counts. ``also`` runs on the
        isolate's thread at every return from ``poll`` (e.g. a memory check). ``None``
        turns the watchdog off. Call from the thread that runs the isolate."""
        if seconds is None:
            self.host.on_poll_return = also
            self.epoch.disarm()
            return
        ticks = deadline_ticks(seconds)
        claim = self.epoch

        def rearm() -> None:
            claim.rearm(ticks)
            if also is not None:
                also()

        self.host.on_poll_return = rearm
        claim.arm(ticks)

    def interrupt(self) -> None:
        """Stop the isolate's current host-side wait (``poll``/sleep timeouts) from any thread:
        the call traps with "interrupted" and the isolate is dead. Running wasm code is stopped
        by :meth:`set_timeout`'s deadline instead (wasmtime stores are single-threaded)."""
        self.host.interrupted.set()
        self.host.waker.wake()

    @property
    def at_memory_limit(self) -> bool:
        """True when linear memory cannot grow by another 1 MiB under ``memory_limit``: the
        isolate should be replaced after its current request. Linear memory never shrinks, so
        an isolate that once reached its limit stays flagged even if the guest freed the
        memory again."""
        return bool(self.memory_limit) and self.memory_size() + (1 << 20) > self.memory_limit

    def memory_size(self) -> int:
        """Current linear memory size in bytes."""
        return self.memory.data_len(self.store)

    def close(self) -> None:
        """Drop the store (linear memory and instance) now; the isolate cannot be used after.

        Breaks the isolate's reference cycles (host, dynamic linker, memory view) so the store
        is freed immediately by reference counting instead of by a later garbage collection
        (which would otherwise unmap memory in the middle of some other isolate's work).
        """
        self.dead = self.dead or "closed"
        if getattr(self, "_release_epoch", None) is not None:
            self._release_epoch()
            self.epoch.store = None
        self._exports.clear()
        self._fast.clear()
        if getattr(self, "host", None) is not None:
            for of in list(self.host.fds.values()):
                if isinstance(of, V.OpenFile):
                    self.fs.close(of)
            self.host.fds.clear()
            self.host.close_streams()
            locks = getattr(self.fs, "locks", None)
            if locks is not None:
                locks.release_all()
            self.host.isolate = None
            self.host.mem = None  # type: ignore[assignment]
        if getattr(self, "linker", None) is not None:
            self.linker.loaded.clear()
            self.linker.by_handle.clear()
            self.linker.by_name.clear()
            self.linker.got.clear()
            self.linker.iso = None  # type: ignore[assignment]
        self.mem = None  # type: ignore[assignment]
        self.memory = None  # type: ignore[assignment]
        self.table = None  # type: ignore[assignment]
        self.instance = None  # type: ignore[assignment]
        self.store = None  # type: ignore[assignment]

    def __enter__(self) -> "Isolate":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
