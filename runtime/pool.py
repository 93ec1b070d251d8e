"""A pool of pre-warmed isolates for one deployment, and the host side of the guest ASGI adapter.

Pieces:

* :data:`IsolateFactory`: how an isolate is made, one callable
  ``factory(*, stdout, stderr) -> Isolate`` returning an isolate in which the app is imported and
  ``_pyworkers_asgi.load()`` has run (today :class:`AppFactory`: boot + import; with snapshots:
  restore). ``stdout``/``stderr`` are ``bytes -> None`` sinks for the guest's fd 1/2.
* :class:`Worker`: one isolate plus its protocol with ``runtime/guest/_pyworkers_asgi.py``
  (``call``, lifespan :meth:`~Worker.startup` and :meth:`~Worker.shutdown`). Its methods block
  and run on executor threads, one thread per isolate at a time: wasmtime releases the GIL while
  wasm runs, and host imports dispatch to the isolate through the thread-local
  ``pyworkers.runtime.host.current``.
* :class:`Pool`: asyncio-side bookkeeping (all of it on the server's event loop thread):
  ``min_idle`` isolates booted ahead of demand, growth to ``max_isolates``, one request per
  isolate, idle retirement after ``idle_timeout`` seconds, :meth:`Pool.swap` to a new factory
  (a redeploy) without dropping in-flight requests.

Time limits: before every guest call the worker gives the isolate the time left
(:meth:`Isolate.set_timeout`: wasmtime epoch interruption for wasm code, with the engine's
ticker advancing every :data:`EPOCH_TICK` seconds, and a deadline for host-side waits); running
past it traps the guest (``IsolateCrashed``, isolate dead). See :func:`arm_deadline`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from pyworkers.runtime.isolate import EPOCH_TICK_S as EPOCH_TICK
from pyworkers.runtime.isolate import GuestError, Isolate, IsolateCrashed

log = logging.getLogger("pyworkers.serve")
guest_log = logging.getLogger("pyworkers.guest")

ADAPTER = "_pyworkers_asgi"


class IsolateFactory(Protocol):
    """Makes one isolate ready to serve: ``factory(*, stdout, stderr) -> Isolate``.

    The returned isolate must have run ``_pyworkers_asgi.load(<app>)``; lifespan startup is
    *not* the factory's job (the pool runs it after creation, before the isolate takes
    traffic). Raises anything on failure (``GuestError`` with the import traceback, ...).
    """

    def __call__(self, *, stdout: Callable[[bytes], None],
                 stderr: Callable[[bytes], None]) -> Isolate: ...


@dataclasses.dataclass(frozen=True)
class AppFactory:
    """:data:`IsolateFactory` for an app directory: boot a fresh isolate, import the app.

    Attributes:
        release: runtime (``"314.0.7"``, a ``Release`` or a loaded ``Runtime``).
        app_dir: host directory mounted read-only at ``/app`` (the guest's cwd, first on
            ``sys.path``).
        main: the ASGI app, ``"module:attribute"``.
        site_packages: the site-packages layer (``None``: none).
        env: extra guest environment variables (the config's ``[vars]``).
        memory_limit: linear-memory cap in bytes (``None``: 4 GiB).
        cache_dir: pyworkers cache root (``None``: the default).
    """

    release: Any
    app_dir: Path
    main: str
    site_packages: Path | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    memory_limit: int | None = None
    cache_dir: Path | None = None

    def __call__(self, *, stdout: Callable[[bytes], None],
                 stderr: Callable[[bytes], None]) -> Isolate:
        iso = Isolate(self.release, site_packages=self.site_packages,
                      mounts={"/app": self.app_dir}, env=dict(self.env), stdout=stdout,
                      stderr=stderr, memory_limit=self.memory_limit, cwd="/app",
                      cache_dir=self.cache_dir)
        try:
            iso.call(f"{ADAPTER}:load", self.main, "/app")
        except BaseException:
            iso.close()
            raise
        return iso


def with_app(make: Callable[..., Isolate], main: str, path: str | None = "/app") -> IsolateFactory:
    """An :data:`IsolateFactory` from any isolate maker ``make(*, stdout, stderr) -> Isolate``
    (e.g. ``functools.partial(restore_isolate, snapshot_path, memory_limit=...)``): after
    ``make`` it runs ``_pyworkers_asgi.load(main, path)``, which is cheap and idempotent when
    the app is already imported (an isolate restored from a snapshot taken after ``load``).
    The isolate is closed if ``load`` raises."""

    def factory(*, stdout: Callable[[bytes], None], stderr: Callable[[bytes], None]) -> Isolate:
        iso = make(stdout=stdout, stderr=stderr)
        try:
            iso.call(f"{ADAPTER}:load", main, path)
        except BaseException:
            iso.close()
            raise
        return iso

    return factory


# ---------------------------------------------------------------------------- time limits
class RequestTimeout(Exception):
    """The deadline passed before (or while) the guest was called."""


def arm_deadline(iso: Isolate, deadline: float | None) -> None:
    """Make ``iso`` trap once ``time.monotonic()`` passes ``deadline`` (``None``: no limit),
    in wasm code (epoch interruption) and in host-side waits (:meth:`Isolate.set_timeout`).
    Call on the thread about to run the isolate."""
    if iso.store is not None:
        iso.set_timeout(None if deadline is None else max(0.0, deadline - time.monotonic()))


# ---------------------------------------------------------------------------- workers
class _LineLog:
    """``bytes -> None`` sink that logs whole lines as ``[<worker> <stream>] <line>``."""

    LIMIT = 64 << 10

    def __init__(self, tag: str, level: int):
        self.tag = tag
        self.level = level
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                break
            self._emit(bytes(self.buf[:i]))
            del self.buf[:i + 1]
        if len(self.buf) > self.LIMIT:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self._emit(bytes(self.buf))
            self.buf.clear()

    def _emit(self, line: bytes) -> None:
        guest_log.log(self.level, "[%s] %s", self.tag, line.decode("utf-8", "replace").rstrip("\r"))


class StartupFailed(Exception):
    """The app's lifespan startup failed (``lifespan.startup.failed``, stuck, or timed out)."""


class Worker:
    """One isolate serving one deployment. Blocking methods run on executor threads.

    Attributes: ``id`` (``"<deployment>#<n>"``, used in logs), ``generation`` (the pool
    generation it was made for), ``iso`` (the :class:`Isolate`, ``None`` before boot or after
    close), ``lifespan`` (``"on"``, ``"unsupported"`` or ``None`` before startup), ``served``
    (requests handled), ``created``/``last_used`` (``time.monotonic()``).
    """

    def __init__(self, deployment: str, number: int, generation: int):
        self.id = f"{deployment}#{number}"
        self.deployment = deployment
        self.generation = generation
        self.iso: Isolate | None = None
        self.lifespan: str | None = None
        self._lifespan_cid: int | None = None
        self.out = _LineLog(f"{self.id} stdout", logging.INFO)
        self.err = _LineLog(f"{self.id} stderr", logging.INFO)
        self.served = 0
        self.created = self.last_used = time.monotonic()
        self.boot_seconds = 0.0
        self.inflight: asyncio.Future | None = None  # set by the ASGI side around a call
        self.retired = False
        self.retiring = False  # the pool has started retiring it

    @property
    def alive(self) -> bool:
        return self.iso is not None and not self.iso.dead and not self.retired

    def call(self, fn: str, *args, deadline: float | None = None) -> Any:
        """``_pyworkers_asgi.<fn>(*args)`` in the guest, trapping at ``deadline``
        (``time.monotonic()`` seconds). Raises :class:`RequestTimeout` if it already passed,
        ``GuestError``/``IsolateCrashed`` from the isolate."""
        iso = self.iso
        if iso is None:
            raise IsolateCrashed("isolate is closed")
        if deadline is not None and time.monotonic() >= deadline:
            raise RequestTimeout()
        arm_deadline(iso, deadline)
        try:
            return iso.call(f"{ADAPTER}:{fn}", *args)
        finally:
            if not iso.dead:
                arm_deadline(iso, None)
            self.out.flush()
            self.err.flush()

    # ------------------------------------------------------------------ life cycle
    def boot(self, factory: IsolateFactory, startup_timeout: float) -> "Worker":
        """Create the isolate with ``factory`` and run lifespan startup. Raises what the
        factory raises, or :class:`StartupFailed` (the isolate is closed then)."""
        t0 = time.monotonic()
        self.iso = factory(stdout=self.out.write, stderr=self.err.write)
        self.out.flush()
        self.err.flush()
        try:
            self._startup(time.monotonic() + startup_timeout)
        except BaseException:
            self.close()
            raise
        self.boot_seconds = time.monotonic() - t0
        self.created = self.last_used = time.monotonic()
        return self

    def _drive_lifespan(self, r: dict, want: tuple[str, str], deadline: float) -> dict | None:
        """Step the lifespan conversation until a message in ``want`` (returned) or the app
        finished (``None``; ``r["error"]`` kept in ``self._lifespan_end``)."""
        while True:
            for m in r["messages"]:
                if m["type"] in want:
                    return m
            if r["done"]:
                self._lifespan_cid = None
                self._lifespan_end = r
                return None
            if r["idle"]:
                if r["wait"] is None:
                    raise StartupFailed(f"lifespan {want[0].split('.')[1]} is stuck: the app "
                                        "awaits something nothing will deliver")
                time.sleep(max(0.0, min(r["wait"], deadline - time.monotonic())))
            try:
                r = self.call("step", r["cid"], [], deadline=deadline)
            except RequestTimeout:
                raise StartupFailed("lifespan timed out") from None

    def _startup(self, deadline: float) -> None:
        try:
            r = self.call("open_lifespan", deadline=deadline)
        except RequestTimeout:
            raise StartupFailed("lifespan startup timed out") from None
        except IsolateCrashed as e:
            raise StartupFailed(f"lifespan startup crashed the isolate: {e.reason}") from None
        self._lifespan_cid = r["cid"]
        try:
            m = self._drive_lifespan(r, ("lifespan.startup.complete", "lifespan.startup.failed"),
                                     deadline)
        except IsolateCrashed as e:
            raise StartupFailed(f"lifespan startup crashed the isolate: {e.reason}") from None
        if m is None:
            err = self._lifespan_end.get("error")
            self.lifespan = "unsupported"
            if err:
                log.info("[%s] ASGI 'lifespan' protocol appears unsupported (%s: %s)",
                         self.id, err["type"], err["message"])
            return
        if m["type"] == "lifespan.startup.failed":
            raise StartupFailed(f"lifespan.startup.failed: {m.get('message', '')}")
        self.lifespan = "on"

    def shutdown(self, timeout: float) -> None:
        """Run lifespan shutdown (at most ``timeout`` seconds; failures are logged), then
        close the isolate."""
        try:
            if self._lifespan_cid is not None and self.iso is not None and not self.iso.dead:
                deadline = time.monotonic() + timeout
                r = self.call("step", self._lifespan_cid, [{"type": "lifespan.shutdown"}],
                              deadline=deadline)
                m = self._drive_lifespan(
                    r, ("lifespan.shutdown.complete", "lifespan.shutdown.failed"), deadline)
                if m is not None and m["type"] == "lifespan.shutdown.failed":
                    log.error("[%s] lifespan shutdown failed: %s", self.id, m.get("message", ""))
                elif m is None and self._lifespan_end.get("error"):
                    err = self._lifespan_end["error"]
                    log.error("[%s] lifespan shutdown raised\n%s", self.id,
                              err["traceback"].rstrip())
        except (StartupFailed, IsolateCrashed, GuestError, RequestTimeout) as e:
            log.error("[%s] lifespan shutdown did not complete: %s", self.id, e)
        finally:
            self.close()

    def close(self) -> None:
        """Drop the isolate (idempotent)."""
        self.retired = True
        iso, self.iso = self.iso, None
        if iso is not None:
            iso.close()
        self.out.flush()
        self.err.flush()

    def memory_size(self) -> int:
        iso = self.iso
        return iso.memory_size() if iso is not None and not iso.dead else 0


# ---------------------------------------------------------------------------- the pool
class PoolUnavailable(Exception):
    """No isolate could be had: the pool is closed, isolates fail to start, or none became
    free within the queue timeout. ``reason`` is one of ``"closed"``, ``"startup"``,
    ``"busy"``."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class Pool:
    """Isolates of one deployment (see the module docstring).

    Args:
        name: deployment name (logs, worker ids).
        factory: the :data:`IsolateFactory`.
        min_idle: idle (or booting) isolates kept ahead of demand, on top of waiting requests.
        max_isolates: cap on live isolates (idle + busy + booting) of the current generation.
        idle_timeout: seconds an isolate beyond ``min_idle`` may stay idle before it retires.
        startup_timeout: seconds allowed to lifespan startup.
        shutdown_timeout: seconds allowed to lifespan shutdown.
        memory_limit: the isolates' memory cap in bytes; an isolate whose linear memory
            reached 90% of it is replaced after its request.
        executor: thread pool for isolate work (default: a private one with
            ``2 * max_isolates + 2`` threads).
    """

    def __init__(self, name: str, factory: IsolateFactory, *, min_idle: int = 1,
                 max_isolates: int = 4, idle_timeout: float = 300.0,
                 startup_timeout: float = 120.0, shutdown_timeout: float = 5.0,
                 memory_limit: int | None = None,
                 executor: concurrent.futures.Executor | None = None):
        if max_isolates < 1:
            raise ValueError("max_isolates must be at least 1")
        if not 0 <= min_idle <= max_isolates:
            raise ValueError("min_idle must be between 0 and max_isolates")
        self.name = name
        self.factory = factory
        self.generation = 1
        self.min_idle = min_idle
        self.max_isolates = max_isolates
        self.idle_timeout = idle_timeout
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.memory_limit = memory_limit
        self._own_executor = executor is None
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=2 * max_isolates + 2, thread_name_prefix=f"pyworkers-{name}")
        self.idle: list[Worker] = []
        self.busy: set[Worker] = set()
        self.starting = 0
        self.waiters: deque[asyncio.Future] = deque()
        self._numbers = itertools.count(1)
        self._background: set[asyncio.Future] = set()
        self._reaper: asyncio.Task | None = None
        self._fail_streak = 0
        self._retry_at = 0.0
        self._retry_handle: asyncio.TimerHandle | None = None
        self.last_error: str | None = None
        self.closed = False
        self.stats = {"booted": 0, "boot_failures": 0, "retired": 0, "crashed": 0,
                      "served": 0}

    # ------------------------------------------------------------------ helpers
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _track(self, fut: asyncio.Future) -> asyncio.Future:
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)
        return fut

    def live(self) -> int:
        """Isolates counted against ``max_isolates``: idle + busy + booting."""
        return len(self.idle) + len(self.busy) + self.starting

    def snapshot(self) -> dict:
        """Counters for logs and tests: idle, busy, starting, generation, plus :attr:`stats`."""
        return {"idle": len(self.idle), "busy": len(self.busy), "starting": self.starting,
                "waiting": sum(1 for f in self.waiters if not f.done()),
                "generation": self.generation, **self.stats}

    async def _boot(self, factory: IsolateFactory, generation: int) -> Worker:
        w = Worker(self.name, next(self._numbers), generation)
        await self.loop.run_in_executor(self.executor, w.boot, factory, self.startup_timeout)
        self.stats["booted"] += 1
        log.info("[%s] isolate ready in %.0f ms (generation %d, lifespan %s)", w.id,
                 w.boot_seconds * 1000, generation, w.lifespan)
        return w

    # ------------------------------------------------------------------ public API
    async def start(self) -> None:
        """Boot ``min_idle`` isolates and wait for them. Raises the first boot error (the
        deployment cannot start)."""
        self._reaper = asyncio.ensure_future(self._reap())
        n = self.min_idle
        results = await asyncio.gather(*(self._boot(self.factory, self.generation)
                                         for _ in range(n)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for r in results:
            if isinstance(r, Worker):
                if errors:
                    self._retire(r, "start failed")
                else:
                    self._offer(r)
        if errors:
            raise errors[0]

    async def acquire(self, timeout: float) -> Worker:
        """A worker for one request (busy until :meth:`release`). Waits at most ``timeout``
        seconds for one to be free or booted. Raises :class:`PoolUnavailable`."""
        if self.closed:
            raise PoolUnavailable(f"deployment {self.name} is shutting down", "closed")
        w = self._pop_idle()
        if w is None:
            if self._backing_off() and self.starting == 0:
                raise PoolUnavailable(f"isolates of {self.name} fail to start: "
                                      f"{self.last_error}", "startup")
            fut = self.loop.create_future()
            self.waiters.append(fut)
            self._balance()
            try:
                done, _ = await asyncio.wait({fut}, timeout=timeout)
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    w = fut.result()
                    self.busy.discard(w)
                    self._offer(w)
                fut.cancel()
                raise
            if not done:
                fut.cancel()
                self._prune_waiters()
                raise PoolUnavailable(f"no isolate of {self.name} became free within "
                                      f"{timeout:g} s", "busy")
            w = fut.result()  # raises PoolUnavailable if a boot failed for this waiter
        self.busy.add(w)
        self._balance()
        return w

    def release(self, w: Worker, disposition: str | None = None, reason: str = "") -> None:
        """Give ``w`` back after a request. ``disposition``: ``None`` (reuse), ``"recycle"``
        (retire it: lifespan shutdown, close), ``"discard"`` (it is dead: close), or
        ``"abandon"`` (a guest call is still running on a thread: retire it when that call
        returns)."""
        self.busy.discard(w)
        w.last_used = time.monotonic()
        w.served += 1
        self.stats["served"] += 1
        if disposition is None and self.memory_limit and \
                w.memory_size() >= 0.9 * self.memory_limit:
            disposition, reason = "recycle", (f"linear memory at {w.memory_size() >> 20} MiB "
                                              f"of {self.memory_limit >> 20} MiB")
        if disposition == "abandon" and w.inflight is not None and not w.inflight.done():
            w.retired = True
            log.warning("[%s] abandoned (%s); retiring it when its guest call returns",
                        w.id, reason)
            w.inflight.add_done_callback(lambda f: self._retire(w, reason))
        elif disposition == "discard" or (w.iso is not None and w.iso.dead):
            self.stats["crashed"] += 1
            self._retire(w, reason or "isolate died")
        elif disposition in ("recycle", "abandon"):
            self._retire(w, reason or "recycled")
        else:
            self._offer(w)
        self._balance()

    async def swap(self, factory: IsolateFactory) -> int:
        """Switch to ``factory`` (a new deployment) without dropping requests: boot
        ``max(1, min_idle)`` isolates from it first (if that fails, raise and keep serving the
        old one), then route every new request to the new generation; old idle isolates retire
        now, busy ones when their request ends. Returns the new generation number."""
        if self.closed:
            raise PoolUnavailable(f"deployment {self.name} is shutting down", "closed")
        gen = self.generation + 1
        results = await asyncio.gather(*(self._boot(factory, gen)
                                         for _ in range(max(1, self.min_idle))),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        fresh = [r for r in results if isinstance(r, Worker)]
        if errors:
            for w in fresh:
                self._retire(w, "redeploy failed")
            raise errors[0]
        self.factory, self.generation = factory, gen
        self._fail_streak, self.last_error = 0, None
        old, self.idle = self.idle, []
        for w in old:
            self._retire(w, f"replaced by generation {gen}")
        for w in fresh:
            self._offer(w)
        log.info("[%s] now serving generation %d (%d old isolates retiring, %d busy finish "
                 "first)", self.name, gen, len(old), len(self.busy))
        self._balance()
        return gen

    async def close(self) -> None:
        """Stop: fail waiting requests, run lifespan shutdown on idle isolates (busy ones
        follow when released) and wait for those shutdowns."""
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        for f in self.waiters:
            if not f.done():
                f.set_exception(PoolUnavailable(f"deployment {self.name} is shutting down",
                                                "closed"))
        self.waiters.clear()
        old, self.idle = self.idle, []
        for w in old:
            self._retire(w, "server shutdown")
        deadline = time.monotonic() + self.shutdown_timeout + 5
        while self._background and time.monotonic() < deadline:
            await asyncio.wait(set(self._background), timeout=deadline - time.monotonic())
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ internals
    def _pop_idle(self) -> Worker | None:
        while self.idle:
            w = self.idle.pop()  # LIFO: a few hot isolates; the rest idle out
            if w.alive:
                return w
            self._retire(w, "died while idle")
        return None

    def _prune_waiters(self) -> None:
        while self.waiters and self.waiters[0].done():
            self.waiters.popleft()
        self.waiters = deque(f for f in self.waiters if not f.done())

    def _offer(self, w: Worker) -> None:
        if w.generation != self.generation or self.closed or not w.alive:
            self._retire(w, "outdated generation" if w.generation != self.generation
                         else "pool closed" if self.closed else "dead")
            return
        while self.waiters:
            f = self.waiters.popleft()
            if not f.done():
                self.busy.add(w)  # busy from the hand-off on, so live() never undercounts
                f.set_result(w)
                return
        w.last_used = time.monotonic()
        self.idle.append(w)

    def _retire(self, w: Worker, reason: str) -> None:
        if w.retiring:
            return
        w.retiring = True
        if w in self.idle:
            self.idle.remove(w)
        self.busy.discard(w)
        self.stats["retired"] += 1
        dead = w.iso is None or w.iso.dead
        w.retired = True
        log.info("[%s] retiring (%s) after %d requests", w.id, reason, w.served)
        if dead:
            w.close()
            return
        try:
            fut = self.loop.run_in_executor(self.executor, w.shutdown, self.shutdown_timeout)
        except RuntimeError:  # executor already shut down
            w.close()
            return
        self._track(fut)

    def _backing_off(self) -> bool:
        return self._fail_streak > 0 and time.monotonic() < self._retry_at

    def _balance(self) -> None:
        """Boot isolates so that idle + booting covers waiting requests + ``min_idle``."""
        if self.closed:
            return
        waiting = sum(1 for f in self.waiters if not f.done())
        want = waiting + (0 if self._backing_off() else self.min_idle) \
            - len(self.idle) - self.starting
        if self._backing_off():
            want = min(want, 1 - self.starting)
        while want > 0 and self.live() < self.max_isolates:
            self._spawn()
            want -= 1

    def _spawn(self) -> None:
        self.starting += 1
        gen, factory = self.generation, self.factory
        task = asyncio.ensure_future(self._boot(factory, gen))

        def done(t: asyncio.Task) -> None:
            self.starting -= 1
            if t.cancelled():
                return
            exc = t.exception()
            if exc is None:
                self._fail_streak = 0
                self._offer(t.result())
            else:
                self._boot_failed(exc)
            self._balance()

        task.add_done_callback(done)
        self._track(task)

    def _boot_failed(self, exc: BaseException) -> None:
        self.stats["boot_failures"] += 1
        self._fail_streak += 1
        backoff = min(30.0, 0.5 * 2 ** (self._fail_streak - 1))
        self._retry_at = time.monotonic() + backoff
        detail = exc.traceback.rstrip() if isinstance(exc, GuestError) else repr(exc)
        self.last_error = (f"{exc.type_name}: {exc.message}" if isinstance(exc, GuestError)
                           else str(exc) or type(exc).__name__)
        log.error("[%s] isolate failed to start (retrying in %.1f s):\n%s", self.name,
                  backoff, detail)
        while self.waiters:
            f = self.waiters.popleft()
            if not f.done():
                f.set_exception(PoolUnavailable(
                    f"isolates of {self.name} fail to start: {self.last_error}", "startup"))
                break
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        self._retry_handle = self.loop.call_later(backoff, self._balance)

    async def _reap(self) -> None:
        period = max(0.05, min(5.0, self.idle_timeout / 2))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            surplus = len(self.idle) - self.min_idle
            for w in sorted(self.idle, key=lambda w: w.last_used):
                if surplus <= 0:
                    break
                if now - w.last_used >= self.idle_timeout:
                    self._retire(w, f"idle for {now - w.last_used:.0f} s")
                    surplus -= 1


def default_max_isolates() -> int:
    """Default ``--max-isolates``: the number of CPUs (at least 2)."""
    return max(2, os.cpu_count() or 1)


__all__ = ["AppFactory", "EPOCH_TICK", "with_app", "IsolateFactory", "Pool", "PoolUnavailable",
           "RequestTimeout", "StartupFailed", "Worker", "arm_deadline", "default_max_isolates"]
