"""The deployment store: immutable deployments, a "current" pointer per worker, crash-safe.

A store is a directory (default: platformdirs' user data dir for ``pyworkers``, then
``deployments``; ``$PYWORKERS_STORE`` or an explicit path override it)::

    <store>/
      .lock                       filelock: publishing, rollback and clean-up take it
      .staging/<tmp>/             deploys in progress (each holds <tmp>.lock while it runs)
      deployments/<id>/           one immutable deployment
        deployment.json           the record (shape: pyworkers.deploy module docstring)
        app/                      a copy of the app's files (mounted read-only at /app)
        pylock.toml               the PEP 751 lock (absent when the app has no requirements)
        snapshot.bin              the dedicated snapshot (absent when none was taken)
      layers/<sha256 hex>/        site-packages layers, content-addressed, shared by deployments
      package-snapshots/<key>.pyws  package snapshots (one per layer/build/environment/guest code)
      leases/<id>/<pid>-<hex>.lease  deployments in use by a running process (see lease())
      .trash/                     what a prune is deleting (renamed there under the lock)
      workers/<name>.json         {"format": 1, "name", "current": <id>, "deployments": [<id>...],
                                   "updated": "<UTC ISO 8601>"}
      secrets/<name>.json         a worker's secrets (0600; pyworkers.bindings.secrets)
      data/<name>/                its bindings' embedded data (pyworkers.bindings.host)

Visibility and atomicity. A deployment exists for readers only once its id is listed in its
worker's ``workers/<name>.json``; that file is replaced atomically (temporary file, ``fsync``,
``os.replace``), so adding a deployment *and* making it current is one atomic step. Everything
before it (building the layer, copying the app, the snapshot) happens in ``.staging/<tmp>``;
publishing renames the staged layer into ``layers/`` (idempotent: content-addressed) and the
staged deployment into ``deployments/``, then replaces the worker file. A process killed at any
point (even ``SIGKILL``) therefore leaves the visible store as it was; the leftovers (a staging
directory whose owner is dead, a deployment directory no worker file lists) are removed by the
next :meth:`Store.collect_garbage` (every deploy calls it). Deployments are never modified after
publishing (their files are made read-only); rollback only moves the ``current`` pointer.

Pruning (:mod:`pyworkers.prune`, ``pyworkers deployments prune``) removes old deployments and
what nothing references any more; it never removes a worker's current deployment nor one a
running process holds a :meth:`Store.lease` on, and it leaves layers and package snapshots alone
while a deploy is in progress (a live ``.staging`` directory: staging directories are created
under the store lock, so a prune sees every deploy that started before it).

Paths in records are relative to the store root, so a store can be moved as a whole.

:class:`Deployment` and :class:`Staging` live in :mod:`pyworkers.deployment`, the crash-safe
file operations (:func:`atomic_write_json`, :func:`remove_tree`) in :mod:`pyworkers.store_files`;
all are importable from here.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock
import platformdirs

from pyworkers.deployment import Deployment, Staging
from pyworkers.store_files import atomic_write_json, fsync_dir, make_read_only, remove_tree

if TYPE_CHECKING:
    from pyworkers.leases import Lease

__all__ = ["Deployment", "Store", "StoreError", "Staging", "default_store_root", "RECORD_FORMAT",
           "atomic_write_json", "remove_tree"]

#: Version of the deployment record and of the worker files.
RECORD_FORMAT = 1
#: Seconds to wait for another process that holds the store lock.
LOCK_TIMEOUT = 120
RECORD = "deployment.json"
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ENV_VAR = "PYWORKERS_STORE"


class StoreError(Exception):
    """A store problem the user can act on; ``str(e)`` is one line naming the fix."""


def default_store_root() -> Path:
    """``$PYWORKERS_STORE`` if set, else ``<platformdirs user data dir>/pyworkers/deployments``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir("pyworkers", appauthor=False)) / "deployments"


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds and a ``Z`` suffix."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: cannot read the {what} ({e}): the store is damaged; "
                         "remove that file's deployment or worker") from None

