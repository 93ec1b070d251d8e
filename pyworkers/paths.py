"""Where pyworkers keeps its files on this machine (shared by every sub-package)."""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The pyworkers cache directory (runtime releases, compiled modules, wheels, side modules,
    snapshot images): ``cache_dir``, else ``$PYWORKERS_CACHE_DIR``, else the per-user cache
    directory from platformdirs (``~/.cache/pyworkers`` on Linux)."""
    if cache_dir:
        return Path(cache_dir).expanduser().resolve()
    env = os.environ.get("PYWORKERS_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_cache_dir("pyworkers", appauthor=False))
