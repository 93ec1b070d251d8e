"""The compatibility table (``releases.toml``): runtime releases and behaviour flags, loaded once.

A :class:`Release` names one Pyodide build from the npm package ``pyodide`` and everything needed
to fetch, verify and target it; it is selected by its *release flag* (``python_workers_YYYYMMDD``,
the names workerd uses in ``src/workerd/io/compatibility-date.capnp``). A behaviour flag
(:class:`Flag` with ``kind == "behaviour"``) changes what a worker does on any release. The rules
that turn a compatibility date and flags into a runtime live in :mod:`pyworkers.compat.selection`;
the engine only needs :func:`get_release`.

The table is checked when first loaded (:class:`TableError` if a row is inconsistent), so every
consumer can rely on: unique flag names, none starting with ``no_``; experimental rows have no
``default_on``; every date <= :func:`newest_known_date`; releases are in table order oldest first
(non-decreasing Pyodide version, strictly increasing ``(pyodide_version, package_set_date)``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import re
import tomllib
from importlib import resources

from packaging.version import InvalidVersion, Version


class UnknownReleaseError(LookupError):
    """Raised for a Pyodide version or release flag that is not in the release table."""


class TableError(RuntimeError):
    """``releases.toml`` is inconsistent (a bug in this pyworkers' data, not a user error)."""


@dataclasses.dataclass(frozen=True)
class Release:
    """One runtime release (a ``[[release]]`` row of ``releases.toml``).

    Attributes: ``flag`` (compatibility flag that selects it), ``pyodide_version`` (npm version),
    ``python_version`` (CPython inside, e.g. ``"3.14.2"``), ``abi_version`` (``"2026_0"``),
    ``platform_tag`` (wheel platform tag, e.g. ``"pyemscripten_2026_0_wasm32"``),
    ``emscripten_version``, ``npm_integrity`` (``sha512-<base64>`` of the npm tarball),
    ``package_set_date`` (the date its package set is pinned to), ``default_on`` (the compatibility
    date from which it is implied, ``None`` = never), ``experimental`` (needs an explicit flag),
    ``allow_disable`` (whether ``no_<flag>`` may turn the implied flag off), ``description``.
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
    allow_disable: bool = False
    description: str = ""

    def to_json(self) -> dict:
        """The release's identity: ``{release (flag), pyodide_version, python_version,
        platform_tag}``."""
        return {"release": self.flag, "pyodide_version": self.pyodide_version,
                "python_version": self.python_version, "platform_tag": self.platform_tag}

    @property
    def python_minor(self) -> str:
        """``"3.14"`` for Python 3.14.2."""
        return ".".join(self.python_version.split(".")[:2])


@dataclasses.dataclass(frozen=True)
class Flag:
    """One compatibility flag: a release flag or a behaviour flag.

    Attributes: ``name``; ``kind`` (``"release"`` or ``"behaviour"``); ``default_on`` (the
    compatibility date from which the flag is implied, ``None`` = only when given explicitly);
    ``allow_disable`` (``no_<name>`` may turn it off when implied); ``experimental`` (release
    flags only); ``description`` (what it changes).
    """

    name: str
    kind: str
    default_on: _dt.date | None
    allow_disable: bool
    experimental: bool
    description: str

    @property
    def disable_name(self) -> str:
        """``"no_<name>"``, the flag that turns this one off (valid only if ``allow_disable``)."""
        return "no_" + self.name


@dataclasses.dataclass(frozen=True)
class Tool:
    """A pinned npm tool used at install time (binaryen)."""

    npm_package: str
    version: str
    npm_integrity: str


@dataclasses.dataclass(frozen=True)
class Table:
    """The parsed, checked compatibility table (see :func:`parse_table`)."""

    releases: tuple[Release, ...]
    flags: tuple[Flag, ...]
    newest_date: _dt.date


_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_INTEGRITY_RE = re.compile(r"^sha512-[A-Za-z0-9+/]{86}==$")
_RELEASE_KEYS = {f.name for f in dataclasses.fields(Release)}
_FLAG_KEYS = {"name", "default_on", "allow_disable", "description"}


def _date(v, where: str) -> _dt.date | None:
    if v is None:
        return None
    if isinstance(v, _dt.datetime):
        raise TableError(f"releases.toml: {where} must be a date, not a date-time")
    if isinstance(v, _dt.date):
        return v
    if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        try:
            return _dt.date.fromisoformat(v)
        except ValueError:
            pass
    raise TableError(f"releases.toml: {where} = {v!r} is not a YYYY-MM-DD date")


def parse_table(data: dict) -> Table:
    """Parse and check a compatibility table (the dict ``tomllib`` makes of ``releases.toml``).

    Returns a :class:`Table`. Raises :class:`TableError` naming the offending row and key for:
    unknown or missing keys, malformed dates or names, a name starting with ``no_`` or used
    twice, an experimental release with ``default_on``, a date after ``newest_date``, releases out
    of order, a platform tag that does not contain the ABI version, no non-experimental release.
    """
    try:
        newest = _date(data["compatibility"]["newest_date"], "[compatibility] newest_date")
    except KeyError:
        raise TableError("releases.toml: [compatibility] newest_date is missing") from None
    rels: list[Release] = []
    for i, row in enumerate(data.get("release", [])):
        where = f"[[release]] #{i + 1} ({row.get('flag', '?')})"
        extra, missing = set(row) - _RELEASE_KEYS, _RELEASE_KEYS - set(row)
        missing -= {"default_on", "allow_disable", "description"}
        if extra or missing:
            raise TableError(f"releases.toml: {where}: unknown keys {sorted(extra)}, "
                             f"missing keys {sorted(missing)}")
        kw = dict(row)
        kw["package_set_date"] = _date(row["package_set_date"], f"{where} package_set_date")
        kw["default_on"] = _date(row.get("default_on"), f"{where} default_on")
        kw["experimental"] = bool(row["experimental"])
        kw["allow_disable"] = bool(row.get("allow_disable", False))
        kw["description"] = str(row.get("description", ""))
        rels.append(Release(**kw))
    flags: list[Flag] = [
        Flag(r.flag, "release", r.default_on, r.allow_disable, r.experimental, r.description)
        for r in rels
    ]
    for i, row in enumerate(data.get("flag", [])):
        where = f"[[flag]] #{i + 1} ({row.get('name', '?')})"
        extra = set(row) - _FLAG_KEYS
        if extra or "name" not in row:
            raise TableError(f"releases.toml: {where}: unknown keys {sorted(extra)} or no name")
        flags.append(Flag(row["name"], "behaviour", _date(row.get("default_on"), where + " default_on"),
                          bool(row.get("allow_disable", False)), False,
                          str(row.get("description", ""))))

    seen: set[str] = set()
    for f in flags:
        if not _NAME_RE.match(f.name) or f.name.startswith("no_"):
            raise TableError(f"releases.toml: flag name {f.name!r} must match [a-z][a-z0-9_]* "
                             "and not start with no_")
        if f.name in seen:
            raise TableError(f"releases.toml: flag {f.name!r} appears twice")
        seen.add(f.name)
        if f.experimental and f.default_on is not None:
            raise TableError(f"releases.toml: experimental {f.name!r} must not have default_on")
        if f.default_on is not None and f.default_on > newest:
            raise TableError(f"releases.toml: {f.name!r} default_on {f.default_on} is after "
                             f"newest_date {newest}")
    prev = None
    for r in rels:
        if r.package_set_date > newest:
            raise TableError(f"releases.toml: {r.flag!r} package_set_date is after newest_date")
        if r.abi_version not in r.platform_tag:
            raise TableError(f"releases.toml: {r.flag!r} platform_tag {r.platform_tag!r} does not "
                             f"contain abi_version {r.abi_version!r}")
        if not _INTEGRITY_RE.match(r.npm_integrity):
            raise TableError(f"releases.toml: {r.flag!r} npm_integrity is not sha512-<base64>")
        try:
            key = (Version(r.pyodide_version), r.package_set_date)
        except InvalidVersion:
            raise TableError(f"releases.toml: {r.flag!r} pyodide_version is not a version") from None
        if prev is not None and not (key[0] >= prev[0] and key > prev):
            raise TableError(f"releases.toml: {r.flag!r} is not newer than the row before it "
                             "(releases are listed oldest first)")
        prev = key
    stable = [r.default_on for r in rels if not r.experimental]
    if not stable:
        raise TableError("releases.toml: no non-experimental release")
    if any(d is None for d in stable) or stable != sorted(stable) or len(set(stable)) != len(stable):
        raise TableError("releases.toml: non-experimental releases need strictly increasing "
                         "default_on dates in table order")
    return Table(tuple(rels), tuple(flags), newest)


@functools.cache
def _table() -> dict:
    return tomllib.loads(resources.files(__package__).joinpath("releases.toml").read_text())


@functools.cache
def table() -> Table:
    """The shipped compatibility table, parsed and checked (raises :class:`TableError`)."""
    return parse_table(_table())


def releases() -> tuple[Release, ...]:
    """All releases in table order (oldest first; the last enabled one wins a selection)."""
    return table().releases


def flags() -> tuple[Flag, ...]:
    """All compatibility flags: release flags (table order) then behaviour flags (table order)."""
    return table().flags


def behaviour_flags() -> tuple[Flag, ...]:
    """The behaviour flags (``kind == "behaviour"``) in table order."""
    return tuple(f for f in flags() if f.kind == "behaviour")


def newest_known_date() -> _dt.date:
    """The newest compatibility date this pyworkers accepts (``[compatibility] newest_date``)."""
    return table().newest_date


def get_release(version: str) -> Release:
    """Return the release with Pyodide version ``version``.

    If several rows share the version (an experimental flag re-using a build), the
    non-experimental one is returned; otherwise the first. Raises :class:`UnknownReleaseError`
    naming the known versions.
    """
    rows = [r for r in releases() if r.pyodide_version == version]
    if rows:
        return next((r for r in rows if not r.experimental), rows[0])
    known = ", ".join(dict.fromkeys(r.pyodide_version for r in releases()))
    raise UnknownReleaseError(
        f"unknown runtime release {version!r}: this pyworkers knows {known} "
        "(run `pyworkers runtimes list`)"
    )


def release_for_flag(flag: str) -> Release:
    """Return the release selected by release flag ``flag`` (e.g. ``"python_workers_20260610"``).

    Raises :class:`UnknownReleaseError` naming the known release flags.
    """
    for r in releases():
        if r.flag == flag:
            return r
    known = ", ".join(r.flag for r in releases())
    raise UnknownReleaseError(
        f"unknown release flag {flag!r}: this pyworkers knows {known} "
        "(run `pyworkers runtimes list`)"
    )


def default_release() -> Release:
    """The newest non-experimental release (what a current compatibility date selects)."""
    return [r for r in releases() if not r.experimental][-1]


def tool(name: str) -> Tool:
    """A pinned install-time tool, e.g. ``tool("binaryen")``."""
    return Tool(**_table()["tools"][name])
