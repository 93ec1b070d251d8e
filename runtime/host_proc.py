"""Process-facing imports of the host (a mixin of :class:`pyworkers.runtime.host.Host`): the
environment, clocks and time conversion, entropy, exit/abort, heap growth, signals and the
small process stubs of Emscripten's glue (``library_wasi.js``, ``library_syscall.js``,
``library.js``). Each method is registered with :func:`~pyworkers.runtime.host_abi.imp` under
its import's name."""
from __future__ import annotations

import secrets
import time

import wasmtime

from pyworkers.runtime import vfs as V
from pyworkers.runtime.host_abi import HEAP_MAX, WASM_PAGE, GuestAbort, GuestExit, imp, wasi
from pyworkers.runtime.vfs import FSError


class ProcessCalls:
    """Environment, clock, entropy, exit and heap imports; the host provides ``mem``,
    ``environ``, ``argv0``, ``stderr``, ``mono_offset_ns``, the entropy counters and
    ``isolate``."""

    # ----------------------------------------------------------------- environment, clocks
    @imp("environ_sizes_get")
    @wasi
    def environ_sizes_get(self, pcount, psize):
        strings = self._env_strings()
        self.mem.set_u32(pcount, len(strings))
        self.mem.set_u32(psize, sum(len(s) + 1 for s in strings))

    def _env_strings(self) -> list[bytes]:
        return [f"{k}={v}".encode("utf-8", "surrogateescape") for k, v in self.environ.items()]

    @imp("environ_get")
    @wasi
    def environ_get(self, penv, pbuf):
        off = 0
        for i, s in enumerate(self._env_strings()):
            self.mem.set_u32(penv + 4 * i, pbuf + off)
            self.mem.write(pbuf + off, s + b"\0")
            off += len(s) + 1

    @imp("clock_time_get")
    @wasi
    def clock_time_get(self, clk, precision, ptime):
        if clk == 0:
            ns = time.time_ns()
        elif clk in (1, 2, 3):
            ns = self.monotonic_ns()
        else:
            raise FSError(V.EINVAL)
        self.mem.set_u64(ptime, ns)

    @imp("clock_res_get")
    @wasi
    def clock_res_get(self, clk, pres):
        self.mem.set_u64(pres, 1000)

    @imp("random_get")
    @wasi
    def random_get(self, buf, size):
        self.entropy_calls += 1
        self.entropy_bytes += size
        self.mem.write(buf, secrets.token_bytes(size))

    @imp("proc_exit", "exit")
    def proc_exit(self, code):
        self.exit_code = code
        raise GuestExit(code)

    # ----------------------------------------------------------------- time
    @imp("emscripten_date_now")
    def emscripten_date_now(self):
        return time.time() * 1000.0

    def monotonic_ns(self) -> int:
        """The guest's monotonic clock (ns): the host's, shifted so it never goes backwards
        across a snapshot restore (see ``mono_offset_ns``)."""
        return time.monotonic_ns() + self.mono_offset_ns

    @imp("emscripten_get_now")
    def emscripten_get_now(self):
        return self.monotonic_ns() / 1e6

    def _write_tm(self, ptr, t: time.struct_time, gmtoff: int):
        self.mem.pack("<iiiiiiiiii", ptr, t.tm_sec, t.tm_min, t.tm_hour, t.tm_mday, t.tm_mon - 1,
                      t.tm_year - 1900, (t.tm_wday + 1) % 7, t.tm_yday - 1, max(t.tm_isdst, 0), gmtoff)

    @imp("_localtime_js")
    def _localtime_js(self, t, ptr):
        lt = time.localtime(t)
        self._write_tm(ptr, lt, lt.tm_gmtoff or 0)

    @imp("_gmtime_js")
    def _gmtime_js(self, t, ptr):
        self._write_tm(ptr, time.gmtime(t), 0)

    def _read_tm(self, ptr):
        sec, mn, hour, mday, mon, year, _, _, isdst = self.mem.unpack("<iiiiiiiii", ptr)
        return (year + 1900, mon + 1, mday, hour, mn, sec, 0, 0, isdst)

    @imp("_mktime_js")
    def _mktime_js(self, ptr):
        try:
            t = time.mktime(self._read_tm(ptr))
        except (OverflowError, ValueError):
            return -1
        self._write_tm(ptr, time.localtime(t), time.localtime(t).tm_gmtoff or 0)
        return int(t)

    @imp("_timegm_js")
    def _timegm_js(self, ptr):
        import calendar

        try:
            t = calendar.timegm(self._read_tm(ptr))
        except (OverflowError, ValueError):
            return -1
        self._write_tm(ptr, time.gmtime(t), 0)
        return int(t)

    @imp("_tzset_js")
    def _tzset_js(self, ptimezone, pdaylight, std_name, dst_name):
        # Isolates run in UTC unless TZ says otherwise; like the glue, names are "UTC+hhmm".
        self.mem.set_u32(ptimezone, 0)
        self.mem.set_i32(pdaylight, 0)
        self.mem.write_cstr(std_name, "UTC", 17)
        self.mem.write_cstr(dst_name, "UTC", 17)

    # ----------------------------------------------------------------- heap, process
    @imp("emscripten_get_heap_max")
    def emscripten_get_heap_max(self):
        return HEAP_MAX

    @imp("emscripten_resize_heap")
    def emscripten_resize_heap(self, requested):
        """The glue's growth policy: over-grow by 20% (capped at +96 MiB), 64 KiB aligned."""
        old = self.mem.memory.data_len(self.mem.store)
        if requested > HEAP_MAX:
            return 0
        sizes = []
        cut = 1
        while cut <= 4:
            over = min(old * (1 + 0.2 / cut), requested + 100663296)
            sizes.append(min(HEAP_MAX, _align(max(requested, int(over)), WASM_PAGE)))
            cut *= 2
        # unlike the glue, finally try the exact size: under a memory limit the over-grown
        # sizes can all fail while the request itself still fits
        sizes.append(_align(requested, WASM_PAGE))
        for new in sizes:
            if new <= old:
                return 1
            try:
                self.mem.memory.grow(self.mem.store, (new - old + WASM_PAGE - 1) // WASM_PAGE)
                self.mem.refresh()
                return 1
            except wasmtime.WasmtimeError:
                continue
        return 0

    @imp("_abort_js")
    def _abort_js(self):
        self.abort_message = "abort() called"
        raise GuestAbort("guest called abort()")

    @imp("__assert_fail")
    def __assert_fail(self, cond, file, line, func):
        msg = f"Assertion failed: {self.mem.cstr(cond)}, at: {self.mem.cstr(file)}:{line} {self.mem.cstr(func)}"
        self.abort_message = msg
        raise GuestAbort(msg)

    @imp("_emscripten_get_progname")
    def _emscripten_get_progname(self, buf, ln):
        self.mem.write_cstr(buf, self.argv0, ln)

    @imp("emscripten_runtime_keepalive_push", "emscripten_runtime_keepalive_pop",
         "_emscripten_runtime_keepalive_clear", "emscripten_debugger")
    def _noop(self, *args):
        return None

    @imp("_Py_CheckEmscriptenSignals_Helper")
    def _py_signals(self):
        return 0

    @imp("__call_sighandler")
    def __call_sighandler(self, fp, sig):
        self.isolate._call_table(fp, sig)

    @imp("_setitimer_js")
    def _setitimer_js(self, which, timeout_ms):
        return -V.ENOSYS if timeout_ms else 0

    @imp("_emscripten_system")
    def _emscripten_system(self, cmd):
        return 0 if not cmd else -V.ENOSYS

    @imp("__syscall_getuid32_js")
    def _getuid(self):
        return 0

    @imp("__syscall_umask_js")
    def _umask(self, mask):
        return 0o022

    @imp("_emscripten_log_formatted", "emscripten_log_impl_js")
    def _log(self, flags, ptr, *rest):
        self.stderr((self.mem.cstr(ptr) + "\n").encode())

    @imp("_Py_emscripten_runtime")
    def _py_emscripten_runtime(self):
        return self.isolate._static_cstr("pyworkers (wasmtime)")


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a
