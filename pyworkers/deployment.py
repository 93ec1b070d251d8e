"""The deployment objects of the store (:mod:`pyworkers.store`): a published
:class:`Deployment` (its record and the absolute paths it names) and a :class:`Staging`
directory, where one deploy builds before :meth:`Store.publish <pyworkers.store.Store.publish>`."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock

from pyworkers.store_files import remove_tree

if TYPE_CHECKING:
    from pyworkers.store import Store


@dataclasses.dataclass(frozen=True)
class Deployment:
    """One published deployment: ``record`` (the ``deployment.json`` dict) in store ``root``.

    Paths in the record are relative to the store root; the properties below make them absolute.
    """

    root: Path
    record: dict

    @property
    def id(self) -> str:
        """The deployment id, ``<name>-<YYYYMMDDTHHMMSSZ>-<6 hex>``."""
        return self.record["id"]

    @property
    def name(self) -> str:
        """The worker name."""
        return self.record["name"]

    @property
    def created(self) -> str:
        """Creation time, UTC ISO 8601 (``...Z``)."""
        return self.record["created"]

    @property
    def dir(self) -> Path:
        """The deployment's directory, ``<store>/deployments/<id>``."""
        return self.root / "deployments" / self.id

    def _abs(self, rel: str | None) -> Path | None:
        return None if rel is None else self.root / rel

    @property
    def app_dir(self) -> Path:
        """The copy of the app's files (mount it read-only at ``/app``)."""
        return self._abs(self.record["app"]["path"])

    @property
    def layer_dir(self) -> Path | None:
        """The site-packages layer, or ``None`` when the app has no requirements."""
        layer = self.record.get("layer")
        return self._abs(layer["path"]) if layer else None

    @property
    def lock_path(self) -> Path | None:
        """The ``pylock.toml``, or ``None`` when the app has no requirements."""
        lock = self.record.get("lock")
        return self._abs(lock["path"]) if lock else None

    @property
    def snapshot_path(self) -> Path | None:
        """The dedicated snapshot file, or ``None`` when no snapshot was taken."""
        snap = self.record.get("snapshot")
        return self._abs(snap["path"]) if snap else None

    def isolate_kwargs(self) -> dict:
        """Keyword arguments for ``pyworkers.runtime.Isolate`` (or ``restore_isolate``) that
        reproduce this deployment's sandbox: ``release`` (Pyodide version), ``site_packages``
        (layer dir or ``None``), ``mounts`` (``{"/app": app copy}``), ``env`` (the vars) and
        ``cwd`` (``"/app"``)."""
        return {
            "release": self.record["selection"]["pyodide_version"],
            "site_packages": self.layer_dir,
            "mounts": {"/app": self.app_dir},
            "env": dict(self.record["config"]["vars"]),
            "cwd": "/app",
        }

    def restore_kwargs(self) -> dict:
        """Keyword arguments for ``pyworkers.snapshot.restore_isolate(self.snapshot_path,
        **kwargs)``: the same layers the snapshot was taken with (``site_packages``,
        ``mounts``) and the checks that refuse a mismatching file (``expect_type``: the
        recorded snapshot type, ``layer_hash``, ``app_hash``). Only meaningful when
        :attr:`snapshot_path` is not ``None``."""
        layer = self.record.get("layer")
        return {
            "site_packages": self.layer_dir,
            "mounts": {"/app": self.app_dir},
            "expect_type": self.record["snapshot"]["type"] if self.record.get("snapshot") else None,
            "layer_hash": layer["hash"] if layer else None,
            "app_hash": self.record["app"]["hash"],
        }

    def to_json(self) -> dict:
        """The record, a copy (what ``deployment.json`` holds)."""
        return json.loads(json.dumps(self.record))


class Staging:
    """A deploy in progress: a private directory ``<store>/.staging/<tmp>`` (``path``).

    Build the deployment in :attr:`deployment_dir` and, when there is one, the new layer in
    :attr:`layer_dir`; then :meth:`Store.publish`. Leaving the ``with`` block removes whatever
    is left. While it exists, ``<tmp>.lock`` is held, so :meth:`Store.collect_garbage` in
    another process knows the owner is alive (the lock is released by the kernel when the owner
    dies, even by ``SIGKILL``).
    """

    def __init__(self, store: "Store"):
        self.store = store
        base = store.root / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(dir=base, prefix="deploy-"))
        self._lock = filelock.FileLock(str(self.path) + ".lock")
        self._lock.acquire(timeout=0)
        self.deployment_dir = self.path / "deployment"
        self.deployment_dir.mkdir()
        self.layer_dir = self.path / "layer"
        self.published: Deployment | None = None

    def close(self) -> None:
        """Remove the staging directory and release its lock (idempotent)."""
        if self.path.exists():
            remove_tree(self.path)
        if self._lock.is_locked:
            self._lock.release()
            with contextlib.suppress(OSError):
                os.unlink(str(self.path) + ".lock")

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
