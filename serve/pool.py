"""A pool of isolates (:class:`~pyworkers.serve.worker.Worker`) serving one deployment.

All bookkeeping happens on the server's asyncio loop. A request takes the least-loaded ready
isolate with room (:class:`~pyworkers.serve.policy.ScalingPolicy`: ``max_concurrency`` in-flight
requests each); when every isolate is full, another is restored (up to ``max_isolates``) and
the request waits for room at most ``queue_timeout`` seconds. Isolates idle past
``idle_timeout`` retire (never below ``min_idle``); dead ones are replaced; one that reached its
memory limit or raised ``MemoryError`` is drained and replaced. :meth:`Pool.swap` switches to a
new deployment without dropping requests: new isolates first, then the old ones drain
(in-flight requests and background tasks get ``drain_timeout`` seconds).

Boot failures back off exponentially (0.5 s doubling to 30 s); while a pool has no live
isolate and is backing off, requests fail at once with ``PoolUnavailable(reason="startup")``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from typing import Mapping

from pyworkers.serve.errors import PoolUnavailable, StartupFailed
from pyworkers.serve.policy import ScalingPolicy
from pyworkers.serve.factory import IsolateFactory
from pyworkers.serve.worker import Worker

log = logging.getLogger("pyworkers.serve")

#: seconds between re-checks of a request waiting for room (an isolate whose loop was blocked
#: takes requests again as soon as it awaits, which notifies nobody)
RECHECK = 0.05


@dataclasses.dataclass(frozen=True)
class PoolTimes:
    """Seconds: ``startup`` (lifespan startup), ``shutdown`` (lifespan shutdown), ``drain``
    (in-flight work when an isolate retires), ``cpu`` (guest code running without awaiting:
    the watchdog; ``None`` off)."""

    startup: float = 120.0
    shutdown: float = 5.0
    drain: float = 30.0
    cpu: float | None = 30.0


class Pool:
    """Isolates of one deployment (see the module docstring).

    ``env`` is set in each isolate's ``os.environ`` before lifespan startup (secrets); it is
    read through ``env_source()`` at each isolate start when given, so a changed secret
    reaches isolates started afterwards. A factory's own ``env_source`` / ``bindings``
    attributes (set by :func:`pyworkers.serve.targets.deployment_factory`) win over the
    pool's."""

    def __init__(self, name: str, factory: IsolateFactory, policy: ScalingPolicy,
                 times: PoolTimes = PoolTimes(), *, env_source=None, metrics=None,
                 bindings=None):
        self.name = name
        self.base_policy = policy
        policy = self._policy_for(factory)
        #: optional :class:`pyworkers.serve.admin.Metrics` (hooks ``on_*``)
        self.metrics = metrics
        self.factory = factory
        self.policy = policy
        self.times = times
        self.env_source = env_source
        #: a :class:`~pyworkers.serve.worker.BindingHost` for this deployment (or None)
        self.bindings = bindings
        self.generation = 1                   # isolates of an older one are retired
        self.deployment_generation = 1        # deployments served (swap), for logs
        self.workers: list[Worker] = []       # current generation (any state)
        self.retiring: set[Worker] = set()    # old generations and retired ones, draining
        self._numbers = itertools.count(1)
        self._changed = asyncio.Event()
        self._waiting = 0
        self._fail_streak = 0
        self._retry_at = 0.0
        self._retry_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._reaper: asyncio.Task | None = None
        self.last_error: str | None = None
        self.closed = False
        self.stats = {"booted": 0, "boot_failures": 0, "retired": 0, "crashed": 0}

    def _policy_for(self, factory: IsolateFactory) -> ScalingPolicy:
        """The base policy, with the app's own ``max_concurrency`` if its factory has one."""
        mc = getattr(factory, "max_concurrency", None)
        return dataclasses.replace(self.base_policy, max_concurrency=mc) if mc else self.base_policy

    # ------------------------------------------------------------------ views
    def snapshot(self) -> dict:
        """Counters for logs, tests and metrics."""
        states = [w.state for w in self.workers]
        return {"ready": states.count("ready"), "booting": states.count("booting"),
                "inflight": sum(w.load for w in self.workers),
                "retiring": len(self.retiring), "waiting": self._waiting,
                "generation": self.generation, **self.stats}

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.state in ("booting", "ready")]

    # ------------------------------------------------------------------ public API
    async def start(self) -> None:
        """Boot ``min_idle`` isolates and wait for them. Raises the first
        :class:`StartupFailed` (the deployment cannot start)."""
        self._reaper = asyncio.ensure_future(self._reap())
        fresh = [self._new_worker(self.factory, self.generation)
                 for _ in range(self.policy.min_idle)]
        self.workers.extend(fresh)
        try:
            await self._boot_all(fresh)
        except BaseException:
            for w in fresh:
                if w in self.workers:
                    self.workers.remove(w)
            raise

    async def acquire(self, timeout: float) -> Worker:
        """A ready worker with room for one more conversation (open it right away, before
        awaiting anything). Waits at most ``timeout`` seconds. Raises
        :class:`PoolUnavailable`."""
        end = time.monotonic() + timeout
        waited = False
        while True:
            if self.closed:
                raise PoolUnavailable(f"deployment {self.name} is shutting down", "closed")
            w = self.policy.pick(self.workers)
            if w is not None:
                if waited and self.metrics is not None and w.served == 0 and w.load == 0:
                    self.metrics.on_cold_start(self.name)
                return w  # type: ignore[return-value]
            if self._backing_off() and not self.live():
                raise PoolUnavailable(f"isolates of {self.name} fail to start: "
                                      f"{self.last_error}", "startup")
            left = end - time.monotonic()
            if left <= 0:
                raise PoolUnavailable(f"no isolate of {self.name} had room within "
                                      f"{timeout:g} s", "busy")
            self._waiting += 1
            waited = True
            try:
                self._balance()
                self._changed.clear()
                try:  # re-check at least every RECHECK s: a blocked loop frees up silently
                    await asyncio.wait_for(self._changed.wait(), min(left, RECHECK))
                except asyncio.TimeoutError:
                    pass
            finally:
                self._waiting -= 1

    async def swap(self, factory: IsolateFactory) -> int:
        """Switch to ``factory`` (a new deployment) without dropping requests: boot
        ``max(1, min_idle)`` isolates from it first (if that fails, raise
        :class:`StartupFailed` and keep serving the old one), route new requests to them,
        then drain the old isolates. Returns the deployment generation (1 for the first
        deployment served, +1 per swap)."""
        await self._replace(factory, "redeploy")
        self.deployment_generation += 1
        log.info("[%s] now serving generation %d (%d old isolates draining)", self.name,
                 self.deployment_generation, len(self.retiring))
        return self.deployment_generation

    async def upgrade(self, factory: IsolateFactory) -> None:
        """Same deployment, better isolates (e.g. copy-on-write restores once the snapshot's
        image module is compiled): replaced like :meth:`swap`, without counting as a new
        deployment generation."""
        await self._replace(factory, "upgrade")
        log.info("[%s] isolates now restore from the compiled image module", self.name)

    async def _replace(self, factory: IsolateFactory, why: str) -> None:
        if self.closed:
            raise PoolUnavailable(f"deployment {self.name} is shutting down", "closed")
        gen = self.generation + 1
        fresh = [self._new_worker(factory, gen) for _ in range(max(1, self.policy.min_idle))]
        await self._boot_all(fresh)
        old, self.workers = self.workers, fresh
        self.factory, self.generation = factory, gen
        self.policy = self._policy_for(factory)
        self._fail_streak, self.last_error = 0, None
        for w in old:
            self._retire(w, f"replaced ({why})")
        self._notify()

    async def close(self) -> None:
        """Stop every isolate: drain, lifespan shutdown; waits for them."""
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        for w in list(self.workers):
            self._retire(w, "server shutdown")
        self._notify()
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    # ------------------------------------------------------------------ internals
    def _new_worker(self, factory: IsolateFactory, generation: int) -> Worker:
        # a deployment's factory may carry its own env_source/bindings (serve.targets): they
        # follow the deployment through swaps; the pool's own are the fallback
        source = getattr(factory, "env_source", None) or self.env_source
        env = source() if source is not None else None
        w = Worker(self.name, next(self._numbers), generation, factory,
                   cpu_limit=self.times.cpu, env=env, on_change=self._worker_changed,
                   bindings=getattr(factory, "bindings", None) or self.bindings,
                   call_timeout=self.times.cpu or 30.0)
        # pre-fault an isolate's hot pages only when no request waits for it (a spare)
        w.warm_if = lambda: self._waiting == 0
        return w

    async def _boot_all(self, fresh: list[Worker]) -> None:
        results = await asyncio.gather(*(w.start(self.times.startup) for w in fresh),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for w in fresh:
                if w.state != "dead":
                    self._track(w.stop(0, self.times.shutdown))
            raise errors[0]
        self.stats["booted"] += len(fresh)
        for w in fresh:
            if self.metrics is not None:
                self.metrics.on_isolate_started(self.name, w.boot_seconds)
            log.info("[%s] isolate ready in %.0f ms (generation %d, lifespan %s)", w.id,
                     w.boot_seconds * 1000, w.generation, w.lifespan)

    def _track(self, coro) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _notify(self) -> None:
        self._changed.set()

    def _worker_changed(self, w: Worker) -> None:
        if w.state == "dead" and w in self.workers:
            self.workers.remove(w)
            if w.death not in ("stopped", None) and not w.death.startswith("boot failed"):
                self.stats["crashed"] += 1
                if self.metrics is not None:
                    self.metrics.on_isolate_death(
                        self.name, "timeout" if "interrupt" in w.death else "crash")
        if w.state == "dead":
            self.retiring.discard(w)
        elif w.recycle and w.load == 0 and w in self.workers:
            self._retire(w, w.recycle)
        self._notify()
        if not self.closed:
            self._balance()

    def _retire(self, w: Worker, reason: str) -> None:
        if w in self.workers:
            self.workers.remove(w)
        if w.state == "dead" or w in self.retiring:
            return
        self.retiring.add(w)
        self.stats["retired"] += 1
        log.info("[%s] retiring (%s) after %d requests", w.id, reason, w.served)
        self._track(w.stop(self.times.drain, self.times.shutdown))

    def _backing_off(self) -> bool:
        return self._fail_streak > 0 and time.monotonic() < self._retry_at

    def _balance(self) -> None:
        """Start isolates as the policy says (one at a time while backing off)."""
        if self.closed:
            return
        if self._backing_off():
            return  # the retry timer balances again when the back-off ends
        for _ in range(self.policy.to_spawn(self.workers, self._waiting)):
            self._spawn()

    def _spawn(self) -> None:
        w = self._new_worker(self.factory, self.generation)
        self.workers.append(w)

        async def boot() -> None:
            try:
                await w.start(self.times.startup)
            except BaseException as e:  # noqa: BLE001 - a failed boot backs off
                if w in self.workers:
                    self.workers.remove(w)
                if not isinstance(e, asyncio.CancelledError):
                    self._boot_failed(e)
                return
            self.stats["booted"] += 1
            self._fail_streak = 0
            if self.metrics is not None:
                self.metrics.on_isolate_started(self.name, w.boot_seconds)
            log.info("[%s] isolate ready in %.0f ms (generation %d, lifespan %s)", w.id,
                     w.boot_seconds * 1000, w.generation, w.lifespan)
            if w.generation != self.generation or self.closed:
                self._retire(w, "outdated generation")
            self._notify()

        self._track(boot())

    def _boot_failed(self, exc: BaseException) -> None:
        self.stats["boot_failures"] += 1
        self._fail_streak += 1
        backoff = min(30.0, 0.5 * 2 ** (self._fail_streak - 1))
        self._retry_at = time.monotonic() + backoff
        self.last_error = str(exc) or type(exc).__name__
        cause = exc.__cause__
        detail = getattr(cause, "traceback", "") or ""
        log.error("[%s] isolate failed to start (retrying in %.1f s): %s%s", self.name, backoff,
                  self.last_error, ("\n" + detail.rstrip()) if detail else "")
        self._notify()
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        self._retry_handle = asyncio.get_running_loop().call_later(backoff, self._balance)

    async def _reap(self) -> None:
        period = max(0.05, min(1.0, self.policy.idle_timeout / 2))
        while True:
            await asyncio.sleep(period)
            for w in self.policy.to_retire(self.workers, time.monotonic()):
                self._retire(w, w.recycle or "idle")  # type: ignore[arg-type]
            self._balance()


def make_pools(targets: Mapping[str, IsolateFactory], policy: ScalingPolicy,
               times: PoolTimes) -> dict[str, Pool]:
    """One :class:`Pool` per target name."""
    return {name: Pool(name, f, policy, times) for name, f in targets.items()}


__all__ = ["Pool", "PoolTimes", "StartupFailed", "make_pools"]