class Store:
    """A deployment store rooted at ``root`` (default :func:`default_store_root`).

    Reading never needs the lock (worker files are replaced atomically); :meth:`publish`,
    :meth:`rollback` and :meth:`collect_garbage` take ``<root>/.lock`` (waiting up to
    :data:`LOCK_TIMEOUT` seconds, then :class:`StoreError`).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser().resolve() if root else default_store_root()
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: the deployment store must be a directory: pass "
                             f"another --store (or {ENV_VAR})")

    # ------------------------------------------------------------------ paths
    @property
    def deployments_dir(self) -> Path:
        return self.root / "deployments"

    @property
    def layers_dir(self) -> Path:
        return self.root / "layers"

    @property
    def workers_dir(self) -> Path:
        return self.root / "workers"

    def layer_path(self, layer_hash: str) -> Path:
        """Where the layer with ``layer_hash`` (``"sha256:<hex>"``) lives (may not exist)."""
        algo, _, hexd = layer_hash.partition(":")
        if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexd):
            raise ValueError(f"not a layer hash: {layer_hash!r}")
        return self.layers_dir / hexd

    def has_layer(self, layer_hash: str) -> bool:
        """Whether a published layer with this hash exists (a complete one: renamed in whole)."""
        return self.layer_path(layer_hash).is_dir()

    def rel(self, path: Path) -> str:
        """``path`` relative to the store root, POSIX form (for records)."""
        return Path(path).relative_to(self.root).as_posix()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store lock (``<root>/.lock``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        lk = filelock.FileLock(str(self.root / ".lock"))
        try:
            lk.acquire(timeout=LOCK_TIMEOUT)
        except filelock.Timeout:
            raise StoreError(f"{self.root} is locked by another pyworkers process for over "
                             f"{LOCK_TIMEOUT} s: wait for it to finish") from None
        try:
            yield
        finally:
            lk.release()

    # ------------------------------------------------------------------ reading
    def _worker(self, name: str) -> dict | None:
        try:
            data = _read_json(self.workers_dir / f"{name}.json", "worker file")
        except FileNotFoundError:
            return None
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise StoreError(f"{self.workers_dir / (name + '.json')}: unknown worker file "
                             "format: use the pyworkers version that wrote this store")
        return data

    def worker_record(self, name: str) -> dict | None:
        """Worker ``name``'s file (``{"format", "name", "current", "deployments", "updated"}``)
        or ``None``; rewrite it only under :meth:`lock` with ``atomic_write_json``."""
        return self._worker(name)

    def load(self, dep_id: str) -> Deployment:
        """Deployment ``dep_id`` (listed or not); :class:`StoreError` if its record is missing."""
        return self._load(dep_id)

    def names(self) -> list[str]:
        """Worker names with at least one deployment, sorted."""
        if not self.workers_dir.is_dir():
            return []
        return sorted(p.stem for p in self.workers_dir.glob("*.json") if not p.name.startswith("."))

    def _load(self, dep_id: str) -> Deployment:
        path = self.deployments_dir / dep_id / RECORD
        try:
            rec = _read_json(path, "deployment record")
        except FileNotFoundError:
            raise StoreError(f"{path} is missing: the store is damaged (deployment {dep_id} is "
                             "listed but absent)") from None
        if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
            raise StoreError(f"{path}: unknown record format: use the pyworkers version that "
                             "wrote it")
        return Deployment(self.root, rec)

    def list(self, name: str | None = None) -> list[Deployment]:
        """Published deployments (of worker ``name``, or all), oldest first (by creation time)."""
        out = []
        for n in ([name] if name else self.names()):
            w = self._worker(n)
            if w:
                out += [self._load(i) for i in w["deployments"]]
        return sorted(out, key=lambda d: (d.created, d.id))

    def current(self, name: str) -> Deployment | None:
        """Worker ``name``'s current deployment, or ``None`` if it has none."""
        w = self._worker(name)
        return self._load(w["current"]) if w else None

    def current_id(self, name: str) -> str | None:
        """The id of worker ``name``'s current deployment (``None`` if none)."""
        w = self._worker(name)
        return w["current"] if w else None

    def get(self, ref: str) -> Deployment:
        """A deployment by id, by a unique prefix of an id, or by worker name (its current one).

        Raises :class:`StoreError` when nothing or more than one deployment matches.
        """
        if ref in self.names():
            return self.current(ref)
        ids = [d for name in self.names() for d in (self._worker(name) or {}).get("deployments", [])]
        if ref in ids:
            return self._load(ref)
        hits = [i for i in ids if i.startswith(ref)]
        if len(hits) == 1:
            return self._load(hits[0])
        if hits:
            raise StoreError(f"{ref!r} matches {len(hits)} deployments ({', '.join(hits[:3])}"
                             f"{', ...' if len(hits) > 3 else ''}): give more of the id")
        raise StoreError(f"no deployment or worker {ref!r} in {self.root}: run `pyworkers "
                         "deployments list` to see them")

    # ------------------------------------------------------------------ writing
    def new_id(self, name: str) -> str:
        """A fresh deployment id: ``<name>-<UTC YYYYMMDDTHHMMSSZ>-<6 hex>``."""
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return f"{name}-{stamp}-{secrets.token_hex(3)}"

    def staging(self) -> Staging:
        """A new :class:`Staging` directory for one deploy (use it as a context manager).
        Created under the store lock, so a concurrent prune either sees it (and keeps the
        layers and package snapshots a deploy may reuse) or has finished."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock():
            return Staging(self)

    def deploys_in_progress(self) -> list[Path]:
        """Staging directories whose deploy is still running (their ``.lock`` is held)."""
        base = self.root / ".staging"
        out = []
        if base.is_dir():
            for d in sorted(base.glob("deploy-*")):
                if d.name.endswith(".lock") or not d.is_dir():
                    continue
                lk = filelock.FileLock(str(d) + ".lock")
                try:
                    lk.acquire(timeout=0)
                except filelock.Timeout:
                    out.append(d)
                else:
                    lk.release()
        return out

    @property
    def leases_dir(self) -> Path:
        return self.root / "leases"

    def lease(self, deployment_id: str, *, holder: str = "pyworkers serve") -> "Lease":
        """Declare that this process uses deployment ``deployment_id`` (its app copy, layer,
        snapshot): while the returned lease is held, pruning never removes that deployment or
        anything it references. Use it as a context manager (or call ``release()``)::

            with store.lease(dep.id):
                ...  # restore isolates from dep.snapshot_path, mount dep.layer_dir, serve

        A lease is a file ``<store>/leases/<id>/<pid>-<hex>.lease`` (JSON ``pid``,
        ``deployment``, ``holder``, ``created``) locked with ``flock`` while held; a process that
        dies (even by ``SIGKILL``) leaves a stale lease that is ignored. It is created under the
        store lock after checking the deployment is still listed, so a concurrent prune either
        sees it or has already finished (then :class:`StoreError`: take a deployment from
        :meth:`current` again). A serve process should hold one lease per deployment it has
        pools for and release it when it drops that pool. ``holder`` is a free-form label shown
        by ``pyworkers deployments prune``.
        """
        from pyworkers.leases import Lease

        if not _ID_RE.fullmatch(deployment_id):
            raise StoreError(f"invalid deployment id {deployment_id!r}")
        with self.lock():
            listed = {i for n in self.names() for i in (self._worker(n) or {}).get("deployments", [])}
            if deployment_id not in listed:
                raise StoreError(f"no deployment {deployment_id!r} in {self.root} (pruned or never "
                                 "published): run `pyworkers deployments list`")
            return Lease(self.leases_dir, deployment_id, holder)

    def leases(self) -> dict[str, list[dict]]:
        """Live leases per deployment id: ``{id: [{"pid", "holder", "created", "path"}]}``."""
        from pyworkers.leases import scan

        return scan(self.leases_dir)[0]

    def publish(self, staging: Staging, record: dict, *, make_current: bool = True) -> Deployment:
        """Publish the staged deployment atomically and (by default) make it current.

        ``record`` is the deployment record (``format``, ``id``, ``name``, ``created`` and the
        relative ``app``/``lock``/``layer``/``snapshot`` paths it names must match what is
        staged). Under the store lock: the staged layer (if any) is renamed to
        ``layers/<hex>`` unless that layer already exists, ``deployment.json`` is written into
        the staged deployment, its files are made read-only, it is renamed to
        ``deployments/<id>``, and ``workers/<name>.json`` is replaced (the commit point).

        Raises :class:`StoreError` (the id exists already, a record field is missing) and
        ``OSError``; on any error before the commit the store is unchanged.
        """
        for k in ("format", "id", "name", "created", "app"):
            if k not in record:
                raise StoreError(f"deployment record lacks {k!r}")
        dep_id, name = record["id"], record["name"]
        if not _ID_RE.fullmatch(dep_id):
            raise StoreError(f"invalid deployment id {dep_id!r}")
        final = self.deployments_dir / dep_id
        with self.lock():
            if final.exists():
                raise StoreError(f"deployment {dep_id} exists already in {self.root}")
            layer = record.get("layer")
            if layer and staging.layer_dir.is_dir():
                dest = self.layer_path(layer["hash"])
                if dest.is_dir():
                    remove_tree(staging.layer_dir)  # published meanwhile by another deploy
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging.layer_dir, dest)
                    fsync_dir(dest.parent)
            if layer and not self.layer_path(layer["hash"]).is_dir():
                raise StoreError(f"layer {layer['hash']} is neither staged nor in the store")
            atomic_write_json(staging.deployment_dir / RECORD, record)
            make_read_only(staging.deployment_dir)
            self.deployments_dir.mkdir(parents=True, exist_ok=True)
            os.rename(staging.deployment_dir, final)
            fsync_dir(self.deployments_dir)
            w = self._worker(name) or {"format": RECORD_FORMAT, "name": name, "current": None,
                                       "deployments": []}
            w["deployments"] = [*w["deployments"], dep_id]
            if make_current or w["current"] is None:
                w["current"] = dep_id
            w["updated"] = utc_now()
            try:
                atomic_write_json(self.workers_dir / f"{name}.json", w)  # commit point
            except BaseException:
                remove_tree(final)
                raise
        dep = Deployment(self.root, record)
        staging.published = dep
        return dep

    def rollback(self, name: str, to: str | None = None, *, verify: bool = True) -> tuple[Deployment, Deployment]:
        """Make an earlier deployment of worker ``name`` current; returns ``(old, new)``.

        ``to``: a deployment id (or unique prefix) of that worker; default the deployment
        created just before the current one. With ``verify`` (default) the target's files are
        checked first (:func:`pyworkers.verify.verify_loaded`) and a corrupt one is refused.
        Raises :class:`StoreError` if the worker is unknown, ``to`` belongs to another worker,
        there is nothing earlier, or the target does not verify.
        """
        with self.lock():
            w = self._worker(name)
            if w is None:
                raise StoreError(f"no worker {name!r} in {self.root}: run `pyworkers deployments "
                                 "list` to see the workers")
            ids = list(w["deployments"])
            cur = w["current"]
            if to is None:
                deps = sorted((self._load(i) for i in ids), key=lambda d: (d.created, d.id))
                order = [d.id for d in deps]
                pos = order.index(cur)
                if pos == 0:
                    raise StoreError(f"{cur} is the oldest deployment of {name!r}: there is "
                                     "nothing earlier to roll back to")
                target = order[pos - 1]
            else:
                hits = [i for i in ids if i == to] or [i for i in ids if i.startswith(to)]
                if len(hits) != 1:
                    other = "" if hits else self._owner_hint(to)
                    raise StoreError(f"{to!r} is {'ambiguous among' if hits else 'not one of'} "
                                     f"the deployments of {name!r}{other}: run `pyworkers "
                                     f"deployments list --name {name}`")
                target = hits[0]
            old = self._load(cur)
            if verify:
                from pyworkers.verify import verify_loaded

                problems = verify_loaded(self._load(target))
                if problems:
                    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                    raise StoreError(f"refusing to roll back to {target}: it does not verify: "
                                     f"{problems[0]}{more}; run `pyworkers deployments verify "
                                     f"{target}`")
            w["current"] = target
            w["updated"] = utc_now()
            atomic_write_json(self.workers_dir / f"{name}.json", w)
            return old, self._load(target)

    def _owner_hint(self, ref: str) -> str:
        for n in self.names():
            if any(i.startswith(ref) for i in (self._worker(n) or {}).get("deployments", [])):
                return f" (it belongs to worker {n!r})"
        return ""

    def collect_garbage(self) -> list[Path]:
        """Remove what killed deploys left: staging directories whose owner is dead and
        deployment directories no worker file lists. Returns the removed paths."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        with self.lock():
            base = self.root / ".staging"
            if base.is_dir():
                for d in base.iterdir():
                    if d.name.endswith(".lock") or not d.name.startswith("deploy-"):
                        continue
                    lk = filelock.FileLock(str(d) + ".lock")
                    try:
                        lk.acquire(timeout=0)
                    except filelock.Timeout:
                        continue  # its deploy is still running
                    try:
                        remove_tree(d)
                        removed.append(d)
                    finally:
                        lk.release()
                        with contextlib.suppress(OSError):
                            os.unlink(str(d) + ".lock")
                for lf in base.glob("deploy-*.lock"):  # lock files whose directory is gone
                    if not Path(str(lf)[:-5]).exists():
                        lk = filelock.FileLock(str(lf))
                        try:
                            lk.acquire(timeout=0)
                        except filelock.Timeout:
                            continue
                        lk.release()
                        with contextlib.suppress(OSError):
                            os.unlink(lf)
            if self.deployments_dir.is_dir():
                listed = {i for n in self.names() for i in (self._worker(n) or {}).get(
                    "deployments", [])}
                for d in self.deployments_dir.iterdir():
                    if d.name not in listed:
                        remove_tree(d)
                        removed.append(d)
        return removed
