"""``pyworkers serve``: options -> :class:`pyworkers.serve.ServeConfig`, targets, uvicorn.

Targets: each argument is a worker name in the deployment store (its *current* deployment,
restored from its snapshot) or an app directory (development mode; SIGHUP rebuilds it). With no
argument, every worker in the store is served, and workers deployed later are picked up too.
The store is watched (:class:`pyworkers.serve.targets.StoreWatcher`). Logs go to stderr;
nothing is written to stdout. The serving itself lives in ``pyworkers.serve``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import click

from pyworkers.cli import UserError, main

log = logging.getLogger("pyworkers.serve")


def log_config(level: str) -> dict:
    """uvicorn's logging config with every handler on stderr and pyworkers' loggers added."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    for h in cfg["handlers"].values():
        h["stream"] = "ext://sys.stderr"
    cfg["loggers"]["pyworkers"] = {"handlers": ["default"], "level": level.upper(),
                                   "propagate": False}
    return cfg


@main.command("serve", short_help="Serve deployments over HTTP from pools of isolates.")
@click.argument("targets_args", metavar="[NAME|APP_DIR]...", nargs=-1)
@click.option("--store", "store_dir", type=click.Path(file_okay=False), envvar="PYWORKERS_STORE",
              help="Deployment store (default: PYWORKERS_STORE or the user data directory).")
