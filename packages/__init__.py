"""pyworkers.packages: requirements.txt -> a hash-pinned wheel set -> a site-packages layer.

Public API (the deploy stage calls these in order; result types in :mod:`.resolution`, sdist
builds in :mod:`.sdist`, app inputs in :mod:`.inputs`):

* :func:`resolve` ``(requirements, target, *, pyodide_lock=None, package_base_url=DEFAULT,
  index_url=None, extra_index_urls=None, exclude_newer=DEFAULT, lock_path=None, pre=False,
  cache_dir=None, transport=None, page_ttl=None, progress=None) -> Resolution``
  (``target``: a ``RuntimeSelection`` from :func:`pyworkers.compat.select`, or a ``Release``)
* :func:`write_lock` ``(resolution, path) -> Path`` / :func:`read_lock` ``(path) -> Resolution``
  (PEP 751 ``pylock.toml``)
* :func:`download` ``(resolution, cache_dir=None, *, transport=None, progress=None,
  index_url=None) -> list[CachedWheel]`` (content-addressed, sha256-verified wheel cache)
* :func:`install_layer` ``(resolution_or_cached_wheels, dest_dir, *, cache_dir=None,
  transport=None, progress=None, limits=None) -> InstalledLayer`` (a normal site-packages
  directory; :class:`InstallLimits` bound wheel size, file count and compression ratio)
* :func:`parse_requirements`, :func:`index_config`, :func:`read_release_lock`,
  :class:`Target`, :class:`RichProgress`; errors in :mod:`pyworkers.packages.errors` (all
  subclass :class:`PackagesError`; ``str(e)`` is one line, ``e.detail`` the rest).

Sources: PEP 503/691 (simple API, HTML and JSON), PEP 592 (yanked), PEP 658/714 (metadata
files), PEP 700 (``upload-time``), PEP 427 (wheels), PEP 508 (markers), PEP 751 (lock file).
"""
from .cache import WheelCache, cache_root
from .fetch import CachedWheel, download
from .errors import (ConflictError, HashMismatchError, IndexConfigError, LayerError,
                     LockFileError, NetworkError, NoCompatibleWheelError, PackagesError,
                     RequirementsError)
from .index import IndexConfig, index_config
from .install import InstalledLayer, InstallLimits, install_layer
from .progress import Progress, RichProgress
from .pylock import read_lock, write_lock
from .release_lock import DEFAULT, ReleaseLock, default_package_base_url, read_release_lock
from .requirements import InputRequirement, RequirementsInput, parse_requirements
from .resolver import (IMPLICIT_REQUIREMENTS, PinnedWheel, Resolution, SdistRef,
                       parse_exclude_newer, resolve, server_only_packages)
from .sdist import SdistBuildError
from .simple_api import IndexFile
from .target import Target

__all__ = [
    "CachedWheel", "ConflictError", "DEFAULT", "IMPLICIT_REQUIREMENTS", "SdistBuildError",
    "SdistRef", "server_only_packages", "HashMismatchError", "IndexConfig",
    "IndexConfigError", "IndexFile", "InputRequirement", "InstalledLayer", "LayerError",
    "LockFileError", "NetworkError", "NoCompatibleWheelError", "PackagesError", "PinnedWheel",
    "Progress", "ReleaseLock", "RequirementsError", "RequirementsInput", "Resolution",
    "RichProgress", "Target", "WheelCache", "cache_root", "default_package_base_url",
    "download", "index_config", "install_layer", "InstallLimits", "parse_exclude_newer", "parse_requirements",
    "read_lock", "read_release_lock", "resolve", "write_lock",
]
