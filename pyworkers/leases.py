"""Leases: a process says "I am using this deployment" so that pruning keeps it.

A lease is a file ``<store>/leases/<deployment id>/<pid>-<6 hex>.lease`` holding JSON
``{"pid", "deployment", "holder", "created"}`` on which its owner keeps an exclusive ``flock``
for as long as the lease is held. The kernel drops the lock when the owner exits, even on
``SIGKILL``, so a lease whose file is not locked is stale and ignored (and removed by the next
prune). Where ``fcntl`` is unavailable, liveness falls back to the recorded pid
(``os.kill(pid, 0)``).

Use it through :meth:`pyworkers.store.Store.lease` (which creates it under the store lock, so a
prune either sees the lease or has already finished).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import secrets
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

SUFFIX = ".lease"


class Lease:
    """A held lease (see the module docstring): ``path``, ``deployment_id``, ``holder``.
    :meth:`release` (idempotent) ends it."""

    def __init__(self, leases_dir: Path, deployment_id: str, holder: str):
        d = leases_dir / deployment_id
        d.mkdir(parents=True, exist_ok=True)
        self.deployment_id = deployment_id
        self.holder = holder
        self.path = d / f"{os.getpid()}-{secrets.token_hex(3)}{SUFFIX}"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            os.write(fd, json.dumps({"pid": os.getpid(), "deployment": deployment_id, "holder": holder,
                                     "created": created}).encode())
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_live(path: Path) -> bool:
    """Whether the lease file ``path`` is held by a running process."""
    if fcntl is not None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            return False
        finally:
            os.close(fd)  # also releases the probe's lock
    try:
        pid = int(json.loads(path.read_text())["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError, KeyError):
        return True  # unreadable or not ours to signal: assume it is in use
    return True


def scan(leases_dir: Path) -> tuple[dict[str, list[dict]], list[Path]]:
    """``(live, stale)``: live leases per deployment id (their JSON plus ``"path"``) and the
    paths of stale lease files."""
    live: dict[str, list[dict]] = {}
    stale: list[Path] = []
    if not leases_dir.is_dir():
        return live, stale
    for d in sorted(leases_dir.iterdir()):
        if not d.is_dir():
            continue
        for f in sorted(d.glob(f"*{SUFFIX}")):
            if is_live(f):
                try:
                    info = json.loads(f.read_text())
                except (OSError, ValueError):
                    info = {}
                live.setdefault(d.name, []).append({**info, "path": str(f)})
            else:
                stale.append(f)
    return live, stale
