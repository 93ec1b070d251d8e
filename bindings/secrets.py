"""Per-worker secrets, kept in the deployment store and nowhere else.

Layout: ``<store>/secrets/<worker>.json`` = ``{"format": 1, "secrets": {NAME: value}}``, the
directory ``0700``, each file ``0600``, replaced atomically (``mkstemp`` in the same directory,
which creates the file ``0600``, ``fsync``, ``os.replace``). A secret never enters a deployment
record, a snapshot or a log: ``pyworkers serve`` reads the file at each isolate start
(:meth:`SecretStore.values`) and sends the values to the guest in the ``H_ENV`` frame, after the
snapshot is restored and before lifespan startup, so a rotated secret reaches isolates started
afterwards without a redeploy.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import filelock

from pyworkers.bindings import BindingsError
from pyworkers.store_files import atomic_write_json

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORKER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: largest secret value (bytes of UTF-8)
MAX_VALUE = 64 << 10
FORMAT = 1


class SecretStore:
    """The secrets of every worker of the store rooted at ``root`` (a path)."""

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root) / "secrets"

    def path(self, worker: str) -> Path:
        if not _WORKER_RE.fullmatch(worker or ""):
            raise BindingsError(f"{worker!r} is not a worker name: use letters, digits, '.', "
                                "'_' and '-'")
        return self.dir / f"{worker}.json"

    def values(self, worker: str) -> dict[str, str]:
        """``{NAME: value}`` of ``worker`` (``{}`` when it has none). Raises
        :class:`BindingsError` when the file is unreadable."""
        p = self.path(worker)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise BindingsError(f"{p}: cannot read the secrets ({type(e).__name__}): fix or "
                                "remove the file and put the secrets again") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BindingsError(f"{p}: unknown secrets file format")
        return {str(k): str(v) for k, v in (data.get("secrets") or {}).items()}

    def names(self, worker: str) -> list[str]:
        """Sorted secret names of ``worker``."""
        return sorted(self.values(worker))

    def workers(self) -> list[str]:
        """Workers that have a secrets file."""
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json"))

    def put(self, worker: str, name: str, value: str) -> bool:
        """Set secret ``name`` of ``worker``; returns whether it existed. Raises
        :class:`BindingsError` for a bad name or a value over :data:`MAX_VALUE` bytes."""
        if not NAME_RE.fullmatch(name or ""):
            raise BindingsError(f"secret name {name!r}: use letters, digits and '_', not "
                                "starting with a digit (it becomes an environment variable)")
        if len(value.encode("utf-8")) > MAX_VALUE:
            raise BindingsError(f"secret {name}: the value is over {MAX_VALUE >> 10} KiB")
        with self._locked(worker):
            cur = self.values(worker)
            existed = name in cur
            cur[name] = value
            self._write(worker, cur)
        return existed

    def delete(self, worker: str, name: str) -> None:
        """Remove secret ``name`` of ``worker``. Raises :class:`BindingsError` if absent."""
        with self._locked(worker):
            cur = self.values(worker)
            if name not in cur:
                raise BindingsError(f"worker {worker!r} has no secret {name!r} (its secrets: "
                                    f"{', '.join(sorted(cur)) or 'none'})")
            del cur[name]
            self._write(worker, cur)

    @contextlib.contextmanager
    def _locked(self, worker: str):
        self._mkdir()
        with filelock.FileLock(str(self.dir / f".{worker}.lock"), timeout=60):
            yield

    def _mkdir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def _write(self, worker: str, values: dict[str, str]) -> None:
        # 0600 from the start (the temporary file too), atomic, fsynced with its directory
        atomic_write_json(self.path(worker), {"format": FORMAT, "secrets": values}, mode=0o600,
                          indent=None)


__all__ = ["MAX_VALUE", "SecretStore"]
