"""``ServeConfig``: every option of ``pyworkers serve``, built once (by the CLI or a test) and
validated here, so library code never sees click."""
from __future__ import annotations

import dataclasses

from pyworkers.serve.errors import ConfigError
from pyworkers.serve.policy import ScalingPolicy, default_max_isolates
from pyworkers.serve.pool import PoolTimes


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Options of a server (units: seconds, bytes).

    Attributes:
        min_idle: isolates per deployment with room, booted ahead of demand.
        max_isolates: live isolates per deployment (``None``: CPUs, at least 2).
        max_concurrency: in-flight requests per isolate (HTTP and WebSocket).
        request_timeout: dispatch to the end of a response; past it that request's task is
            cancelled and the client gets ``504``. Guest code that runs this long without
            awaiting trips the CPU watchdog: the isolate is interrupted and replaced.
        queue_timeout: how long a request may wait for an isolate with room (then ``503``).
        idle_timeout: an isolate with no request for this long retires (above ``min_idle``).
        drain_timeout: how long a retiring isolate's in-flight requests and background tasks
            (``BackgroundTasks``, ``asyncio.create_task``) may run before they are cancelled.
        startup_timeout / shutdown_timeout: each isolate's lifespan phases.
        memory_limit: linear memory cap per isolate (bytes; ``None``: 4 GiB).
        max_body_size: request bodies larger than this get ``413`` (bytes).
        watch_interval: seconds between checks of the deployment store.
        trace_phases: time every HTTP request's phases (:mod:`pyworkers.serve.phases`; costs
            three guest clock reads per request); kept in ``ServerApp.traces``.
        trace_file: with ``trace_phases``, write the traces there (JSON lines) at shutdown.
    """

    min_idle: int = 1
    max_isolates: int | None = None
    max_concurrency: int = 32
    request_timeout: float = 30.0
    queue_timeout: float = 30.0
    idle_timeout: float = 300.0
    drain_timeout: float = 30.0
    startup_timeout: float = 120.0
    shutdown_timeout: float = 5.0
    memory_limit: int | None = 512 << 20
    max_body_size: int = 100 << 20
    watch_interval: float = 1.0
    trace_phases: bool = False
    trace_file: str | None = None

    def __post_init__(self) -> None:
        for name in ("request_timeout", "queue_timeout", "idle_timeout", "startup_timeout",
                     "shutdown_timeout", "watch_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be more than 0 seconds")
        if self.drain_timeout < 0:
            raise ConfigError("--drain-timeout must be 0 seconds or more")
        if self.max_concurrency < 1:
            raise ConfigError("--max-concurrency must be at least 1")
        if self.min_idle < 0:
            raise ConfigError("--min-idle must be 0 or more")
        if self.min_idle > self.isolates:
            raise ConfigError(f"--min-idle {self.min_idle} is more than --max-isolates "
                              f"{self.isolates}")

    @property
    def isolates(self) -> int:
        """``max_isolates`` with its default applied."""
        return self.max_isolates or default_max_isolates()

    def policy(self) -> ScalingPolicy:
        """The pools' scaling policy (a pool applies its app's own ``max_concurrency``)."""
        return ScalingPolicy(min_idle=self.min_idle, max_isolates=self.isolates,
                             max_concurrency=self.max_concurrency,
                             idle_timeout=self.idle_timeout)

    def times(self) -> PoolTimes:
        return PoolTimes(startup=self.startup_timeout, shutdown=self.shutdown_timeout,
                         drain=self.drain_timeout, cpu=self.request_timeout)


__all__ = ["ServeConfig"]
