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
    imports: tuple[str, ...] = ()


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

    def stdlib_modules(self) -> dict[str, LockPackage]:
        """Standard-library modules this release ships outside its stdlib archive
        (``package_type = "cpython_module"``, e.g. ``ssl`` and ``sqlite3`` on 0.29.3): import
        name -> lock entry."""
        out = {}
        for p in self.packages.values():
            if p.package_type == "cpython_module":
                for mod in p.imports or (p.name,):
                    out[mod] = p
        return out

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
                                 s.package_type, s.install_dir,
                                 tuple(getattr(s, "imports", None) or ()))
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


def unvendored_hint(module: str, lock: ReleaseLock | None, pyodide_version: str) -> str | None:
    """The fix for ``import <module>`` failing because the release ships that standard-library
    module as a separate package (``None`` if it does not). One clause, e.g. ``"'ssl' is part of
    Python's standard library, but Pyodide 0.29.3 ships it as the separate package ssl 1.0.0
    (needs the shared library libopenssl), which pyworkers cannot install: ..."``."""
    if lock is None:
        return None
    p = lock.stdlib_modules().get(module.split(".")[0])
    if p is None:
        return None
    libs = [d for d in p.depends if lock.shared_library(d)]
    needs = f" (needs the shared library {', '.join(libs)})" if libs else ""
    return (f"{module.split('.')[0]!r} is part of Python's standard library, but Pyodide "
            f"{pyodide_version} ships it as the separate package {p.name} {p.version}{needs}, "
            "which a site-packages layer cannot carry: select a newer runtime that has it in "
            "its standard library (a later compatibility_date; `pyworkers runtimes list`), or "
            "avoid the import on this runtime")
