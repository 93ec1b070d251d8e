"""Compatibility date + flags -> the runtime release, its package set and the enabled flags.

The rules (the same as workerd's, ``src/workerd/io/compatibility-date.capnp``; the table is
``releases.toml``, read by :mod:`pyworkers.compat.releases`):

1. A compatibility date ``D`` (``YYYY-MM-DD``) turns on every flag whose ``default_on`` <= ``D``.
2. Explicit flags turn more flags on; ``no_<flag>`` turns an implied flag off, only where the
   table sets ``allow_disable`` (``no_<flag>`` of a flag ``D`` does not imply is accepted and
   changes nothing).
3. Among the enabled release flags the newest release (the last in table order) wins; the
   selection's package-set date is that release's. Experimental releases have no ``default_on``:
   only an explicit flag enables them.
4. Errors (:class:`CompatError`, one line, with the fix): malformed date; a date later than today
   or than the table's ``newest_date`` ("this pyworkers knows dates up to ..."); an unknown flag
   (the closest name is suggested, :mod:`difflib`); ``no_<flag>`` of a flag that does not allow
   it; a flag given together with its ``no_``; no release enabled.

The result, :class:`RuntimeSelection`, is frozen and serialises to JSON
(:meth:`RuntimeSelection.to_json` / :meth:`RuntimeSelection.from_json`) so every deployment
records it and a redeploy reproduces it exactly, whatever the date of the redeploy.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import re
from collections.abc import Iterable

from .releases import Release, UnknownReleaseError, flags as _table_flags, newest_known_date
from .releases import release_for_flag, releases

__all__ = ["CompatError", "RuntimeSelection", "parse_compatibility_date", "select", "current_date"]

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_JSON_KEYS = ("release", "pyodide_version", "python_version", "platform_tag",
              "package_set_date", "compatibility_date", "flags")


class CompatError(ValueError):
    """A compatibility date or flag the user must fix; ``str(err)`` is one line naming the fix."""


def current_date() -> _dt.date:
    """Today's date for the "date in the future" check.

    The later of the local date and the UTC date, so a user east of UTC may use their local date
    and a user west of UTC may use the UTC date (what ``date -u +%F`` prints).
    """
    return max(_dt.date.today(), _dt.datetime.now(_dt.timezone.utc).date())


def parse_compatibility_date(value: str | _dt.date) -> _dt.date:
    """Parse a compatibility date: a ``datetime.date`` or a ``"YYYY-MM-DD"`` string.

    Only the syntax and calendar are checked here (not "in the future"; see :func:`select`).
    Raises :class:`CompatError` for anything else (``"2025-9-29"``, ``"20250929"``,
    ``"2025-02-30"``, a ``datetime.datetime``, a number).
    """
    if isinstance(value, _dt.datetime):
        raise CompatError(f"compatibility date {value.isoformat()!r} has a time of day: "
                          f"give the date only, e.g. {value.date().isoformat()}")
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return _dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise CompatError(f"compatibility date {value!r} is not a date in YYYY-MM-DD form: "
                      f"write it like {newest_known_date().isoformat()}")


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "run `pyworkers runtimes list` to see every flag"


def _valid_names() -> list[str]:
    out = []
    for f in _table_flags():
        out.append(f.name)
        if f.allow_disable:
            out.append(f.disable_name)
    return out


@dataclasses.dataclass(frozen=True)
class RuntimeSelection:
    """What a compatibility date and flags select; recorded in every deployment.

    Attributes:
        release: the winning :class:`~pyworkers.compat.releases.Release`.
        flags: every enabled flag (release and behaviour flags), sorted, no duplicates.
        package_set_date: the date the package set is pinned to (the release's).
        compatibility_date: the compatibility date it was selected with.

    ``to_json()`` gives ``{"release": <release flag>, "pyodide_version", "python_version",
    "platform_tag", "package_set_date": "YYYY-MM-DD", "compatibility_date": "YYYY-MM-DD",
    "flags": [<sorted flag names>]}``; ``from_json`` reverses it exactly.
    """

    release: Release
    flags: tuple[str, ...]
    package_set_date: _dt.date
    compatibility_date: _dt.date

    def enabled(self, flag: str) -> bool:
        """Whether compatibility flag ``flag`` (e.g. ``"python_inline_sync_endpoints"``) is on.

        Raises :class:`CompatError` (with the closest name) if ``flag`` is not a flag in the
        table, so a typo in a caller cannot silently read as "off".
        """
        known = [f.name for f in _table_flags()]
        if flag not in known:
            raise CompatError(f"unknown compatibility flag {flag!r}: {_suggest(flag, known)}")
        return flag in self.flags

    @property
    def experimental(self) -> bool:
        """Whether the selected release is experimental."""
        return self.release.experimental

    def to_json(self) -> dict:
        """The selection as a JSON-ready dict (shape in the class docstring; dates as strings)."""
        return {
            **self.release.to_json(),
            "package_set_date": self.package_set_date.isoformat(),
            "compatibility_date": self.compatibility_date.isoformat(),
            "flags": list(self.flags),
        }

    @classmethod
    def from_json(cls, d: dict) -> "RuntimeSelection":
        """Rebuild a recorded selection (the dict :meth:`to_json` made) without re-selecting.

        The date is not compared with today: an old record stays valid. Raises
        :class:`CompatError` if keys are missing or extra, a value has the wrong type, the
        release flag is not in this pyworkers' table or its versions/platform tag differ from the
        table's, a flag is unknown, or ``flags`` is not sorted and unique or lacks the release.
        """
        if not isinstance(d, dict) or set(d) != set(_JSON_KEYS):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise CompatError(f"recorded runtime selection has keys {got}, expected "
                              f"{sorted(_JSON_KEYS)}: record it again with `pyworkers runtimes "
                              "select --json`")
        for k in _JSON_KEYS:
            if k != "flags" and not isinstance(d[k], str):
                raise CompatError(f"recorded runtime selection: {k!r} must be a string, "
                                  f"got {d[k]!r}: record it again")
        fl = d["flags"]
        if not isinstance(fl, list) or not all(isinstance(x, str) for x in fl):
            raise CompatError("recorded runtime selection: 'flags' must be a list of strings: "
                              "record it again")
        try:
            rel = release_for_flag(d["release"])
        except UnknownReleaseError:
            raise CompatError(f"recorded runtime release {d['release']!r} is not in this "
                              "pyworkers' table: use the pyworkers version that recorded it"
                              ) from None
        for k in ("pyodide_version", "python_version", "platform_tag"):
            if d[k] != getattr(rel, k):
                raise CompatError(f"recorded runtime selection says {k} {d[k]!r} for "
                                  f"{rel.flag}, this pyworkers has {getattr(rel, k)!r}: use the "
                                  "pyworkers version that recorded it")
        known = {f.name for f in _table_flags()}
        for x in fl:
            if x not in known:
                raise CompatError(f"recorded compatibility flag {x!r} is unknown to this "
                                  "pyworkers: use the pyworkers version that recorded it")
        if fl != sorted(set(fl)) or rel.flag not in fl:
            raise CompatError("recorded runtime selection: 'flags' must be sorted, unique and "
                              "include the release flag: record it again")
        return cls(
            release=rel,
            flags=tuple(fl),
            package_set_date=parse_compatibility_date(d["package_set_date"]),
            compatibility_date=parse_compatibility_date(d["compatibility_date"]),
        )


def select(
    compatibility_date: str | _dt.date,
    flags: Iterable[str] = (),
    *,
    today: _dt.date | None = None,
) -> RuntimeSelection:
    """Select the runtime release, package set and enabled flags (rules in the module docstring).

    Args:
        compatibility_date: ``"YYYY-MM-DD"`` or a ``datetime.date``.
        flags: explicit compatibility flags, e.g. ``["python_workers_20260817",
            "no_python_dedicated_snapshot"]``; duplicates are ignored. A single string is
            rejected (``TypeError``): pass a list.
        today: the current date (default :func:`current_date`); tests inject it.

    Returns a frozen :class:`RuntimeSelection`. Raises :class:`CompatError` (one line, with the
    fix) for every user error listed in the module docstring.
    """
    date = parse_compatibility_date(compatibility_date)
    now = today if today is not None else current_date()
    newest = newest_known_date()
    if date > now:
        raise CompatError(f"compatibility date {date} is in the future (today is {now}): "
                          f"use {min(now, newest)} or earlier")
    if date > newest:
        raise CompatError(f"compatibility date {date} is too new: this pyworkers knows dates up "
                          f"to {newest}; use {newest} or earlier, or upgrade pyworkers")
    if isinstance(flags, (str, bytes)):
        raise TypeError("flags must be an iterable of flag names, not a single string")

    table = {f.name: f for f in _table_flags()}
    on: set[str] = set()
    off: set[str] = set()
    for name in dict.fromkeys(flags):
        if not isinstance(name, str):
            raise TypeError(f"compatibility flags must be strings, got {name!r}")
        if name in table:
            on.add(name)
            continue
        base = name[3:] if name.startswith("no_") else None
        if base in table:
            f = table[base]
            if not f.allow_disable:
                if f.kind == "release" and f.default_on is not None:
                    newer = [r.flag for r in releases() if r.flag != base
                             and not r.experimental and r.default_on > f.default_on]
                    hint = f", e.g. {newer[0]}" if newer else ""
                    raise CompatError(f"runtime release {base!r} cannot be turned off "
                                      f"({name!r}): add a newer release flag instead (the newest "
                                      f"enabled release wins){hint}")
                if f.default_on is None:
                    raise CompatError(f"compatibility flag {name!r} does not exist: {base} is off "
                                      f"unless you enable it, so remove {name!r}")
                raise CompatError(f"compatibility flag {base!r} cannot be turned off "
                                  f"({name!r}): it is implied from {f.default_on}; to run without "
                                  f"it use a compatibility date before {f.default_on}")
            off.add(base)
            continue
        raise CompatError(f"unknown compatibility flag {name!r}: "
                          f"{_suggest(name, _valid_names())}")
    both = sorted(on & off)
    if both:
        raise CompatError(f"compatibility flags {both[0]!r} and 'no_{both[0]}' contradict each "
                          "other: keep one of them")

    implied = {n for n, f in table.items() if f.default_on is not None and f.default_on <= date}
    enabled = (implied - off) | on
    winner = None
    for r in releases():
        if r.flag in enabled:
            winner = r
    if winner is None:
        first = next(r for r in releases() if not r.experimental)
        if date < first.default_on:
            raise CompatError(f"compatibility date {date} enables no runtime release (the first, "
                              f"{first.flag}, is implied from {first.default_on}): use a "
                              f"compatibility date on or after {first.default_on} or add the "
                              f"flag {first.flag}")
        raise CompatError(f"compatibility flags {sorted('no_' + x for x in off)} turn off every "
                          f"runtime release: remove them or add a release flag "
                          f"({', '.join(r.flag for r in releases())})")
    return RuntimeSelection(
        release=winner,
        flags=tuple(sorted(enabled)),
        package_set_date=winner.package_set_date,
        compatibility_date=date,
    )