@click.option("--watch-interval", default=1.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds between checks of the store for new current deployments.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to bind (0: any free port; the log says which).")
@click.option("--min-idle", default=1, show_default=True, type=click.IntRange(0),
              help="Isolates per deployment booted ahead of demand.")
@click.option("--max-isolates", type=click.IntRange(1),
              help="Most isolates per deployment. "
                   "Default: number of CPUs, at least 2.")
@click.option("--max-concurrency", default=32, show_default=True, type=click.IntRange(1),
              help="In-flight requests (HTTP and WebSocket) per isolate; when every isolate "
                   "is full another is restored (up to --max-isolates).")
@click.option("--request-timeout", default=30.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Seconds from dispatch to the end of a response: past it the request's "
                   "task is cancelled and the client gets 504. Guest code running this long "
                   "without awaiting interrupts (and replaces) its isolate.")
@click.option("--drain-timeout", default=30.0, show_default=True, type=click.FloatRange(0),
              help="Seconds a retiring isolate's in-flight requests and background tasks "
                   "(BackgroundTasks, asyncio.create_task) may run before they are cancelled.")
@click.option("--max-body-size", default=100, show_default=True, type=click.IntRange(0),
              metavar="MB", help="Largest request body accepted, in MiB (413 past it).")
@click.option("--memory-limit", default=512, show_default=True, type=click.IntRange(16),
              metavar="MB", help="Linear memory cap per isolate, in MiB.")
@click.option("--queue-timeout", default=30.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Seconds a request may wait for a free isolate (then 503).")
@click.option("--idle-timeout", default=300.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Seconds an isolate beyond --min-idle may stay idle before it retires.")
@click.option("--admin-port", type=click.IntRange(0, 65535),
              help="Also listen on this port (same --host) for /healthz, /readyz and /metrics "
                   "(Prometheus); the apps are never served there.")
@click.option("--registry", "registry_ref", metavar="oci://HOST/REPO",
              help="Follow the registry: each served worker tracks the tag of its name there "
                   "(pulled, verified and prepared before the pool switches).")
@click.option("--registry-interval", default=10.0, show_default=True,
              type=click.FloatRange(0.1), help="Seconds between checks of the registry tags.")
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True),
              help="PEM CA certificates to trust for --registry.")
@click.option("--fallback", type=click.Choice(["none", "previous"]), default="none",
              show_default=True,
              help="When a worker's current deployment cannot be restored (corrupt, refused): "
                   "'previous' serves its newest earlier deployment that verifies; 'none' "
                   "answers 503 for it. Other workers are served either way.")
@click.option("--outbound-allow", multiple=True, metavar="HOST[:PORT]",
              help="Also allow outbound connections to this pattern for every served worker "
                   "(repeatable; added to each worker's [outbound] allow).")
@click.option("--outbound-deny", multiple=True, metavar="HOST[:PORT]",
              help="Refuse outbound connections to this pattern for every served worker "
                   "(repeatable; wins over allow).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes sharing the port (like uvicorn --workers): each has its "
                   "own pools; the caches, compiled modules and snapshot images (page cache, "
                   "copy-on-write) are shared. A process that dies is restarted.")
@click.option("--keep-alive-timeout", default=5.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Seconds an idle keep-alive connection stays open.")
@click.option("--cache-dir", metavar="DIR",
              help="Cache root (default: PYWORKERS_CACHE_DIR or the user cache directory).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--no-access-log", is_flag=True, help="Do not log one line per request.")
@click.option("--trace-phases", "trace_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Time every HTTP request's phases (uvicorn, host front, crossing into the "
                   "isolate, guest adapter, app, crossing back, response write) and write them "
                   "to FILE as JSON lines at shutdown (for benchmarks; three guest clock reads "
                   "per request).")
def serve_cmd(targets_args: tuple[str, ...], store_dir: str | None, watch_interval: float,
              host: str, port: int, min_idle: int,
              max_isolates: int | None, max_concurrency: int, request_timeout: float,
              drain_timeout: float, max_body_size: int, memory_limit: int,
              queue_timeout: float, idle_timeout: float, admin_port: int | None,
              registry_ref: str | None, registry_interval: float, ca_file: str | None,
              fallback: str, outbound_allow: tuple[str, ...], outbound_deny: tuple[str, ...],
              workers: int, keep_alive_timeout: float,
              cache_dir: str | None, log_level: str, no_access_log: bool,
              trace_file: str | None) -> None:
    """Serve deployments (default: every worker in the store) over HTTP.

    Each NAME is a worker in the deployment store: its current deployment is served, restored
    from its snapshot, and replaced without dropping requests when a new deployment (or a
    rollback) makes another one current. An APP_DIR is served straight from its files
    (development mode; SIGHUP rebuilds it).

    \b
    Routing, first match wins:
      Host: <name>.localhost      -> deployment <name>, path unchanged
      /<name>/...                 -> deployment <name>, root_path /<name>
      anything, one deployment    -> that deployment
    """
    import uvicorn

    from pyworkers.packages import RichProgress
    from pyworkers.serve import ServeConfig, ServeError, ServerApp
    from pyworkers.serve import DeploymentUnavailable
    from pyworkers.serve.process import fork_workers, listen
    from pyworkers.serve.targets import (ServedLeases, StoreWatcher, build_target,
                                         deployment_target, fallback_target)
    from pyworkers.store import Store, StoreError

    try:
        cfg = ServeConfig(min_idle=min_idle, max_isolates=max_isolates,
                          max_concurrency=max_concurrency, request_timeout=request_timeout,
                          queue_timeout=queue_timeout, idle_timeout=idle_timeout,
                          drain_timeout=drain_timeout, memory_limit=memory_limit << 20,
                          max_body_size=max_body_size << 20, watch_interval=watch_interval,
                          trace_phases=trace_file is not None, trace_file=trace_file)
    except ServeError as e:
        raise UserError(str(e)) from None
    pre_bound = None
    if workers > 1:  # bind first, then fork: the children share the listening sockets
        try:
            pre_bound = [listen(host, port)]
            if admin_port is not None:
                pre_bound.append(listen(host, admin_port))
        except ServeError as e:
            raise UserError(str(e)) from None
        fork_workers(workers, pre_bound)  # returns only in a child
    limit = cfg.memory_limit
    try:
        store = Store(store_dir)
        names = store.names()
    except StoreError as e:
        raise UserError(str(e))
    follower = None
    if registry_ref:
        follower = follow_registry(store, registry_ref, list(targets_args), registry_interval,
                                   ca_file, cache_dir)
        names = store.names()
    dirs = [Path(t) for t in targets_args if Path(t).is_dir() and t not in names]
    workers = [t for t in targets_args if t not in {str(d) for d in dirs}]
    if not targets_args:
        workers = names
        if not workers:
            raise UserError(f"nothing to serve: the store {store.root} has no deployments "
                            "(run `pyworkers deploy APP_DIR`, or give app directories)")
    unknown = [w for w in workers if w not in names]
    if unknown:
        raise UserError(f"no deployment or app directory named {', '.join(map(repr, unknown))} "
                        f"(deployed workers: {', '.join(names) or 'none'})")
    targets: dict = {}
    unavailable: dict[str, str] = {}
    upgrades = _Upgrades()
    outbound = (tuple(outbound_allow), tuple(outbound_deny))
    leases = ServedLeases(store)
    where: dict[str, str] = {}
    served: dict[str, str] = {}  # worker -> deployment id being served
    try:
        with RichProgress() as progress:
            for w in workers:
                progress.note(f"preparing {w}: restoring from its snapshot")
                try:
                    cur = store.current_id(w)
                    served[w], targets[w] = deployment_target(
                        store, w, memory_limit=limit, cache_dir=cache_dir, outbound=outbound,
                        upgrade=upgrades.upgrader(w, lambda w=w, cur=cur: served.get(w) == cur))
                    where[w] = f"deployment {served[w]}"
                    leases.serve(w, served[w])
                except DeploymentUnavailable as e:
                    served[w] = store.current_id(w) or ""
                    fb = fallback_target(store, w, served[w], memory_limit=limit,
                                         cache_dir=cache_dir, outbound=outbound) \
                        if fallback == "previous" else None
                    if fb is None:
                        log.error("[%s] cannot be served (503 until a deployment of it can be "
                                  "restored): %s", w, e)
                        unavailable[w] = str(e)
                        continue
                    log.error("[%s] %s; --fallback previous: serving deployment %s", w, e, fb[0])
                    targets[w] = fb[1]
                    where[w] = f"deployment {fb[0]} (fallback)"
                    leases.serve(w, fb[0])
            for d in dirs:
                name, factory = build_target(d, memory_limit=limit, cache_dir=cache_dir,
                                             progress=progress, outbound=outbound,
                                             store_root=store.root)
                if name in targets:
                    raise UserError(f"{d}: deployment name {name!r} is also used by "
                                    f"{where[name]}: set a different name = \"...\" in its "
                                    "pyworkers.toml")
                targets[name], where[name] = factory, str(d)
    except ServeError as e:
        raise UserError(str(e)) from None

    async def reload(app) -> None:
        loop = asyncio.get_running_loop()
        for d in dirs:
            try:
                name, factory = await loop.run_in_executor(
                    None, lambda d=d: build_target(d, memory_limit=limit, cache_dir=cache_dir,
                                                   progress=lambda m: log.debug("%s", m),
                                                   outbound=outbound, store_root=store.root))
                gen = await app.swap(name, factory)
                log.info("[%s] redeployed from %s (generation %d)", name, d, gen)
            except Exception as e:  # noqa: BLE001 - keep serving the old deployment
                log.error("redeploy of %s failed, still serving the previous build: %s", d, e)

    def on_started(app) -> None:
        loop = asyncio.get_running_loop()
        busy = {"reloading": False}

        async def guarded() -> None:
            if busy["reloading"]:
                log.warning("a redeploy is already running; SIGHUP ignored")
                return
            busy["reloading"] = True
            try:
                await reload(app)
            finally:
                busy["reloading"] = False

        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(guarded()))
        except (NotImplementedError, AttributeError, ValueError):  # pragma: no cover
            pass
        for name in app.pools:
            log.info("[%s] serving %s at /%s/ and http://%s.localhost:<port>/", name,
                     where[name], name, name)
        if served or not targets_args:
            watcher = StoreWatcher(store, served, app.swap, memory_limit=limit,
                                   interval=cfg.watch_interval, follow_new=not targets_args,
                                   cache_dir=cache_dir, upgrader=app.upgrader, leases=leases,
                                   outbound=outbound)
            app.watcher_task = asyncio.ensure_future(watcher.run())
        if follower is not None:
            follower.start()
        from pyworkers.bindings.cron import CronRunner, asgi_sender, pool_triggers

        app.cron = CronRunner(pool_triggers(app), asgi_sender(app))
        app.cron_task = asyncio.ensure_future(app.cron.run())

    metrics = None
    if admin_port is not None:
        from pyworkers.serve.admin import AdminApp, Metrics

        metrics = Metrics()
    if not targets:
        raise UserError("nothing can be served: " + "; ".join(
            f"{n}: {r}" for n, r in unavailable.items()))
    app = ServerApp(targets, cfg, on_startup=[on_started], metrics=metrics,
                    unavailable=unavailable)
    upgrades.attach(app)
    sockets = pre_bound
    if sockets is None and admin_port is not None:
        try:
            sockets = [listen(host, port), listen(host, admin_port)]
        except ServeError as e:
            raise UserError(str(e)) from None
    if sockets is not None and admin_port is None:
        bound = sockets[0].getsockname()[1]
        app.on_startup.append(lambda _app: logging.getLogger("uvicorn.error").info(
            "Uvicorn running on http://%s:%d (Press CTRL+C to quit) [process %d]", host, bound,
            os.getpid()))
    if admin_port is not None:
        app.admin_port = sockets[1].getsockname()[1]
        metrics.pools = lambda: app.pools
        if follower is not None:
            metrics.registry_status = follower.status
        app.admin = AdminApp(app, metrics, ready_extra=lambda: None if follower is None or
                             follower.has_deployment else "no deployment from the registry yet")
        bound = sockets[0].getsockname()[1]
        app.on_startup.append(lambda _app: logging.getLogger("uvicorn.error").info(
            "Uvicorn running on http://%s:%d (Press CTRL+C to quit); admin on http://%s:%d "
            "(/healthz /readyz /metrics)", host, bound, host, app.admin_port))
    from pyworkers.serve.connections import ServeH11Protocol

    config = uvicorn.Config(app, host=host, port=port, lifespan="on", http=ServeH11Protocol,
                            log_config=log_config(log_level), log_level=log_level,
                            access_log=not no_access_log, timeout_keep_alive=keep_alive_timeout,
                            timeout_graceful_shutdown=cfg.drain_timeout)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it shut down for once it is done; with SIGTERM's default
    # disposition that would kill the process (-15) after a clean drain: exit 0 instead
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it shut down for: exit quietly
        return
    finally:
        if follower is not None:
            follower.stop()
        leases.release_all()
    if not server.started:
        raise UserError("the server did not start (see the log above)")


class _Upgrades:
    """Upgrade callbacks made before the :class:`ServerApp` exists (targets are prepared
    first): calls are kept until :meth:`attach`, then go to the app."""

    def __init__(self) -> None:
        self.app = None
        self.early: list = []

    def upgrader(self, name: str, current):
        def upgrade(factory) -> None:
            if self.app is None:
                self.early.append((name, current, factory))
            else:
                self.app.upgrader(name, current)(factory)

        return upgrade

    def attach(self, app) -> None:
        self.app = app
        for name, current, factory in self.early:
            app.upgrader(name, current)(factory)
        self.early.clear()


def follow_registry(store, ref_text: str, workers: list[str], interval: float,
                    ca_file: str | None, cache_dir: str | None):
    """A started-later :class:`pyworkers.registry.RegistryFollower` for ``workers`` (which
    must be named), after one sync so that the store has their deployments. Raises
    :class:`UserError` when a worker has no deployment locally nor in the registry."""
    from pyworkers.commands.registry_options import make_client, parse_ref
    from pyworkers.registry import RegistryFollower

    if not workers:
        raise UserError("--registry needs the names of the workers to follow "
                        "(pyworkers serve NAME... --registry oci://HOST/REPO)")
    ref = parse_ref(ref_text)
    client = make_client(ref, None, False, Path(ca_file) if ca_file else None)
    # prepare=False: the node switches as soon as a deployment is pulled and verified; its
    # image module is compiled in the background while copy restores serve (serve.targets)
    follower = RegistryFollower(store, ref, workers, interval=interval, client=client,
                                cache_dir=cache_dir, prepare=False)
    try:
        follower.poll_once()
    except Exception as e:  # noqa: BLE001 - the local store may still have them
        log.warning("registry %s: first sync failed: %s", ref_text, e)
    missing = [w for w in workers if store.current_id(w) is None]
    if missing:
        st = follower.status()
        raise UserError(f"no deployment of {', '.join(missing)} locally nor in {ref_text}: "
                        f"{st.get('last_error') or 'the tag does not exist'}")
    return follower
