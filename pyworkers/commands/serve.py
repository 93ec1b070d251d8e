"""``pyworkers serve``: serve deployments over HTTP/1.1 (uvicorn in front) from pools of
sandboxed isolates (``pyworkers.runtime.pool``, ``pyworkers.runtime.asgi``).

Targets: each argument is a worker name in the deployment store (its *current* deployment,
restored from its dedicated snapshot; :func:`deployment_target`) or an app directory
(development mode, below). With no argument, every worker in the store is served. The store is
watched: when a worker's current deployment changes (``pyworkers deploy``,
``pyworkers deployments rollback``), its pool switches to the new one without dropping
in-flight requests.

For each APP_DIR: load its worker config (``pyworkers.toml`` or
``[tool.pyworkers]``; ``pyworkers.config``), select the runtime from its compatibility date,
resolve ``requirements.txt`` (``pyworkers.packages.resolve``; the lock is the app's
``pylock.toml`` if it has one, else one kept in the cache per app directory), download and
install the site-packages layer into ``<cache>/serve/layers/<digest of the pinned wheels>``,
and copy the app's files into ``<cache>/serve/apps/<name>-<digest of its files>`` so that a
running deployment never sees half-edited files. ``SIGHUP`` rebuilds every app directory and
swaps each deployment to the new build without dropping in-flight requests (development mode;
deployments are picked up from the store instead).

Logs (uvicorn's, the pools' and the guests' stdout/stderr, tagged ``[deployment#n stdout]``)
go to stderr; nothing is written to stdout.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import signal
import tempfile
from pathlib import Path

import click

from pyworkers.cli import UserError, main

log = logging.getLogger("pyworkers.serve")


def stage_app(app_dir: Path, name: str, root: Path, note=None) -> Path:
    """Copy ``app_dir`` as ``pyworkers deploy`` does (:func:`pyworkers.deploy.copy_app`: VCS,
    venv and cache directories and bytecode skipped, read-only) to
    ``root/apps/<name>-<first 16 hex of the copy's hash>``, unless that copy exists; returns
    it. The copy is made in a temporary sibling and renamed into place."""
    from pyworkers.deploy import copy_app

    parent = root / "apps"
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-"))
    try:
        info = copy_app(app_dir, tmp / "app", exclude=[root], note=note)
        dest = parent / f"{name}-{info['hash'].partition(':')[2][:16]}"
        if not dest.is_dir():
            try:
                (tmp / "app").rename(dest)
            except OSError:
                if not dest.is_dir():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def app_layer(app_dir: Path, selection, root: Path, cache_dir: str | None,
              progress) -> Path | None:
    """The site-packages layer for ``app_dir/requirements.txt`` (``None`` without one, or
    when it pins nothing): resolved, downloaded, then built or reused as
    ``root/layers/<layer hash>`` by :func:`pyworkers.deploy.build_layer`. Raises
    ``pyworkers.packages.PackagesError``."""
    from pyworkers.deploy import build_layer
    from pyworkers.packages import download, resolve
    from pyworkers.runtime.install import ensure_release

    req = app_dir / "requirements.txt"
    if not req.is_file():
        return None
    own = app_dir / "pylock.toml"
    if own.is_file():
        lock = own
    else:
        key = hashlib.sha256(str(app_dir.resolve()).encode()).hexdigest()[:16]
        lock = root / "locks" / key / "pylock.toml"
        lock.parent.mkdir(parents=True, exist_ok=True)
    inst = ensure_release(selection.release, cache_dir=cache_dir)
    res = resolve(req, selection, pyodide_lock=inst.lock_json, lock_path=lock,
                  cache_dir=cache_dir, progress=progress)
    if not res.wheels:
        return None
    wheels = download(res, cache_dir, progress=progress)
    return build_layer(wheels, root / "layers", release=selection.release.pyodide_version,
                       progress=progress).path


def build_target(app_dir: Path, *, memory_limit: int | None, cache_dir: str | None,
                 progress=None):
    """``(name, AppFactory)`` for one app directory (see the module docstring). Raises
    :class:`UserError` for configuration and package errors."""
    from pyworkers.config import ConfigError, load_worker_config
    from pyworkers.compat import CompatError
    from pyworkers.packages import PackagesError, cache_root
    from pyworkers.runtime.pool import AppFactory

    try:
        cfg = load_worker_config(app_dir)
        sel = cfg.runtime_selection()
    except (ConfigError, CompatError) as e:
        raise UserError(str(e)) from None
    root = cache_root(cache_dir) / "serve"
    try:
        layer = app_layer(app_dir, sel, root, cache_dir, progress)
    except PackagesError as e:
        detail = f"\n{e.detail}" if getattr(e, "detail", None) else ""
        raise UserError(f"{app_dir}: {e}{detail}") from None
    staged = stage_app(app_dir, cfg.name, root, note=getattr(progress, "note", progress))
    return cfg.name, AppFactory(release=sel.release.pyodide_version, app_dir=staged,
                                main=cfg.main, site_packages=layer, env=dict(cfg.vars),
                                memory_limit=memory_limit,
                                cache_dir=Path(cache_dir) if cache_dir else None)


def deployment_target(store, name: str, *, memory_limit: int | None):
    """``(deployment id, IsolateFactory)`` for worker ``name``'s current deployment: isolates
    restored from its dedicated snapshot (the image module is prepared here, once per machine
    and snapshot), or booted and imported when it has no snapshot. Raises
    :class:`click.ClickException` when the worker has no deployment or its snapshot is refused."""
    from functools import partial

    from pyworkers.runtime.pool import AppFactory, with_app
    from pyworkers.snapshot import Restorer, SnapshotError

    dep = store.current(name)
    if dep is None:
        raise UserError(f"worker {name!r} has no deployment in {store.root}: run `pyworkers deploy` first")
    main = dep.record["config"]["main"]
    if dep.snapshot_path is None:
        kw = dep.isolate_kwargs()
        return dep.id, AppFactory(release=kw["release"], app_dir=kw["mounts"]["/app"], main=main,
                                  site_packages=kw["site_packages"], env=kw["env"],
                                  memory_limit=memory_limit)
    try:
        restorer = Restorer(dep.snapshot_path, **dep.restore_kwargs())
    except SnapshotError as e:
        raise UserError(f"deployment {dep.id}: {e}") from None
    return dep.id, with_app(partial(restorer.new_isolate, memory_limit=memory_limit), main)


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
              help="Most isolates per deployment (one request each at a time). "
                   "Default: number of CPUs, at least 2.")
@click.option("--request-timeout", default=30.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Seconds from dispatch to the end of a response: past it the guest is "
                   "interrupted, the client gets 504 and the isolate is replaced.")
@click.option("--memory-limit", default=512, show_default=True, type=click.IntRange(16),
              metavar="MB", help="Linear memory cap per isolate, in MiB.")
@click.option("--queue-timeout", default=30.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Seconds a request may wait for a free isolate (then 503).")
@click.option("--idle-timeout", default=300.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Seconds an isolate beyond --min-idle may stay idle before it retires.")
@click.option("--cache-dir", metavar="DIR",
              help="Cache root (default: PYWORKERS_CACHE_DIR or the user cache directory).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--no-access-log", is_flag=True, help="Do not log one line per request.")
def serve_cmd(targets_args: tuple[str, ...], store_dir: str | None, watch_interval: float,
              host: str, port: int, min_idle: int,
              max_isolates: int | None, request_timeout: float, memory_limit: int,
              queue_timeout: float, idle_timeout: float, cache_dir: str | None,
              log_level: str, no_access_log: bool) -> None:
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
    from pyworkers.runtime.asgi import make_server_app
    from pyworkers.runtime.pool import default_max_isolates

    from pyworkers.store import Store, StoreError

    max_isolates = max_isolates or default_max_isolates()
    if min_idle > max_isolates:
        raise UserError(f"--min-idle {min_idle} is more than --max-isolates {max_isolates}")
    limit = memory_limit << 20
    try:
        store = Store(store_dir)
        names = store.names()
    except StoreError as e:
        raise UserError(str(e))
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
    where: dict[str, str] = {}
    served: dict[str, str] = {}  # worker -> deployment id being served
    with RichProgress() as progress:
        for w in workers:
            progress.note(f"preparing {w}: restoring from its snapshot")
            served[w], targets[w] = deployment_target(store, w, memory_limit=limit)
            where[w] = f"deployment {served[w]}"
        for d in dirs:
            name, factory = build_target(d, memory_limit=limit, cache_dir=cache_dir,
                                         progress=progress)
            if name in targets:
                raise UserError(f"{d}: deployment name {name!r} is also used by {where[name]}: "
                                'set a different name = "..." in its pyworkers.toml')
            targets[name], where[name] = factory, str(d)

    async def reload(app) -> None:
        loop = asyncio.get_running_loop()
        for d in dirs:
            try:
                name, factory = await loop.run_in_executor(
                    None, lambda d=d: build_target(d, memory_limit=limit, cache_dir=cache_dir,
                                                   progress=lambda m: log.debug("%s", m)))
                gen = await app.swap(name, factory)
                log.info("[%s] redeployed from %s (generation %d)", name, d, gen)
            except Exception as e:  # noqa: BLE001 - keep serving the old deployment
                msg = e.format_message() if isinstance(e, click.ClickException) else repr(e)
                log.error("redeploy of %s failed, still serving the previous build: %s", d, msg)

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
        if served:
            asyncio.ensure_future(watch_store(app))

    async def watch_store(app) -> None:
        """Swap a worker's pool when its current deployment changes in the store."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(watch_interval)
            for w in list(served):
                try:
                    cur = store.current_id(w)
                    if cur is None or cur == served[w]:
                        continue
                    dep_id, factory = await loop.run_in_executor(
                        None, lambda w=w: deployment_target(store, w, memory_limit=limit))
                    gen = await app.swap(w, factory)
                    log.info("[%s] switched from deployment %s to %s (generation %d)", w, served[w],
                             dep_id, gen)
                    served[w] = dep_id
                except Exception as e:  # noqa: BLE001 - keep serving the previous deployment
                    msg = e.format_message() if isinstance(e, click.ClickException) else repr(e)
                    log.error("[%s] cannot switch to the new current deployment, still serving %s: %s",
                              w, served[w], msg)

    app = make_server_app(targets, min_idle=min_idle, max_isolates=max_isolates,
                          request_timeout=request_timeout, queue_timeout=queue_timeout,
                          idle_timeout=idle_timeout, memory_limit=limit,
                          on_startup=[on_started])
    config = uvicorn.Config(app, host=host, port=port, lifespan="on",
                            log_config=log_config(log_level), log_level=log_level,
                            access_log=not no_access_log, timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it shut down for: exit quietly
        return
    if not server.started:
        raise UserError("the server did not start (see the log above)")
