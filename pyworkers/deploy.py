"""Deploy: turn an app directory into an immutable, snapshotted deployment in the store.

:func:`deploy` runs these stages in order, timing each (milliseconds, ``timings_ms``):

=========  ===================================================================================
config     read ``pyworkers.toml`` / ``[tool.pyworkers]`` (:mod:`pyworkers.config`); the
           caller's overrides (CLI flags) win
runtime    select the runtime release (:mod:`pyworkers.compat`) and install it if needed
resolve    ``requirements.txt`` -> hash-pinned wheels (:func:`pyworkers.packages.resolve`);
           the lock is reused without the network when its inputs are unchanged (seeded from
           the app's ``pylock.toml``, else from the worker's current deployment)
download   the wheels into the shared, content-addressed wheel cache (verified)
layer      the site-packages layer (:func:`build_layer`), content-addressed by
           :func:`layer_hash`; reused from the store when a deployment already published it
app        copy the app's files into the deployment (hashed, streamed, modification times kept;
           VCS/cache/venv dirs skipped; size, file-count and symbolic-link checks: app_files)
boot       a fresh isolate: the layer as site-packages, the app copy read-only at ``/app``,
           the worker's vars as environment, ``/app`` on ``sys.path``
import     import ``main``'s module (runs its top level), check the attribute is an ASGI 3
           application (an ``async`` callable taking ``scope, receive, send``) and load it
           into the guest ASGI adapter (``runtime/guest/_pyworkers_asgi.py``)
snapshot   the dedicated snapshot (:func:`pyworkers.snapshot.take_snapshot`), or a package
           snapshot with ``no_python_dedicated_snapshot``
smoke      restore the snapshot into a fresh isolate and, through the guest ASGI adapter of
           ``pyworkers serve``, run the ASGI ``lifespan`` startup and a ``GET /`` (its status is
           only reported)
publish    write the record and publish the deployment atomically (:mod:`pyworkers.store`)
=========  ===================================================================================

Everything is built in a private staging directory inside the store and published by renames
at the end, so a failing or killed deploy leaves the store as it was.

Errors: :class:`DeployError` (``stage``, one-line ``message``, multi-line ``detail``: the app's
traceback from the sandbox, or the resolver's explanation). A failing top level, an import
error, a ``main`` that is not ASGI, an unresolvable requirement, a lifespan startup that fails,
all fail the deploy and write nothing.

Deployment record (``deployment.json``; paths relative to the store root)::

    {"format": 1, "id": "<name>-<YYYYMMDDTHHMMSSZ>-<6 hex>", "name": str,
     "created": "<UTC ISO 8601>Z", "pyworkers_version": str,
     "config": {"name", "main", "compatibility_date": "YYYY-MM-DD",
                "compatibility_flags": [str], "vars": {str: str},
                "bindings": {"kv"|"sql"|"objects": [{"binding", "url"?}]},
                "crons": [{"schedule", "path"}],
                "volumes": [{"mount", "max_size": int | null}],
                "source": "<config file>" | null, "app_dir": "<absolute source dir>"},
     "selection": RuntimeSelection.to_json(),
     "app": {"path": "deployments/<id>/app", "hash": "sha256:<hex>", "files": int,
             "bytes": int},
     "lock": null | {"path": "deployments/<id>/pylock.toml", "reused": bool,
                     "seed": "app" | "previous" | null, "inputs": "sha256:<hex>",
                     "packages": [{"name", "version", "source", "wheel", "sha256", "url"}],
                     "skipped": [str], "notes": [str],
                     "source": "requirements.txt" | "pyproject.toml [project] dependencies"
                               | "pylock.toml",
                     "built_from_sdist": [name], "left_out": [str]},
     "wheels": null | {"count": int, "bytes": int, "cached": int, "downloaded": int},
     "layer": null | {"hash": "sha256:<hex>", "path": "layers/<hex>", "reused": bool,
                      "files": int, "bytes": int, "unresolved_libraries": {so: [lib]},
                      "package_snapshot": {"path": "package-snapshots/<key>.pyws",
                                           "reused": bool}},
     "entropy_at_import": [[module, calls], ...],  # top-level entropy use (not `random`)
     "warmup": [{"method", "target", "status", "bytes", "ms"}],  # run before the snapshot
     "snapshot": {"path": "deployments/<id>/snapshot.bin", "type": "dedicated" | "package",
                  "bytes": int, "sha256": "sha256:<hex>", "metadata": {...}},
     "asgi": {"object": "<module.qualname of the app's type>", "adapter": "guest"},
     "smoke": {"restored_from_snapshot": true, "adapter": "guest",
               "lifespan": "complete" | "unsupported", "lifespan_message": str | null,
               "status": int | null, "body_bytes": int, "error": str | null,
               "prepare_ms": float, "ready_ms": float, "requests_ms": float},
     "timings_ms": {"config", "runtime", "resolve", "download", "layer", "app", "boot",
                    "import", "snapshot", "smoke", "total": float}}

(``timings_ms``: milliseconds per stage; ``total`` runs from the start to the publish step,
whose own time, a few milliseconds of renames, is only shown in the progress output.
``smoke.prepare_ms``: the first-use preparation of the snapshot's image module (a full
compile, cached per machine by ``pyworkers.snapshot``, so ``pyworkers serve`` restores the
published snapshot without it). ``smoke.ready_ms``: restoring the snapshot into a fresh
isolate (and, for a package snapshot, importing the app). ``smoke.requests_ms``: lifespan
startup, ``GET /`` and lifespan shutdown.) ``asgi.adapter``/``smoke.adapter``: always
``"guest"``: the guest ASGI adapter of ``pyworkers serve`` (``runtime/guest/_pyworkers_asgi.py``)
is loaded before the snapshot (a restored isolate is ready to serve) and drives the smoke test.

``lock``, ``wheels`` and ``layer`` are ``null`` for an app without ``requirements.txt``
(``wheels`` and ``layer`` also when the requirements resolve to no wheels). ``wheels.cached``
counts the wheels that were already in the shared cache before this deploy.

This module is the pipeline; its parts live next to it: :mod:`pyworkers.deploy_progress`
(progress reporting), :mod:`pyworkers.deploy_errors` (:class:`DeployError`, error messages),
:mod:`pyworkers.deploy_layer` (the layer), :mod:`pyworkers.deploy_guest` (the import stage's
guest harness), :mod:`pyworkers.deploy_snapshot` (boot and snapshot stages),
:mod:`pyworkers.deploy_smoke` (the smoke test) and :mod:`pyworkers.deploy_config` (secrets and
bindings checks, :func:`egress_policy`). ``DeployError``, ``DeployProgress``,
``RichDeployProgress``, ``layer_hash``, ``Layer``, ``build_layer`` and ``egress_policy`` are
importable from here too.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pyworkers import app_files as _app_files
from pyworkers.app_files import IGNORED_DIRS, IGNORED_FILES, IGNORED_SUFFIXES, AppDirError, AppLimits
from pyworkers.deploy_config import check_platform, egress_policy  # noqa: F401 - re-exported
from pyworkers.deploy_errors import DeployError, GuestOutput, as_deploy_error
from pyworkers.deploy_guest import (entropy_at_import, format_calls, in_app, load_app,
                                    warm_up)
from pyworkers.deploy_layer import Layer, build_layer, layer_hash, tree_size
from pyworkers.deploy_progress import (DeployProgress, RenamedProgress, RichDeployProgress,
                                       as_progress, fmt_bytes, fmt_seconds)
from pyworkers.deploy_smoke import smoke_test
from pyworkers.deploy_snapshot import (check_no_open_connections, package_isolate,
                                       take_deploy_snapshot)
from pyworkers.store import RECORD_FORMAT, Deployment, Store, utc_now

__all__ = ["DeployError", "DeployProgress", "RichDeployProgress", "deploy", "layer_hash",
           "Layer", "build_layer", "copy_app", "STAGES", "SNAPSHOT_FILE"]

#: The stages, in order (keys of ``timings_ms`` besides ``"total"``).
STAGES = ("config", "runtime", "resolve", "download", "layer", "app", "boot", "import",
          "snapshot", "smoke", "publish")
#: Name of the snapshot file inside a deployment.
SNAPSHOT_FILE = "snapshot.bin"


class _Stages:
    """Times stages and turns their exceptions into :class:`DeployError`."""

    def __init__(self, progress: DeployProgress):
        self.progress = progress
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[dict]:
        info = {"summary": ""}
        self.progress.stage_start(stage)
        t0 = time.perf_counter()
        try:
            yield info
        except BaseException as e:
            dt = time.perf_counter() - t0
            self.timings[stage] = round(dt * 1000, 1)
            self.progress.stage_failed(stage, dt)
            err = as_deploy_error(stage, e)
            if err is e:
                raise
            raise err from e
        dt = time.perf_counter() - t0
        self.timings[stage] = round(dt * 1000, 1)
        self.progress.stage_done(stage, dt, info["summary"])


def copy_app(src: Path, dest: Path, *, exclude: Sequence[Path] = (),
             note: Callable[[str], None] | None = None, limits: AppLimits | None = None) -> dict:
    """:func:`pyworkers.app_files.copy_app` (limits, streaming, kept modification times,
    symbolic links) with its :class:`~pyworkers.app_files.AppDirError` raised as a
    :class:`DeployError` of the ``app`` stage."""
    try:
        return _app_files.copy_app(src, dest, exclude=exclude, note=note, limits=limits)
    except AppDirError as e:
        raise DeployError("app", str(e)) from None

def deploy(app_dir: str | os.PathLike, *,
           store: Store | str | os.PathLike | None = None,
           name: str | None = None,
           main: str | None = None,
           compatibility_date: str | None = None,
           flags: Sequence[str] | None = None,
           vars: Mapping[str, str] | None = None,
           cache_dir: str | os.PathLike | None = None,
           index_url: str | None = None,
           extra_index_urls: Sequence[str] | None = None,
           progress: DeployProgress | Callable[[str], None] | None = None,
           today: Any = None,
           build: bool = True) -> Deployment:
    """Deploy the app in ``app_dir`` into ``store``; returns the published, current
    :class:`~pyworkers.store.Deployment` (its ``record`` has the shape in the module docstring).

    Args:
        app_dir: the app directory (``pyworkers.toml`` or ``pyproject.toml``, the module named
            by ``main``, optionally ``requirements.txt``).
        store: a :class:`~pyworkers.store.Store` or its directory; default
            ``$PYWORKERS_STORE`` or the user data directory (``pyworkers/deployments``).
        name, main, compatibility_date: override the config file (``None``: not given).
        flags: compatibility flags; replace the file's ``compatibility_flags`` when given.
        vars: environment variables, merged over the file's ``[vars]``.
        cache_dir: cache root for runtimes and wheels (default ``$PYWORKERS_CACHE_DIR`` or the
            user cache dir).
        index_url, extra_index_urls: package indexes (default: pip's configuration).
        progress: a :class:`DeployProgress`, a ``(str) -> None`` callable, or ``None``.
        today: the current date for the compatibility check (tests).
        build: build pure-Python wheels from sdists for packages without a wheel for the
            runtime (``--no-build`` turns it off).

    Raises :class:`DeployError` (the store is then unchanged); ``KeyboardInterrupt`` likewise
    leaves the store unchanged.
    """
    prog = as_progress(progress)
    stages = _Stages(prog)
    st = store if isinstance(store, Store) else Store(store)
    app_dir = Path(app_dir)
    t_start = time.perf_counter()

    with stages("config") as info:
        from pyworkers.config import load_worker_config

        cfg = load_worker_config(app_dir, {
            "name": name, "main": main, "compatibility_date": compatibility_date,
            "compatibility_flags": list(flags) if flags else None,
            "vars": dict(vars) if vars else None})
        sel = cfg.runtime_selection(today=today)
        egress = cfg.egress_policy()  # checks the CA file now, before any work
        info["summary"] = (f"{cfg.name} ({cfg.main}), compatibility date "
                           f"{cfg.compatibility_date}"
                           + (f", from {cfg.source.name}" if cfg.source else ""))
        app_dir = app_dir.resolve()
        check_platform(cfg, st)
        try:  # the store: the worker's current deployment (lock seed), leftovers, staging
            previous = st.current(cfg.name) if st.root.is_dir() else None
            if st.root.is_dir():
                st.collect_garbage()
            staging = st.staging()
        except OSError as e:
            raise DeployError("config", f"cannot use the deployment store {st.root}: {e}: pass "
                                        "another --store") from None

    with staging:
        with stages("runtime") as info:
            from pyworkers.runtime.install import ensure_release

            installed = ensure_release(sel.release, cache_dir=cache_dir, progress=prog.status)
            r = sel.release
            info["summary"] = (f"Pyodide {r.pyodide_version} (Python {r.python_version}, "
                               f"{r.flag}{', experimental' if r.experimental else ''})")

        dep_id = st.new_id(cfg.name)
        dep_rel = f"deployments/{dep_id}"
        ddir = staging.deployment_dir
        record: dict[str, Any] = {
            "format": RECORD_FORMAT, "id": dep_id, "name": cfg.name, "created": None,
            "pyworkers_version": _version(),
            "config": {
                "name": cfg.name, "main": cfg.main,
                "compatibility_date": cfg.compatibility_date.isoformat(),
                "compatibility_flags": list(cfg.compatibility_flags),
                "vars": dict(cfg.vars),
                "max_concurrency": cfg.max_concurrency,
                "outbound": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in cfg.outbound.items()},
                "bindings": {k: [dict(b) for b in v] for k, v in cfg.bindings.items()},
                "crons": [dict(c) for c in cfg.crons],
                "volumes": [dict(v) for v in cfg.volumes],
                "source": str(cfg.source.resolve()) if cfg.source else None,
                "app_dir": str(app_dir),
            },
            "selection": sel.to_json(),
        }

        # ---------------------------------------------------------------- packages
        from pyworkers.packages.inputs import app_inputs

        res = None
        cached: list = []
        lock_path = ddir / "pylock.toml"
        with stages("resolve") as info:
            inputs = app_inputs(app_dir, cfg.dependency_groups)
            if inputs.kind is None:
                record["lock"] = None
                info["summary"] = "no requirements.txt or pyproject.toml dependencies"
            elif inputs.kind == "pylock":
                from pyworkers.packages import read_lock

                shutil.copyfile(inputs.path, lock_path)
                os.chmod(lock_path, 0o644)
                res = dataclasses.replace(read_lock(lock_path), reused=True)
                info["summary"] = f"{len(res.wheels)} package(s) from the app's pylock.toml as given"
                record["lock"] = {
                    "path": f"{dep_rel}/pylock.toml", "reused": True, "seed": "app",
                    "inputs": res.inputs, "packages": res.to_json(), "skipped": list(res.skipped),
                    "notes": [], "source": "pylock.toml", "built_from_sdist": [
                        w.name for w in res.built_from_sdist()], "left_out": []}
            else:
                from pyworkers.packages import IMPLICIT_REQUIREMENTS, resolve

                seed = None
                if (app_dir / "pylock.toml").is_file():
                    seed, src = app_dir / "pylock.toml", "app"
                elif previous is not None and previous.lock_path and previous.lock_path.is_file():
                    seed, src = previous.lock_path, "previous"
                if seed is not None:
                    shutil.copyfile(seed, lock_path)
                    os.chmod(lock_path, 0o644)
                shown = (f"pylock.toml (from {'the app' if src == 'app' else 'the current deployment'})"
                         if seed is not None else "pylock.toml")
                res = resolve(inputs.requirements, sel,
                              pyodide_lock=getattr(installed, "lock_json", None),
                              index_url=index_url, extra_index_urls=extra_index_urls,
                              lock_path=lock_path, cache_dir=cache_dir,
                              progress=RenamedProgress(prog, str(lock_path), shown),
                              build=build, implicit=IMPLICIT_REQUIREMENTS)
                built = res.built_from_sdist()
                info["summary"] = (f"{len(res.wheels)} package(s) from {inputs.shown}, "
                                   + ("lock reused (inputs unchanged)" if res.reused
                                      else "resolved")
                                   + (f"; built from sdists: "
                                      f"{', '.join(f'{w.name} {w.version}' for w in built)}"
                                      if built else ""))
                record["lock"] = {
                    "path": f"{dep_rel}/pylock.toml", "reused": res.reused,
                    "seed": src if seed is not None else None, "inputs": res.inputs,
                    "packages": res.to_json(), "skipped": list(res.skipped),
                    "notes": list(res.notes), "source": inputs.shown,
                    "built_from_sdist": [w.name for w in built], "left_out": list(res.left_out)}

        with stages("download") as info:
            if res is None or not res.wheels:
                record["wheels"] = None
                info["summary"] = "nothing to download"
            else:
                from pyworkers.packages import WheelCache, cache_root, download, write_lock

                wc = WheelCache(cache_root(cache_dir) / "packages")
                had = sum(1 for w in res.wheels if wc.path(w.sha256).is_file())
                cached = download(res, cache_dir, progress=prog, index_url=index_url)
                got = tuple(c.wheel for c in cached)
                if got != res.wheels:  # lock pins fetched from the index instead
                    res = dataclasses.replace(res, wheels=got)
                    write_lock(res, lock_path)
                    record["lock"]["packages"] = res.to_json()
                size = sum(c.path.stat().st_size for c in cached)
                record["wheels"] = {"count": len(cached), "bytes": size, "cached": had,
                                    "downloaded": len(cached) - had}
                info["summary"] = (f"{len(cached)} wheel(s), {fmt_bytes(size)} "
                                   f"({had} cached, {len(cached) - had} downloaded)")

        with stages("layer") as info:
            layer_mount = None
            lh = None
            if not cached:
                record["layer"] = None
                info["summary"] = "no packages: no layer"
            else:
                layer = build_layer(cached, st.layers_dir, release=sel.release.pyodide_version,
                                    staging_dir=staging.layer_dir, progress=prog)
                lh, layer_mount = layer.hash, layer.path
                files, size = tree_size(layer_mount)
                record["layer"] = {"hash": lh, "path": st.rel(st.layer_path(lh)),
                                   "reused": layer.reused, "files": files, "bytes": size,
                                   "unresolved_libraries": layer.unresolved_libraries}
                info["summary"] = (f"{lh[:19]}..., {files} files, {fmt_bytes(size)}"
                                   + (" (reused)" if layer.reused else ""))

        with stages("app") as info:
            app_copy = ddir / "app"
            a = copy_app(app_dir, app_copy, exclude=[st.root], note=prog.note)
            record["app"] = {"path": f"{dep_rel}/app", **a}
            info["summary"] = f"{a['files']} file(s), {fmt_bytes(a['bytes'])}, {a['hash'][:19]}..."

        # ---------------------------------------------------------------- sandbox
        out = GuestOutput()
        iso_kwargs = {"release": sel.release.pyodide_version, "site_packages": layer_mount,
                      "mounts": {"/app": app_copy}, "env": dict(cfg.vars), "cwd": "/app",
                      "cache_dir": cache_dir, "stdout": out, "stderr": out, "egress": egress}
        with stages("boot") as info:
            iso, info["summary"], pkg_info = package_isolate(st, iso_kwargs, lh, layer_mount, prog)
            if record["layer"] is not None:
                record["layer"]["package_snapshot"] = pkg_info

        try:
            with stages("import") as info:
                entropy = entropy_at_import(iso, cfg.module)
                record["asgi"] = load_app(iso, cfg, out, sel.enabled("python_inline_sync_endpoints"),
                                          getattr(installed, "lock_json", None),
                                          sel.release.pyodide_version)
                record["entropy_at_import"] = entropy
                record["warmup"] = []
                info["summary"] = f"{cfg.main} is an ASGI app ({record['asgi']['object']})"
                ours = [(m, n) for m, n in entropy if in_app(app_copy, m)]
                libs = [(m, n) for m, n in entropy if not in_app(app_copy, m)]
                if ours:
                    msg = (f"the app's top level used entropy before the snapshot: {format_calls(ours)}; every "
                           "isolate restored from it starts with the same values (e.g. keys or tokens "
                           "made at import time): create them per request or in lifespan startup instead")
                    if sel.enabled("python_entropy_at_import_error"):
                        raise DeployError("import", msg, "")
                    prog.warn(msg)
                if libs:
                    prog.note(f"library modules drew entropy at import (usually internal identifiers; "
                              f"shared by every restored isolate): {format_calls(libs)}")

            with stages("snapshot") as info:
                if sel.enabled("python_dedicated_snapshot"):
                    record["warmup"] = warm_up(iso, cfg, out, prog)
                    check_no_open_connections(iso, app_copy)
                    snap = take_deploy_snapshot(
                        iso, ddir / SNAPSHOT_FILE, selection=sel, layer_hash=lh,
                        app_hash=record["app"]["hash"], progress=prog)
                else:  # no_python_dedicated_snapshot: packages imported, the app is not
                    if cfg.warmup:
                        prog.warn("warmup is ignored under no_python_dedicated_snapshot (the "
                                  "snapshot does not hold the app)")
                    iso.close()
                    iso, _summary, _info = package_isolate(st, iso_kwargs, lh, layer_mount, prog)
                    iso.call("_pyworkers_asgi:configure",
                             inline_sync=sel.enabled("python_inline_sync_endpoints"))
                    snap = take_deploy_snapshot(
                        iso, ddir / SNAPSHOT_FILE, selection=sel, layer_hash=lh,
                        app_hash=record["app"]["hash"], progress=prog, snapshot_type="package")
                snap["path"] = f"{dep_rel}/{SNAPSHOT_FILE}"
                record["snapshot"] = snap
                info["summary"] = f"{snap['type']}, {fmt_bytes(snap['bytes'])}"
        finally:
            iso.close()

        with stages("smoke") as info:
            restore_kwargs = {"site_packages": layer_mount, "mounts": {"/app": app_copy},
                              "expect_type": record["snapshot"]["type"], "layer_hash": lh,
                              "app_hash": record["app"]["hash"], "cache_dir": cache_dir}
            from pyworkers.bindings.secrets import SecretStore

            secrets = SecretStore(st.root).values(cfg.name) if st.root.is_dir() else {}
            record["smoke"] = smoke_test(restore_kwargs, ddir / SNAPSHOT_FILE, cfg, out,
                                         sel.enabled("python_inline_sync_endpoints"), egress,
                                         env={**cfg.vars, **secrets})
            s = record["smoke"]
            status = f"GET / -> {s['status']}" if s["status"] is not None else "GET / -> no response"
            if s["error"]:
                status += f" ({s['error'].strip().splitlines()[-1]})"
                prog.warn(f"GET / raised in the smoke test:\n{s['error'].rstrip()}")
            how = (f"restored snapshot in {s['ready_ms']:.0f} ms"
                   + (f" (image module prepared in {fmt_seconds(s['prepare_ms'] / 1000)}, cached "
                      "for serve)" if s.get("prepare_ms") else ""))
            info["summary"] = f"{how}, lifespan {s['lifespan']}, {status}"

        with stages("publish") as info:
            record["created"] = utc_now()
            # The record is written by the publish step itself: it holds the time of every
            # stage before it and the total up to it; the publish time is only reported.
            record["timings_ms"] = dict(stages.timings)
            record["timings_ms"]["total"] = round((time.perf_counter() - t_start) * 1000, 1)
            dep = st.publish(staging, record)
            info["summary"] = f"{dep.id} is now current for {cfg.name}"
        return dep

def _version() -> str:
    from pyworkers import __version__

    return __version__
