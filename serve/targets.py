"""What a server serves: isolate factories for deployments in the store and for app
directories (development mode), and the store watcher that follows ``pyworkers deploy`` /
``pyworkers deployments rollback`` and new workers.

- :func:`deployment_target`: a worker's *current* deployment, restored from its dedicated
  snapshot (the snapshot's image module is compiled here, once per machine and snapshot), or
  booted and imported when it has none.
- :func:`build_target`: an app directory, resolved, installed and copied as ``pyworkers deploy``
  does (``<cache>/serve/{layers,apps,locks}``), served straight from its files.
- :class:`StoreWatcher`: every ``interval`` seconds, switches a served worker whose current
  deployment changed and starts serving workers that appeared in the store.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable

from pyworkers.serve.errors import DeploymentUnavailable
from pyworkers.serve.factory import AppFactory, IsolateFactory, with_app

log = logging.getLogger("pyworkers.serve")

#: a server's egress overrides: ``(allow patterns, deny patterns)`` (``--outbound-allow/-deny``)
Outbound = tuple[tuple[str, ...], tuple[str, ...]]


def deployment_target(store, name: str, *, memory_limit: int | None,
                      cache_dir: str | None = None,
                      upgrade: Callable[[IsolateFactory], None] | None = None,
                      outbound: "Outbound" = ((), ())) -> tuple[str, IsolateFactory]:
    """``(deployment id, IsolateFactory)`` for worker ``name``'s current deployment. Raises
    :class:`DeploymentUnavailable` when the worker has none or its snapshot is refused."""
    dep = store.current(name)
    if dep is None:
        raise DeploymentUnavailable(f"worker {name!r} has no deployment in {store.root}: run "
                                    "`pyworkers deploy` first")
    return dep.id, deployment_factory(dep, memory_limit=memory_limit, cache_dir=cache_dir,
                                      upgrade=upgrade, outbound=outbound)


def deployment_factory(dep, *, memory_limit: int | None, cache_dir: str | None = None,
                       upgrade: Callable[[IsolateFactory], None] | None = None,
                       outbound: "Outbound" = ((), ())) -> IsolateFactory:
    """The :data:`IsolateFactory` of one deployment: restore from its dedicated snapshot (the
    snapshot file is verified here), or boot and import when it has none.

    Isolates restore copy-on-write from the snapshot's image module, compiled once per machine
    (seconds). When it is not compiled yet and ``upgrade`` is given, the compile is taken off
    the critical path: the factory returned restores by copying the image (no compile; tens of
    ms and the image as private memory per isolate), a thread compiles the image module, then
    calls ``upgrade(copy_on_write_factory)`` (the caller swaps its pool to it). Without
    ``upgrade`` the compile happens here. Isolates get the deployment's egress policy (its
    ``[outbound]`` table) extended with the server's ``outbound`` = ``(allow, deny)`` patterns.
    Raises :class:`DeploymentUnavailable` (e.g. a corrupt or foreign snapshot, a bad CA file or
    override pattern), naming the deployment."""
    from pyworkers.deploy import egress_policy
    from pyworkers.snapshot import Restorer, SnapshotError

    main = dep.record["config"]["main"]
    conc = dep.record["config"].get("max_concurrency")
    try:
        egress = egress_policy(dep, allow=outbound[0], deny=outbound[1])
    except Exception as e:  # noqa: BLE001 - ConfigError / EgressError: the message says why
        raise DeploymentUnavailable(f"deployment {dep.id}: outbound policy: {e}") from None
    if dep.snapshot_path is None:
        kw = dep.isolate_kwargs()
        booted = AppFactory(release=kw["release"], app_dir=kw["mounts"]["/app"], main=main,
                            site_packages=kw["site_packages"], env=kw["env"],
                            memory_limit=memory_limit, max_concurrency=conc, egress=egress)

        def boot(*, stdout, stderr):
            return booted(stdout=stdout, stderr=stderr)

        boot.max_concurrency = conc  # type: ignore[attr-defined]
        return with_platform(boot, dep.root, dep.name, dep.record["config"])

    def make(copy: bool) -> IsolateFactory:
        try:
            r = Restorer(dep.snapshot_path, cache_dir=cache_dir, copy=copy,
                         **dep.restore_kwargs())
        except (SnapshotError, OSError) as e:
            raise DeploymentUnavailable(f"deployment {dep.id}: {e}") from None
        f = with_app(partial(r.new_isolate, memory_limit=memory_limit, egress=egress), main,
                     max_concurrency=conc)
        f.restorer = r  # type: ignore[attr-defined]
        return with_platform(f, dep.root, dep.name, dep.record["config"])

    if upgrade is None:
        return make(False)
    quick = make(True)  # verifies the file either way
    if quick.restorer.image_ready():  # type: ignore[attr-defined]
        return make(False)

    def compile_then_upgrade() -> None:
        t0 = time.monotonic()
        try:
            full = make(False)
        except Exception as e:  # noqa: BLE001 - keep serving in copy mode
            log.error("deployment %s: image module compile failed, isolates keep restoring by "
                      "copy: %s", dep.id, e)
            return
        log.info("deployment %s: image module compiled in %.1f s (copy-on-write restores from "
                 "now on)", dep.id, time.monotonic() - t0)
        upgrade(full)

    log.info("deployment %s: serving with copy restores while its image module compiles",
             dep.id)
    threading.Thread(target=compile_then_upgrade, name=f"compile {dep.id}", daemon=True).start()
    return quick


def with_platform(factory, store_root, worker: str, config: dict):
    """``factory`` with worker ``worker``'s platform (``config``: a deployment record's
    ``config``: ``vars``, ``bindings``, ``crons``, ``volumes``; data and secrets under
    ``store_root``): each isolate gets the worker's volumes mounted (and a hint on stderr when
    it writes to a read-only path); the returned factory carries ``env_source`` (vars and the
    worker's secrets, read at each isolate start), ``bindings`` (a
    :class:`pyworkers.bindings.host.WorkerBindings` when it declares any) and ``crons``, which
    the pool and the cron runner read (:meth:`pyworkers.serve.pool.Pool._new_worker`)."""
    from pyworkers.bindings.host import WorkerBindings, env_source, prepare_isolate

    cfg = config
    volumes = list(cfg.get("volumes") or [])

    def make(*, stdout, stderr):
        iso = factory(stdout=stdout, stderr=stderr)
        try:
            prepare_isolate(iso, store_root, worker, volumes, stderr)
        except BaseException:
            iso.close()
            raise
        return iso

    for attr in ("max_concurrency", "restorer"):
        if hasattr(factory, attr):
            setattr(make, attr, getattr(factory, attr))
    make.env_source = env_source(store_root, worker, cfg.get("vars") or {})
    spec = cfg.get("bindings") or {}
    make.bindings = WorkerBindings(store_root, worker, spec) if spec else None
    make.crons = list(cfg.get("crons") or [])
    return make


def fallback_target(store, name: str, skip: str, *, memory_limit: int | None,
                    cache_dir: str | None = None,
                    outbound: "Outbound" = ((), ())) -> tuple[str, IsolateFactory] | None:
    """``--fallback previous``: the newest deployment of ``name`` other than ``skip`` whose
    files verify and restore, as ``(id, factory)``; ``None`` if there is none."""
    for dep in reversed(store.list(name)):
        if dep.id == skip:
            continue
        try:
            return dep.id, deployment_factory(dep, memory_limit=memory_limit,
                                              cache_dir=cache_dir, outbound=outbound)
        except DeploymentUnavailable as e:
            log.warning("[%s] fallback: %s", name, e)
    return None


def stage_app(app_dir: Path, name: str, root: Path, note=None) -> Path:
    """Copy ``app_dir`` as ``pyworkers deploy`` does (:func:`pyworkers.deploy.copy_app`) to
    ``root/apps/<name>-<first 16 hex of the copy's hash>`` unless that copy exists; returns it.
    The copy is made in a temporary sibling and renamed into place."""
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
              progress, groups: tuple[str, ...] = ()) -> Path | None:
    """The site-packages layer for the app's requirements (``requirements.txt``, else
    ``pyproject.toml`` dependencies plus ``groups``, else its ``pylock.toml``, as
    ``pyworkers deploy`` reads them; ``None`` without any, or when nothing is pinned), built or
    reused by :func:`pyworkers.deploy.build_layer`. Raises ``pyworkers.packages.PackagesError``."""
    from pyworkers.deploy import build_layer
    from pyworkers.packages import IMPLICIT_REQUIREMENTS, download, read_lock, resolve
    from pyworkers.packages.inputs import app_inputs
    from pyworkers.runtime.install import ensure_release

    inputs = app_inputs(app_dir, groups)
    if inputs.kind is None:
        return None
    if inputs.kind == "pylock":
        res = read_lock(inputs.path)
    else:
        own = app_dir / "pylock.toml"
        if own.is_file():
            lock = own
        else:
            key = hashlib.sha256(str(app_dir.resolve()).encode()).hexdigest()[:16]
            lock = root / "locks" / key / "pylock.toml"
            lock.parent.mkdir(parents=True, exist_ok=True)
        inst = ensure_release(selection.release, cache_dir=cache_dir)
        res = resolve(inputs.requirements, selection, pyodide_lock=inst.lock_json,
                      lock_path=lock, cache_dir=cache_dir, progress=progress, build=True,
                      implicit=IMPLICIT_REQUIREMENTS)
    if not res.wheels:
        return None
    wheels = download(res, cache_dir, progress=progress)
    return build_layer(wheels, root / "layers", release=selection.release.pyodide_version,
                       progress=progress).path


def build_target(app_dir: Path, *, memory_limit: int | None, cache_dir: str | None,
                 progress=None, outbound: "Outbound" = ((), ()),
                 store_root=None) -> tuple[str, IsolateFactory]:
    """``(name, factory)`` for one app directory (development mode): an :class:`AppFactory`,
    with the worker's secrets, bindings, volumes and crons (:func:`with_platform`, data under
    ``store_root``) when ``store_root`` is given. Raises :class:`DeploymentUnavailable` for
    configuration and package errors."""
    from pyworkers.compat import CompatError
    from pyworkers.config import ConfigError, load_worker_config
    from pyworkers.packages import PackagesError, cache_root

    try:
        cfg = load_worker_config(app_dir)
        sel = cfg.runtime_selection()
        egress = cfg.egress_policy().extended(outbound[0], outbound[1])
    except (ConfigError, CompatError, ValueError) as e:
        raise DeploymentUnavailable(str(e)) from None
    root = cache_root(cache_dir) / "serve"
    try:
        layer = app_layer(app_dir, sel, root, cache_dir, progress, cfg.dependency_groups)
    except PackagesError as e:
        detail = f"\n{e.detail}" if getattr(e, "detail", None) else ""
        raise DeploymentUnavailable(f"{app_dir}: {e}{detail}") from None
    staged = stage_app(app_dir, cfg.name, root, note=getattr(progress, "note", progress))
    factory = AppFactory(release=sel.release.pyodide_version, app_dir=staged,
                         main=cfg.main, site_packages=layer, env=dict(cfg.vars),
                         memory_limit=memory_limit,
                         cache_dir=Path(cache_dir) if cache_dir else None,
                         max_concurrency=cfg.max_concurrency, egress=egress)
    if store_root is None:
        return cfg.name, factory

    def boot(*, stdout, stderr):
        return factory(stdout=stdout, stderr=stderr)

    boot.max_concurrency = cfg.max_concurrency  # type: ignore[attr-defined]
    return cfg.name, with_platform(boot, store_root, cfg.name, {
        "vars": dict(cfg.vars), "bindings": {k: list(v) for k, v in cfg.bindings.items()},
        "crons": list(cfg.crons), "volumes": list(cfg.volumes)})


class ServedLeases:
    """The store leases of what a server serves (:meth:`pyworkers.store.Store.lease`): one per
    worker, moved to the new deployment when its pool switches, so ``pyworkers deployments
    prune`` never removes a deployment in use. Released at exit (or when the process dies)."""

    def __init__(self, store):
        self.store = store
        self.held: dict[str, object] = {}

    def serve(self, worker: str, deployment_id: str) -> None:
        old = self.held.pop(worker, None)
        try:
            self.held[worker] = self.store.lease(deployment_id, holder="pyworkers serve")
        except Exception as e:  # noqa: BLE001 - serving goes on; prune may not see it
            log.warning("[%s] cannot lease deployment %s: %s", worker, deployment_id, e)
        if old is not None:
            old.release()  # type: ignore[attr-defined]

    def release_all(self) -> None:
        for lease in self.held.values():
            lease.release()  # type: ignore[attr-defined]
        self.held.clear()


class StoreWatcher:
    """Follows the deployment store for a running server.

    ``served`` maps worker names to the deployment id being served; ``follow_new``: also serve
    workers that appear in the store (a server started without explicit names).
    ``swap(name, factory)`` is the server's switch (:meth:`ServerApp.swap`)."""

    def __init__(self, store, served: dict[str, str], swap: Callable, *, memory_limit: int | None,
                 interval: float, follow_new: bool, cache_dir: str | None = None,
                 upgrader: Callable | None = None, leases: ServedLeases | None = None,
                 outbound: "Outbound" = ((), ())):
        self.outbound = outbound
        self.cache_dir = cache_dir
        self.leases = leases
        #: ``upgrader(name, current) -> upgrade`` (:meth:`ServerApp.upgrader`), or None
        self.upgrader = upgrader
        self.store = store
        self.served = served
        self.swap = swap
        self.memory_limit = memory_limit
        self.interval = interval
        self.follow_new = follow_new
        self._failed: dict[str, str] = {}  # worker -> deployment id that failed (log once)

    async def run(self) -> None:
        """Poll forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> None:
        """One pass over the store."""
        loop = asyncio.get_running_loop()
        names = list(self.served)
        if self.follow_new:
            try:
                names += [n for n in self.store.names() if n not in self.served]
            except Exception as e:  # noqa: BLE001 - a store being written; next pass
                log.debug("store listing failed: %s", e)
        for w in names:
            try:
                cur = self.store.current_id(w)
            except Exception as e:  # noqa: BLE001
                log.debug("[%s] cannot read the current deployment: %s", w, e)
                continue
            if cur is None or cur == self.served.get(w) or self._failed.get(w) == cur:
                continue
            upgrade = None
            if self.upgrader is not None:
                upgrade = self.upgrader(w, lambda w=w, cur=cur: self.served.get(w) == cur)
            try:
                dep_id, factory = await loop.run_in_executor(
                    None, lambda w=w: deployment_target(self.store, w,
                                                        memory_limit=self.memory_limit,
                                                        cache_dir=self.cache_dir,
                                                        upgrade=upgrade,
                                                        outbound=self.outbound))
                gen = await self.swap(w, factory)
            except Exception as e:  # noqa: BLE001 - keep serving the previous deployment
                self._failed[w] = cur
                was = self.served.get(w)
                log.error("[%s] cannot serve deployment %s%s: %s", w, cur,
                          f", still serving {was}" if was else "", e)
                continue
            self._failed.pop(w, None)
            if self.leases is not None:
                self.leases.serve(w, dep_id)
            if gen > 1:
                log.info("[%s] switched from deployment %s to %s (generation %d)", w,
                         self.served[w], dep_id, gen)
            else:  # a new pool: a worker deployed meanwhile, or one that was unavailable
                log.info("[%s] new worker: serving deployment %s at /%s/", w, dep_id, w)
            self.served[w] = dep_id


__all__ = ["ServedLeases", "StoreWatcher", "app_layer", "build_target", "deployment_factory",
           "deployment_target", "fallback_target", "stage_app", "with_platform"]
