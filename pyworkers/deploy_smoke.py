"""The deploy's smoke stage: restore the new snapshot into a fresh isolate and run the
lifespan startup and a ``GET /`` through ``pyworkers serve``'s own request path."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyworkers.deploy_errors import DeployError, GuestOutput, with_output
from pyworkers.deploy_guest import load_app


#: Seconds the smoke test allows the lifespan startup, and ``GET /``.
SMOKE_STARTUP_TIMEOUT = 120.0
SMOKE_REQUEST_TIMEOUT = 60.0


def smoke_test(restore_kwargs: dict, snapshot: Path, cfg, out: GuestOutput,
               inline_sync: bool = True, egress: Any = None, env: dict | None = None) -> dict:
    """Restore the snapshot into a fresh isolate (for a package snapshot, importing the app
    there), then lifespan startup + ``GET /`` in it through the guest ASGI adapter that
    ``pyworkers serve`` uses. ``env`` (vars and secrets) is given as when served; the bindings
    and volumes are scratch ones (embedded backends in a temporary directory, removed after):
    a smoke test never writes the worker's data."""
    import tempfile

    from pyworkers.bindings.host import prepare_isolate, scratch_platform
    from pyworkers.snapshot import Restorer

    timing = {}
    scratch = tempfile.TemporaryDirectory(prefix="pyworkers-smoke-")
    bindings = scratch_platform(scratch.name, cfg.name, cfg.bindings)

    def make_isolate(**_sinks) -> Any:
        # copy mode: no per-snapshot compile at deploy; the copy-on-write image module is
        # compiled by the first `pyworkers serve` (in the background, serving meanwhile) or
        # `pyworkers pull` that needs it
        r = Restorer(snapshot, copy=True, **restore_kwargs)
        timing["prepare_ms"] = round(r.timings.get("prepare_ms", 0.0), 1)
        t0 = time.perf_counter()
        iso = r.new_isolate(stdout=out, stderr=out, egress=egress)
        prepare_isolate(iso, scratch.name, cfg.name, list(cfg.volumes), out)
        if restore_kwargs.get("expect_type") == "package":  # the app is not in it: load it
            load_app(iso, cfg, out, inline_sync)
        timing["ready_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return iso

    t1 = time.perf_counter()
    with scratch:
        res = _smoke_adapter(make_isolate, out, env=env, bindings=bindings)
    res["requests_ms"] = round((time.perf_counter() - t1) * 1000
                               - (timing.get("ready_ms", 0) + timing.get("prepare_ms", 0)), 1)
    return {"restored_from_snapshot": True, "adapter": "guest", **res,
            "prepare_ms": timing.get("prepare_ms"), "ready_ms": timing.get("ready_ms")}


def _smoke_adapter(make_isolate: Callable[..., Any], out: GuestOutput, *, env: dict | None = None,
                   bindings: Any = None) -> dict:
    """Lifespan startup, ``GET /`` and lifespan shutdown through ``pyworkers serve``'s own
    isolate driver and request path (:func:`pyworkers.serve.oneshot.smoke`)."""
    from pyworkers.serve import StartupFailed
    from pyworkers.serve.oneshot import smoke

    try:
        res = asyncio.run(smoke(make_isolate, startup_timeout=SMOKE_STARTUP_TIMEOUT,
                                request_timeout=SMOKE_REQUEST_TIMEOUT, env=env,
                                bindings=bindings))
    except StartupFailed as e:
        msg = str(e).split("lifespan.startup.failed: ", 1)[-1]
        raise DeployError("smoke", f"the app's lifespan startup failed: {msg or '(no message)'}",
                          with_output("", out)) from None
    res["lifespan_message"] = None
    return res
