"""One isolate serving one deployment: its thread, its event loop, its conversations.

A :class:`Worker` owns an isolate for its whole life on one host thread: the thread creates it
(the :data:`IsolateFactory`: snapshot restore or boot + import), opens the serve channel
(:class:`pyworkers.runtime.streams.Channel` at :data:`~pyworkers.serve.protocol.CHANNEL_PATH`)
and calls ``_pyworkers_serve.run`` (``runtime/guest/_pyworkers_serve.py``), which runs the
guest's asyncio loop until the host sends ``H_STOP``. Everything else happens on the server's
asyncio loop: :meth:`Worker.open` starts a :class:`Conversation` (one HTTP request or
WebSocket), :meth:`Worker.push` sends it events, and what the guest writes comes back, decoded
on the isolate's thread, into the conversation's queue (``call_soon_threadsafe``).

Life cycle (:attr:`Worker.state`): ``booting`` -> ``ready`` (lifespan startup complete, or the
app does not support lifespan) -> ``stopping`` (drain: in-flight requests and background tasks
get ``drain`` seconds, then lifespan shutdown) -> ``dead``. An isolate that traps (abort, stack
overflow, out of memory) or whose guest code runs ``cpu_limit`` seconds without awaiting (the
CPU watchdog, :meth:`Isolate.watch_cpu`) dies: each of its conversations receives an
:class:`~pyworkers.serve.protocol.IsolateLost` and the pool replaces it.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from typing import Any, Callable, Mapping

from pyworkers.runtime.isolate import GuestError, Isolate, IsolateCrashed
from pyworkers.runtime.output import LineLimiter, limits_from_env
from pyworkers.runtime.streams import Channel
from pyworkers.serve.errors import StartupFailed
from pyworkers.serve.factory import (ADAPTER, AppFactory, BindingHost, IsolateFactory,
                                     with_app)
from pyworkers.serve.protocol import CHANNEL_PATH, GuestMessage, IsolateLost, frame, wire

log = logging.getLogger("pyworkers.serve")
guest_log = logging.getLogger("pyworkers.guest")

SERVE_MODULE = "_pyworkers_serve"
#: largest frame body a guest may send (bytes)
MAX_GUEST_FRAME = 64 << 20

_arenas_limited = []


def limit_malloc_arenas(n: int = 1) -> None:
    """Use at most ``n`` glibc malloc arenas in this process (``mallopt(M_ARENA_MAX)``; no-op
    elsewhere). Each isolate runs on its own thread, and glibc gives every thread that mallocs
    an arena of its own: measured 2.2 MiB of private dirty memory per isolate (wasmtime's
    per-store allocations), 0.03 MiB with one arena. Host threads hold the GIL to allocate
    anyway, so one arena costs no parallelism. Done once, when this module is imported (the
    earlier the better: measured 2.0 MiB per isolate when done before the first snapshot
    restorer, 3.0 MiB when done just before the first isolate thread)."""
    if _arenas_limited:
        return
    _arenas_limited.append(n)
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, n)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


limit_malloc_arenas()


class LineLog:
    """``bytes -> None`` sink for a guest's fd 1/2, logging whole lines as
    ``[<worker> <stream>] <line>`` through :class:`pyworkers.runtime.output.LineLimiter` (lines
    cut at 16 KiB, a per-isolate rate limit with one "N bytes dropped" line per episode, logged
    at the latest when a request ends;
    ``PYWORKERS_LOG_LINE_MAX``/``_RATE``/``_BURST``)."""

    def __init__(self, tag: str, level: int = logging.INFO):
        self.tag = tag
        self.level = level
        self._limiter = LineLimiter(self._emit, **limits_from_env())

    def write(self, data: bytes) -> None:
        self._limiter.write(data)

    def flush(self) -> None:
        self._limiter.flush()

    def announce(self) -> None:
        """Log the pending "N bytes of output dropped" notice now (a request ended)."""
        self._limiter.announce()

    def _emit(self, line: bytes) -> None:
        guest_log.log(self.level, "[%s] %s", self.tag, line.decode("utf-8", "replace").rstrip("\r"))


class Conversation:
    """Host side of one ASGI call in a worker: ``cid``, ``kind`` (``"http"``/``"websocket"``)
    and :attr:`queue` of :class:`GuestMessage` / :class:`IsolateLost` for the front's handler.
    :meth:`detach` when the handler stops listening (response complete, timeout): the guest's
    later messages are then only logged, and the conversation ends with ``G_DONE``."""

    __slots__ = ("worker", "cid", "kind", "queue", "detached", "started_at", "what", "trace")

    def __init__(self, worker: "Worker", cid: int, kind: str, what: str):
        self.worker, self.cid, self.kind, self.what = worker, cid, kind, what
        self.queue: asyncio.Queue = asyncio.Queue()
        self.detached = False
        self.started_at = time.monotonic()
        #: the request's :class:`~pyworkers.serve.phases.RequestTrace` when it is traced:
        #: the guest's clock readings (``G_DONE``'s "trace") are put there on the host's clock
        self.trace = None

    def push(self, kind: int, meta: dict | None = None, body: bytes = b"") -> None:
        """Send an event of this conversation to the guest (no-op once the isolate is gone)."""
        self.worker.push(kind, self.cid, meta, body)

    def detach(self) -> None:
        self.detached = True


class Worker:
    """One isolate of one deployment (see the module docstring).

    ``deployment``/``number``/``generation`` name it (``id`` = ``"<deployment>#<n>"``, used in
    logs); ``cpu_limit``: seconds guest code may run without awaiting (``None``: no watchdog);
    ``env``: variables set in the guest's ``os.environ`` before lifespan startup (secrets:
    never part of a snapshot). Attributes read by the pool: :attr:`state`, :attr:`load`
    (open conversations), :attr:`last_used`, :attr:`recycle` (a reason to replace it after
    its current work: memory limit, MemoryError), :attr:`served`.
    """

    def __init__(self, deployment: str, number: int, generation: int, factory: IsolateFactory,
                 *, cpu_limit: float | None = None, env: Mapping[str, str] | None = None,
                 on_change: Callable[["Worker"], None] | None = None,
                 bindings: "BindingHost | None" = None, call_timeout: float = 30.0):
        self.id = f"{deployment}#{number}"
        self.deployment, self.number, self.generation = deployment, number, generation
        self.factory = factory
        self.cpu_limit = cpu_limit
        self.env = dict(env or {})
        self.on_change = on_change
        self.bindings = bindings
        self.call_timeout = call_timeout
        self._calls: set[asyncio.Task] = set()
        self.state = "booting"
        self.lifespan: str | None = None
        self.convs: dict[int, Conversation] = {}
        self._cids = itertools.count(1)
        self.served = 0
        self.created = self.last_used = time.monotonic()
        self.boot_seconds = 0.0
        self.recycle: str | None = None
        self.death: str | None = None
        self.iso: Isolate | None = None
        self.channel: Channel | None = None
        self.out = LineLog(f"{self.id} stdout")
        self.err = LineLog(f"{self.id} stderr")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future | None = None
        self._ended: asyncio.Future | None = None
        self._thread: threading.Thread | None = None
        # a frame from the guest larger than this traps its isolate (bodies cross in 1 MiB
        # pieces, binding values are <= 25 MiB): the host never buffers more for a guest
        self._decoder = wire.Decoder(max_body=MAX_GUEST_FRAME)
        self._inbox: list = []
        self._inbox_lock = threading.Lock()
        self._inbox_pending = False
        self._mem_checks = 0
        #: what pre-faulting the hot pages did at start (``Restorer.prefault``'s dict), if done
        self.prefault: dict | None = None
        self._learning: asyncio.Future | None = None
        #: whether to pre-fault hot pages at start (the pool: only when no request waits)
        self.warm_if: Callable[[], bool] = lambda: True
        #: monotonic ns of the start-up steps: "start", "restored" (the factory returned:
        #: restore or boot + app load), "loop" (the guest's loop runs), "ready"
        self.timeline: dict[str, int] = {}

    # ------------------------------------------------------------------ state
    @property
    def load(self) -> int:
        return len(self.convs)

    @property
    def busy_for(self) -> float:
        """Seconds the guest has been running without waiting in ``poll`` (0 while it waits):
        a loop blocked by a sync endpoint or stuck in CPU does not take new requests."""
        iso = self.iso
        if iso is None:
            return 0.0
        host = iso.host
        return 0.0 if host.in_poll else max(0.0, time.monotonic() - host.left_poll_at)

    @property
    def clock_offset_ns(self) -> int:
        """The guest's monotonic clock minus the host's (ns): subtract it from a guest
        reading to place it on the host's ``time.monotonic_ns()``."""
        iso = self.iso
        return iso.host.mono_offset_ns if iso is not None else 0

    def startup_phases(self) -> dict[str, float]:
        """Start-up in ms: ``restore`` (thread start to an isolate with the app loaded:
        snapshot restore, or boot + import; for a spare also pre-faulting its hot pages),
        ``loop`` (the guest's serve loop starting),
        ``lifespan`` (lifespan startup); only the steps reached."""
        t = self.timeline
        out = {}
        for name, a, b in (("restore", "start", "restored"), ("loop", "restored", "loop"),
                           ("lifespan", "loop", "ready")):
            if a in t and b in t:
                out[name] = (t[b] - t[a]) / 1e6
        return out

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def __repr__(self) -> str:
        return f"<Worker {self.id} {self.state} load={self.load}>"

    # ------------------------------------------------------------------ life cycle
    async def start(self, startup_timeout: float) -> "Worker":
        """Start the isolate's thread and wait for lifespan startup. Raises
        :class:`StartupFailed` (the isolate is stopped then)."""
        self.loop = asyncio.get_running_loop()
        self._ready = self.loop.create_future()
        self._ended = self.loop.create_future()
        t0 = time.monotonic()
        self.timeline["start"] = time.monotonic_ns()
        self._thread = threading.Thread(target=self._thread_main, name=f"isolate {self.id}",
                                        daemon=True)
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), startup_timeout)
        except asyncio.TimeoutError:
            self.kill("lifespan startup timed out")
            raise StartupFailed(f"{self.id}: lifespan startup did not finish within "
                                f"{startup_timeout:g} s") from None
        except StartupFailed:
            if not self._ended.done():
                await self.stop(0, 1)
            raise
        self.boot_seconds = time.monotonic() - t0
        self.created = self.last_used = time.monotonic()
        return self

    def _thread_main(self) -> None:
        reason: str | None = None
        try:
            iso = self.factory(stdout=self.out.write, stderr=self.err.write)
        except BaseException as e:  # noqa: BLE001 - reported to the pool
            self._flush_logs()
            self._to_loop(self._boot_failed, e)
            return
        self._prefault(iso)
        self.timeline["restored"] = time.monotonic_ns()
        self.iso = iso
        ch = self.channel = Channel(iso.host.waker, self._from_guest)
        iso.host.devices[CHANNEL_PATH] = lambda: ch
        if self.env or self.bindings is not None:
            ch.push(frame(wire.H_ENV, 0, {
                "environ": self.env,
                "bindings": self.bindings.declared() if self.bindings is not None else []}))
        ch.push(frame(wire.H_LIFESPAN_STARTUP, 0))
        try:
            iso.watch_cpu(self.cpu_limit, self._check_memory)
            iso.call(f"{SERVE_MODULE}:run", {})
        except IsolateCrashed as e:
            reason = e.reason
        except GuestError as e:
            reason = f"guest serve loop failed: {e.type_name}: {e.message}"
            log.error("[%s] guest serve loop failed\n%s", self.id, e.traceback.rstrip())
        except BaseException as e:  # noqa: BLE001 - the isolate is gone either way
            reason = f"host error: {e!r}"
            log.exception("[%s] host error in the isolate's thread", self.id)
        finally:
            self._flush_logs()
            self.iso = None
            iso.close()
            self._to_loop(self._isolate_ended, reason)

    def _flush_logs(self) -> None:
        self.out.flush()
        self.err.flush()

    def _to_loop(self, fn: Callable, *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)  # type: ignore[union-attr]
        except RuntimeError:  # the server's loop is closed: nothing left to tell
            pass

    def _check_memory(self) -> None:
        """On the isolate's thread at each return from poll: flag the worker for replacement
        once linear memory is near its cap (checked every 64th time: cheap either way)."""
        self._mem_checks += 1
        if self._mem_checks & 63 == 0 and self.recycle is None:
            iso = self.iso
            if iso is not None and iso.at_memory_limit:
                self.recycle = "memory limit reached"

    # ------------------------------------------------------------------ guest -> host
    def _from_guest(self, data: bytes) -> None:
        """Channel callback (isolate thread): decode frames, hand them to the server loop.
        Messages queue in :attr:`_inbox`; the loop is woken (``call_soon_threadsafe``: a
        self-pipe write and a thread wake-up, ~35 us on a 2-core VM) only when no delivery is
        pending already, so frames written before the loop ran (a response, then ``G_DONE``)
        cost one wake-up. A malformed frame raises here, which traps the isolate (only a guest
        writing garbage to its channel can cause it)."""
        msgs = self._decoder.feed(data)
        if msgs:
            if any(m[0] == wire.G_DONE for m in msgs):
                # a request ended: its output drops are reported now, not at the isolate's
                # next printed line (the limiter lives on this thread)
                self.out.announce()
                self.err.announce()
            with self._inbox_lock:
                self._inbox.extend(msgs)
                if self._inbox_pending:
                    return
                self._inbox_pending = True
            self._to_loop(self._deliver_inbox)

    def _deliver_inbox(self) -> None:
        with self._inbox_lock:
            msgs, self._inbox = self._inbox, []
            self._inbox_pending = False
        if msgs:
            self._deliver(msgs)

    def _deliver(self, msgs: list) -> None:
        for kind, cid, meta, body in msgs:
            m = GuestMessage(kind, cid, meta, body)
            if kind == wire.G_CALL:
                t = asyncio.ensure_future(self._host_call(m))
                self._calls.add(t)
                t.add_done_callback(self._calls.discard)
                continue
            if cid == 0:
                if kind == wire.G_READY:
                    self.timeline["loop"] = time.monotonic_ns()
                self._lifespan_message(m)
                continue
            conv = self.convs.get(cid)
            if conv is None:
                continue
            if kind == wire.G_DONE:
                del self.convs[cid]
                self.served += 1
                if self.served == 1 and conv.kind == "http":
                    self._learn_hot_pages()
                if conv.trace is not None and isinstance(m.meta.get("trace"), list):
                    off = self.clock_offset_ns
                    try:  # guest data: a malformed trace is dropped, never raised here
                        conv.trace.guest = [int(x) - off for x in m.meta["trace"]][:3]
                    except (TypeError, ValueError, OverflowError):
                        pass
                self.last_used = time.monotonic()
                err = m.error
                if err and err["type"] == "MemoryError":
                    self.recycle = "MemoryError in the app"
                if conv.detached:
                    if err and err["type"] != "CancelledError":
                        log.error("[%s] %s: exception after the response was sent\n%s", self.id,
                                  conv.what, err["traceback"].rstrip())
                else:
                    conv.queue.put_nowait(m)
                self._changed()
            elif not conv.detached:
                conv.queue.put_nowait(m)

    async def _host_call(self, m: GuestMessage) -> None:
        """Perform a binding operation for the guest and reply (``H_REPLY``), bounded by
        ``call_timeout`` and, for a call made by a request, by that request's deadline
        (started + ``call_timeout``). Errors become data for the guest (type + message);
        nothing of the host (paths, credentials) is sent."""
        binding, op = str(m.meta.get("binding", "")), str(m.meta.get("op", ""))
        # a call made for a request ends by that request's deadline (its start + call_timeout,
        # the server's request timeout); other calls get call_timeout
        timeout, why = self.call_timeout, f"took over {self.call_timeout:g} s"
        conv = self.convs.get(m.meta.get("conv") or 0) if isinstance(m.meta.get("conv"), int) \
            else None
        if conv is not None and conv.kind == "http":  # a WebSocket has no deadline
            left = conv.started_at + self.call_timeout - time.monotonic()
            if left < timeout:
                timeout, why = left, "passed the request's deadline"
        try:
            if self.bindings is None:
                raise KeyError(f"no bindings are configured (binding {binding!r})")
            if timeout <= 0:
                raise asyncio.TimeoutError
            result, body = await asyncio.wait_for(
                self.bindings.call(binding, op, m.meta.get("args") or {}, m.body), timeout)
            reply = {"ok": True, "result": result}
        except asyncio.TimeoutError:
            reply, body = {"ok": False, "error": {
                "type": "TimeoutError", "message": f"{binding}.{op} {why}"}}, b""
        except (KeyError, ValueError, PermissionError) as e:
            reply, body = {"ok": False, "error": {"type": type(e).__name__,
                                                  "message": str(e.args[0] if e.args else e)}}, b""
        except Exception as e:  # noqa: BLE001 - reported to the app, logged here
            log.error("[%s] binding %s.%s failed: %r", self.id, binding, op, e)
            reply, body = {"ok": False, "error": {"type": "BindingError",
                                                  "message": f"{binding}.{op} failed: "
                                                             f"{type(e).__name__}: {e}"}}, b""
        self.push(wire.H_REPLY, m.cid, reply, body)

    def _lifespan_message(self, m: GuestMessage) -> None:
        ready = self._ready
        if m.kind == wire.G_LIFESPAN:
            t = m.meta.get("type")
            msg = m.meta.get("message") or ""
            if t == "lifespan.startup.complete":
                self.lifespan = "on"
                self._set_ready()
            elif t == "lifespan.startup.failed":
                if ready is not None and not ready.done():
                    ready.set_exception(StartupFailed(f"lifespan.startup.failed: {msg}"))
            elif t == "lifespan.shutdown.failed":
                log.error("[%s] lifespan shutdown failed: %s", self.id, msg)
        elif m.kind == wire.G_DONE:
            err = m.error
            if self.lifespan is None:  # returned or raised before startup completed
                self.lifespan = "unsupported"
                if err:
                    log.info("[%s] ASGI 'lifespan' protocol appears unsupported (%s: %s)",
                             self.id, err["type"], err["message"])
                self._set_ready()
            elif err and err["type"] != "CancelledError":
                log.error("[%s] lifespan raised\n%s", self.id, err["traceback"].rstrip())
        elif m.kind == wire.G_STOPPED:
            if m.meta.get("cancelled"):
                log.warning("[%s] drain timeout: cancelled %s", self.id,
                            ", ".join(m.meta["cancelled"]))
            if m.meta.get("lifespan") == "timeout":
                log.error("[%s] lifespan shutdown did not finish in time", self.id)
        elif m.kind == wire.G_LOG:
            log.log(logging.getLevelName(str(m.meta.get("level", "INFO")).upper()),
                    "[%s] %s", self.id, m.meta.get("message", ""))

    def _set_ready(self) -> None:
        self.timeline.setdefault("ready", time.monotonic_ns())
        if self.state == "booting":
            self.state = "ready"
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        self._changed()

    # ------------------------------------------------------------------ hot pages
    def _restorer(self):
        """The snapshot ``Restorer`` this worker's isolates come from (``None``: booted)."""
        return getattr(self.factory, "restorer", None)

    def _prefault(self, iso: Isolate) -> None:
        """On the isolate's thread, before its loop starts: pre-fault the snapshot image pages
        this deployment's isolates write at start-up and on their first requests (learned from
        an earlier isolate: :meth:`pyworkers.snapshot.restore.Restorer.prefault`, one
        ``madvise(MADV_POPULATE_WRITE)`` per run of pages), so its first request takes no
        copy-on-write page fault per page it writes. Only when :attr:`warm_if` says no request
        waits for this isolate (a spare): for a cold start the faults cost about what the
        pre-faulting would, and pre-faulting beside a running request slowed it down (measured
        4.0 -> 8.3 ms). Before the isolate is ready, so no request meets it half-done."""
        r = self._restorer()
        if r is None or not r.hot_pages.written or not self.warm_if():
            return
        try:
            self.prefault = r.prefault(iso)
        except Exception as e:  # noqa: BLE001 - only an optimisation
            log.warning("[%s] pre-faulting hot pages failed: %r", self.id, e)

    def _learn_hot_pages(self) -> None:
        """After this isolate's first HTTP response: if its restorer knows no hot pages yet,
        learn them from this isolate (``Restorer.learn_hot_pages``: reads the image's pagemap,
        ~1 ms, on a host thread; saved beside the image module for later processes)."""
        r, iso = self._restorer(), self.iso
        if r is None or iso is None or self.state != "ready" or r.hot_pages.written \
                or getattr(r, "_pyworkers_learning", False):
            return  # (a stopping isolate is about to be unmapped: a later one will teach it)
        r._pyworkers_learning = True  # one isolate learns per restorer (and process)
        self._learning = self.loop.run_in_executor(  # type: ignore[union-attr]
            None, r.learn_hot_pages, iso)

    def _boot_failed(self, exc: BaseException) -> None:
        self.state = "dead"
        self.death = f"boot failed: {exc}"
        if self._ready is not None and not self._ready.done():
            err = StartupFailed(f"{self.id}: the isolate could not be created: "
                                f"{_short(exc)}")
            err.__cause__ = exc
            self._ready.set_exception(err)
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(self.death)
        self._changed()

    def _isolate_ended(self, reason: str | None) -> None:
        was_stopping = self.state == "stopping"
        self.state = "dead"
        self.death = reason or "stopped"
        if reason is not None and not was_stopping:
            log.error("[%s] retiring (crashed: %s) after %d requests", self.id, reason,
                      self.served)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(StartupFailed(
                f"{self.id}: the isolate died during lifespan startup: {self.death}"))
        fault = "timeout" if reason and "interrupt" in reason else (
            "crash" if reason else "unavailable")
        for conv in list(self.convs.values()):
            if not conv.detached:
                conv.queue.put_nowait(IsolateLost(fault, self.death))  # type: ignore[arg-type]
        self.convs.clear()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(self.death)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    # ------------------------------------------------------------------ host -> guest
    def open(self, kind: str, what: str = "") -> Conversation:
        """A new conversation (call on the server loop; the caller then pushes ``H_HTTP`` or
        ``H_WS_CONNECT``). Raises ``RuntimeError`` if the worker is not ready."""
        if self.state != "ready":
            raise RuntimeError(f"{self.id} is {self.state}")
        conv = Conversation(self, next(self._cids), kind, what)
        self.convs[conv.cid] = conv
        self.last_used = time.monotonic()
        return conv

    def push(self, kind: int, cid: int, meta: dict | None = None, body: bytes = b"") -> None:
        """Queue one frame for the guest (thread-safe; dropped once the isolate is gone)."""
        ch = self.channel
        if ch is not None and self.state != "dead":
            ch.push(frame(kind, cid, meta, body))

    async def stop(self, drain: float, shutdown: float) -> None:
        """Drain (in-flight requests and background tasks get ``drain`` seconds), lifespan
        shutdown (``shutdown`` seconds), then end the isolate; interrupted if it does not
        stop in time. Idempotent."""
        if self._ended is None or self._ended.done():
            self.state = "dead"
            return
        # the hot-page work reads or populates this isolate's memory: not while it is unmapped
        if self._learning is not None and not self._learning.done():
            await asyncio.wait([self._learning], timeout=5.0)
        if self.state != "stopping":
            self.state = "stopping"
            self.push(wire.H_STOP, 0, {"drain": drain, "shutdown": shutdown})
        try:
            await asyncio.wait_for(asyncio.shield(self._ended), drain + shutdown + 5.0)
        except asyncio.TimeoutError:
            self.kill("did not stop in time")
            await asyncio.shield(self._ended)

    def kill(self, why: str) -> None:
        """Interrupt the isolate now (from the server loop): its waits trap at once and its
        conversations get :class:`IsolateLost`."""
        log.warning("[%s] interrupting the isolate: %s", self.id, why)
        iso = self.iso
        if iso is not None:
            iso.interrupt()


def _short(e: BaseException) -> str:
    if isinstance(e, GuestError):
        return f"{e.type_name}: {e.message}"
    return str(e) or type(e).__name__


__all__ = ["ADAPTER", "AppFactory", "Conversation", "IsolateFactory", "LineLog", "Worker",
           "with_app"]
