"""Crash-safe file operations of the deployment store (:mod:`pyworkers.store`): atomic JSON
writes (temporary file, ``fsync``, ``os.replace``, ``fsync`` of the directory), read-only
deployment trees, and removal of trees that hold read-only files."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """``fsync`` directory ``path`` (a rename in it is then durable); errors are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Any, *, mode: int = 0o644, indent: int | None = 2) -> None:
    """Write ``data`` as JSON to ``path``: temporary file in the same directory (created 0600,
    so a secret is never readable by others, then given ``mode``), ``fsync``, ``os.replace``,
    ``fsync`` of the directory. Readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def make_read_only(root: Path) -> None:
    """Clear the write bits of every file under ``root`` (directories stay writable so the
    store can still delete a deployment)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            mode = os.stat(p).st_mode
            os.chmod(p, stat.S_IMODE(mode) & ~0o222)


def remove_tree(path: Path) -> None:
    """Remove a file or a directory tree, read-only files included (missing: no error)."""
    def onexc(func, p, exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            func(p)

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onexc=onexc)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
