"""The serve layer: isolates that run their own event loop, serving ASGI over HTTP.

Pieces (one request followed from uvicorn into the guest and back touches ``front`` ->
``pool`` -> ``worker`` -> ``protocol`` -> ``runtime/guest/_pyworkers_serve.py``):

- :mod:`~pyworkers.serve.protocol`: the typed host<->guest ASGI protocol (frames);
- :mod:`~pyworkers.serve.factory`: what makes a worker's isolates (restore, boot + import);
- :mod:`~pyworkers.serve.worker`: one isolate on its own thread + lifespan + conversations;
- :mod:`~pyworkers.serve.policy` / :mod:`~pyworkers.serve.pool`: scaling rules and pool mechanics;
- :mod:`~pyworkers.serve.front` / :mod:`~pyworkers.serve.routing`: the ASGI app uvicorn runs;
  :mod:`~pyworkers.serve.exchange`: one HTTP request or WebSocket forwarded into a worker;
  :mod:`~pyworkers.serve.phases`: per-request phase timings (``--trace-phases``);
- :mod:`~pyworkers.serve.targets`: deployments and app dirs as isolate factories, store watcher;
- :mod:`~pyworkers.serve.config`: :class:`ServeConfig`; :mod:`~pyworkers.serve.oneshot`:
  one request through a worker without HTTP (deploy's smoke test, benchmarks).
"""
from pyworkers.serve.config import ServeConfig
from pyworkers.serve.errors import (ConfigError, DeploymentUnavailable, PoolUnavailable,
                                    ServeError, StartupFailed)
from pyworkers.serve.front import ResponseAborted, ServerApp
from pyworkers.serve.policy import ScalingPolicy, default_max_isolates
from pyworkers.serve.pool import Pool, PoolTimes
from pyworkers.serve.factory import AppFactory, IsolateFactory, with_app
from pyworkers.serve.worker import Worker

__all__ = ["AppFactory", "ConfigError", "DeploymentUnavailable", "IsolateFactory", "Pool",
           "PoolTimes", "PoolUnavailable", "ResponseAborted", "ScalingPolicy", "ServeConfig",
           "ServeError", "ServerApp", "StartupFailed", "Worker", "default_max_isolates",
           "with_app"]
