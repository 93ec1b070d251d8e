"""The runtime release table (``releases.toml``), loaded once.

A :class:`Release` names one Pyodide build from the npm package ``pyodide`` and everything needed
to fetch, verify and target it. The compatibility-date and flag rules that pick a release live
beside this module (see the compat issue); the engine only needs :func:`get_release`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import tomllib
from importlib import resources


class UnknownReleaseError(LookupError):
    """Raised for a Pyodide version that is not in the release table."""


@dataclasses.dataclass(frozen=True)
class Release:
    """One runtime release (a row of ``releases.toml``).

    Attributes: ``flag`` (compatibility flag that selects it), ``pyodide_version`` (npm version),
    ``python_version`` (CPython inside, e.g. ``"3.14.2"``), ``abi_version`` (``"2026_0"``),
    ``platform_tag`` (wheel platform tag), ``npm_integrity`` (``sha512-<base64>`` of the npm
    tarball), ``package_set_date`` / ``default_on`` (dates), ``experimental``.
    """

    flag: str
    pyodide_version: str
    python_version: str
    abi_version: str
    platform_tag: str
    emscripten_version: str
    npm_integrity: str
    package_set_date: _dt.date
    default_on: _dt.date | None
    experimental: bool

    @property
    def python_minor(self) -> str:
        """``"3.14"`` for Python 3.14.2."""
        return ".".join(self.python_version.split(".")[:2])


@dataclasses.dataclass(frozen=True)
class Tool:
    """A pinned npm tool used at install time (binaryen)."""

    npm_package: str
    version: str
    npm_integrity: str


def _date(v):
    if v is None or isinstance(v, _dt.date):
        return v
    return _dt.date.fromisoformat(v)


@functools.cache
def _table() -> dict:
    return tomllib.loads(resources.files(__package__).joinpath("releases.toml").read_text())


@functools.cache
def releases() -> tuple[Release, ...]:
    """All releases in table order."""
    out = []
    for row in _table()["release"]:
        fields = {f.name for f in dataclasses.fields(Release)}
        kw = {k: row.get(k) for k in fields}
        kw["package_set_date"] = _date(kw["package_set_date"])
        kw["default_on"] = _date(kw["default_on"])
        kw["experimental"] = bool(kw["experimental"])
        out.append(Release(**kw))
    return tuple(out)


def get_release(version: str) -> Release:
    """Return the release with Pyodide version ``version``.

    Raises :class:`UnknownReleaseError` naming the known versions.
    """
    for r in releases():
        if r.pyodide_version == version:
            return r
    known = ", ".join(r.pyodide_version for r in releases())
    raise UnknownReleaseError(
        f"unknown runtime release {version!r}: this pyworkers knows {known} "
        "(run `pyworkers runtimes list`)"
    )


def default_release() -> Release:
    """The newest non-experimental release (what a current compatibility date selects)."""
    return [r for r in releases() if not r.experimental][-1]


def tool(name: str) -> Tool:
    """A pinned install-time tool, e.g. ``tool("binaryen")``."""
    return Tool(**_table()["tools"][name])
