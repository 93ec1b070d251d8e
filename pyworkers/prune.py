"""Pruning the deployment store and the snapshot image cache.

:func:`prune_deployments` (``pyworkers deployments prune``) removes, per worker, the deployments
that are neither current nor among the ``keep`` most recent (by creation time) nor leased by a
running process (:meth:`pyworkers.store.Store.lease`), then every layer and package snapshot no
remaining deployment references, then (:func:`prune_cache`) the compiled snapshot image
modules no remaining deployment's snapshot uses.

Atomicity. Everything is decided and unlinked from the visible store under the store lock:
worker files are rewritten atomically without the pruned ids, and the pruned directories and
files are *renamed* into ``<store>/.trash`` (instant), then deleted after the lock is released.
A reader sees a deployment either listed and complete or not listed. Deploys: staging
directories are created under the same lock, so while any deploy is running (a live
``.staging/deploy-*``) layers, package snapshots and image modules are kept (a deploy may be
about to reuse one); deployments themselves can still be pruned (a deploy only reads its
worker's current one). Serve: leased deployments and everything they reference are kept.

Image modules (``<cache>/compiled/<engine>/snapshot-*.cwasm``, ~35 MiB each, rebuilt on demand
in seconds) live in the per-machine cache, which several stores may share: only the stores
given count as references, and modules used or written in the last :data:`IMAGE_GRACE_S`
seconds are kept (a serve process or deploy elsewhere is using them). A process that has an
image module loaded keeps using it after its file is unlinked.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path
from typing import Any

from pyworkers.store import Store, StoreError, atomic_write_json, remove_tree, utc_now

#: default number of most recent deployments kept per worker
DEFAULT_KEEP = 5
#: image modules used (manifest touched) or written this recently are never pruned
IMAGE_GRACE_S = 600


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _to_trash(store: Store, path: Path) -> Path:
    trash = store.root / ".trash"
    trash.mkdir(exist_ok=True)
    dest = trash / f"{path.name}-{secrets.token_hex(4)}"
    os.rename(path, dest)
    return dest


def _empty_trash(store: Store) -> None:
    trash = store.root / ".trash"
    if trash.is_dir():
        for p in trash.iterdir():
            with contextlib.suppress(OSError):
                remove_tree(p)


def _references(store: Store, exclude: set[str] = frozenset()) -> tuple[set[str], set[str], list[Path]]:
    """(layer dirs, package snapshot paths (store-relative), snapshot files) of every listed
    deployment but those in ``exclude``."""
    layers: set[str] = set()
    pkg: set[str] = set()
    snaps: list[Path] = []
    for d in store.list():
        if d.id in exclude:
            continue
        layer = d.record.get("layer")
        if layer:
            layers.add(layer["path"])
            ps = layer.get("package_snapshot")
            if ps and ps.get("path"):
                pkg.add(ps["path"])
        if d.snapshot_path is not None:
            snaps.append(d.snapshot_path)
    return layers, pkg, snaps


def prune_deployments(store: Store, *, keep: int = DEFAULT_KEEP, dry_run: bool = False,
                      cache_dir: str | os.PathLike | None = None, images: bool = True) -> dict:
    """Prune ``store`` (see the module docstring). Returns a report::

        {"dry_run": bool, "keep": int,
         "deployments": [{"id", "name", "created", "bytes"}],     # removed (or would be)
         "kept": [{"id", "name", "why": "current"|"recent"|"leased"}],
         "leases": {id: [{"pid", "holder", "created", "path"}]},  # live leases seen
         "stale_leases": int,
         "layers": [{"path", "bytes"}], "package_snapshots": [{"path", "bytes"}],
         "image_modules": [{"path", "bytes"}],
         "notes": [str], "bytes": int}                             # total freed

    Raises ``ValueError`` for ``keep < 0`` and :class:`~pyworkers.store.StoreError` (store
    locked for too long, damaged records).
    """
    if keep < 0:
        raise ValueError(f"--keep must be 0 or more, not {keep}")
    from pyworkers.leases import scan

    report: dict[str, Any] = {"dry_run": dry_run, "keep": keep, "deployments": [], "kept": [],
                              "leases": {}, "stale_leases": 0, "layers": [], "package_snapshots": [],
                              "image_modules": [], "notes": [], "bytes": 0}
    if not store.root.is_dir():
        report["notes"].append(f"{store.root} does not exist: nothing to prune")
        return report
    with store.lock():
        live, stale = scan(store.leases_dir)
        report["leases"] = live
        report["stale_leases"] = len(stale)
        if not dry_run:
            for f in stale:
                with contextlib.suppress(OSError):
                    f.unlink()
        for name in store.names():
            w = store.worker_record(name)
            if not w:
                continue
            deps = sorted((store.load(i) for i in w["deployments"]), key=lambda d: (d.created, d.id))
            recent = {d.id for d in deps[len(deps) - keep:]} if keep else set()
            victims = []
            for d in deps:
                why = ("current" if d.id == w["current"] else "recent" if d.id in recent
                       else "leased" if d.id in live else None)
                if why:
                    report["kept"].append({"id": d.id, "name": name, "why": why})
                else:
                    victims.append(d)
            for d in victims:
                report["deployments"].append({"id": d.id, "name": name, "created": d.created,
                                              "bytes": _size(d.dir)})
            if victims and not dry_run:
                gone = {d.id for d in victims}
                w["deployments"] = [i for i in w["deployments"] if i not in gone]
                w["updated"] = utc_now()
                atomic_write_json(store.workers_dir / f"{name}.json", w)  # the commit point
                for d in victims:
                    if d.dir.exists():
                        _to_trash(store, d.dir)
                    with contextlib.suppress(OSError):
                        (store.leases_dir / d.id).rmdir()
        removed_ids = {d["id"] for d in report["deployments"]} if dry_run else set()
        layers, pkg, snaps = _references(store, exclude=removed_ids)
        deploying = store.deploys_in_progress()
        if deploying:
            report["notes"].append(f"{len(deploying)} deploy(s) in progress: layers, package snapshots "
                                   "and image modules are kept this time")
        else:
            if store.layers_dir.is_dir():
                for p in sorted(store.layers_dir.iterdir()):
                    if p.is_dir() and store.rel(p) not in layers:
                        report["layers"].append({"path": store.rel(p), "bytes": _size(p)})
                        if not dry_run:
                            _to_trash(store, p)
            pdir = store.root / "package-snapshots"
            if pdir.is_dir():
                for p in sorted(pdir.glob("*.pyws")):
                    if store.rel(p) not in pkg:
                        report["package_snapshots"].append({"path": store.rel(p), "bytes": _size(p)})
                        if not dry_run:
                            _to_trash(store, p)
    if not dry_run:
        _empty_trash(store)
    if images and not deploying:
        report["image_modules"] = _prune_images(snaps, cache_dir, dry_run, report["notes"])
    report["bytes"] = sum(x["bytes"] for k in ("deployments", "layers", "package_snapshots", "image_modules")
                          for x in report[k])
    return report


def _prune_images(snapshots: list[Path], cache_dir, dry_run: bool, notes: list[str]) -> list[dict]:
    from pyworkers.snapshot import SnapshotError
    from pyworkers.runtime.install import cache_root
    from pyworkers.snapshot.restore import STALE_SOURCE_S, image_module_path, image_modules_dir

    keep: set[Path] = set()
    for s in snapshots:
        try:
            keep.add(image_module_path(s, cache_dir))
        except (SnapshotError, OSError) as e:
            notes.append(f"cannot read {s} ({e}): its image module cannot be told apart; "
                         "image modules kept")
            return []
    d = image_modules_dir(cache_dir)
    out = []
    now = time.time()
    # sources left by processes killed while compiling an image module (never needed again)
    src = cache_root(cache_dir) / "snapshots"
    for p in sorted(src.glob("*.wasm")) if src.is_dir() else ():
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > STALE_SOURCE_S:
                out.append({"path": str(p), "bytes": _size(p)})
                if not dry_run:
                    p.unlink()
    if not d.is_dir():
        return out
    for cw in sorted(d.glob("snapshot-*.cwasm")):
        manifest = cw.with_suffix(".json")
        if cw in keep:
            continue
        try:
            newest = max(p.stat().st_mtime for p in (cw, manifest) if p.exists())
        except (OSError, ValueError):
            continue
        if now - newest < IMAGE_GRACE_S:
            continue
        out.append({"path": str(cw), "bytes": _size(cw) + (_size(manifest) if manifest.exists() else 0)})
        if not dry_run:
            for p in (manifest, cw):  # manifest first: a reader then treats it as absent
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
    return out


def prune_cache(stores: list[Store], *, dry_run: bool = False,
                cache_dir: str | os.PathLike | None = None) -> dict:
    """Remove compiled snapshot image modules that no deployment of ``stores`` uses (older
    than :data:`IMAGE_GRACE_S`). Returns ``{"dry_run", "image_modules": [{"path", "bytes"}],
    "notes", "bytes"}``. Nothing is removed while a deploy runs in one of the stores."""
    notes: list[str] = []
    snaps: list[Path] = []
    busy = False
    for st in stores:
        if not st.root.is_dir():
            continue
        try:
            with st.lock():
                if st.deploys_in_progress():
                    busy = True
                snaps += [d.snapshot_path for d in st.list() if d.snapshot_path is not None]
        except StoreError as e:
            notes.append(str(e))
            busy = True
    if busy:
        notes.append("a deploy is in progress (or a store is unreadable): image modules are kept")
        mods: list[dict] = []
    else:
        mods = _prune_images(snaps, cache_dir, dry_run, notes)
    return {"dry_run": dry_run, "image_modules": mods, "notes": notes,
            "bytes": sum(m["bytes"] for m in mods)}

