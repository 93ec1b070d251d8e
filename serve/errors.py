"""Errors of the serve layer (one root: :class:`ServeError`)."""
from __future__ import annotations


class ServeError(Exception):
    """Root of the errors ``pyworkers.serve`` raises (bad configuration, a deployment that
    cannot be served, a pool that cannot give an isolate)."""


class ConfigError(ServeError):
    """A serve option is invalid; the message names the option and the fix."""


class StartupFailed(ServeError):
    """An isolate could not start: the factory failed, lifespan startup failed
    (``lifespan.startup.failed``), timed out, or the isolate died during it."""


class PoolUnavailable(ServeError):
    """No isolate could be had: the pool is closed, isolates fail to start, or none had room
    within the queue timeout. ``reason`` is ``"closed"``, ``"startup"`` or ``"busy"``."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class DeploymentUnavailable(ServeError):
    """A deployment cannot be served (missing, refused snapshot, failed verification)."""
