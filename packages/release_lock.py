"""The release's pinned package set: ``pyodide-lock.json`` inside the runtime's npm package.

Read with ``pyodide-lock`` (:class:`pyodide_lock.PyodideLockSpec`). Each ``package`` entry with a
``.whl`` file becomes a candidate pinned to the lock's version, sha256 and dependencies; its wheel
downloads from the *package base URL* + ``file_name``. The default base URL is pyodide-build's
``CDN_BASE`` constant (``pyodide_build.xbuildenv``) formatted with the release's version;
``$PYWORKERS_PACKAGE_BASE_URL`` or the ``package_base_url`` argument override it (``""``: do not
download from the lock, use its pins only as preferences). Shared libraries
(``package_type = "shared_library"``, installed outside site-packages) are listed so a dependency
on one is reported clearly; ``*-tests`` zips are ignored.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import LockFileError

#: Sentinel: use ``$PYWORKERS_PACKAGE_BASE_URL`` or pyodide-build's CDN for the release.
DEFAULT = "default"


@dataclasses.dataclass(frozen=True)
class LockPackage:
    """One entry of ``pyodide-lock.json``: ``name`` (canonical), ``version``, ``file_name``,
    ``sha256`` (hex), ``depends`` (canonical names), ``package_type``, ``install_dir``."""

    name: str
    version: str
    file_name: str
    sha256: str
    depends: tuple[str, ...]
    package_type: str
    install_dir: str


@dataclasses.dataclass(frozen=True)
class ReleaseLock:
    """A parsed ``pyodide-lock.json``: ``packages`` by canonical name, ``python`` and
    ``abi_version`` from its ``info``, ``sha256`` of the file (bytes as read)."""

    path: Path
    packages: dict[str, LockPackage]
    python: str
    abi_version: str | None
    sha256: str

    def get(self, name: str) -> LockPackage | None:
        """The wheel entry for ``name`` (``package_type == "package"`` with a ``.whl``)."""
        p = self.packages.get(canonicalize_name(name))
        if p is None or p.package_type != "package" or not p.file_name.endswith(".whl"):
            return None
        return p

    def shared_library(self, name: str) -> LockPackage | None:
        p = self.packages.get(canonicalize_name(name))
        return p if p is not None and p.package_type == "shared_library" else None

    def version_of(self, name: str) -> Version | None:
        p = self.get(name)
        if p is None:
            return None
        try:
            return Version(p.version)
        except InvalidVersion:
            return None


def read_release_lock(path: str | os.PathLike) -> ReleaseLock:
    """Read ``pyodide-lock.json`` (a file, or a directory containing it).

    Raises :class:`~pyworkers.packages.errors.LockFileError` if it is missing or invalid.
    """
    from pyodide_lock import PyodideLockSpec

    p = Path(path)
    if p.is_dir():
        p = p / "pyodide-lock.json"
    try:
        raw = p.read_bytes()
        spec = PyodideLockSpec.from_json(p)
    except FileNotFoundError:
        raise LockFileError(f"release lock not found: {p}") from None
    except Exception as e:  # noqa: BLE001 - pyodide-lock raises several types
        raise LockFileError(f"cannot read release lock {p}: {e}") from None
    pkgs = {}
    for key, s in spec.packages.items():
        name = canonicalize_name(s.name or key)
        pkgs[name] = LockPackage(name, s.version, s.file_name, (s.sha256 or "").lower(),
                                 tuple(canonicalize_name(d) for d in s.depends),
                                 s.package_type, s.install_dir)
    return ReleaseLock(p, pkgs, spec.info.python, spec.info.abi_version,
                       hashlib.sha256(raw).hexdigest())


def default_package_base_url(pyodide_version: str) -> str | None:
    """``$PYWORKERS_PACKAGE_BASE_URL`` or pyodide-build's CDN base for ``pyodide_version``,
    ``None`` if neither is available."""
    env = os.environ.get("PYWORKERS_PACKAGE_BASE_URL")
    if env is not None:
        return env or None
    try:
        from pyodide_build.xbuildenv import CDN_BASE
    except Exception:  # noqa: BLE001 - pyodide-build absent or changed
        return None
    return CDN_BASE.format(version=pyodide_version)


def wheel_url(base_url: str, file_name: str) -> str:
    """The download URL of a lock entry (``file_name`` may already be a URL)."""
    if "://" in file_name:
        return file_name
    return base_url.rstrip("/") + "/" + file_name
