"""Selection rules (compat/selection.py): boundaries, flags, no_ flags, experimental, errors, JSON.

Expected values come from the table itself (an independent restatement of the rule, below) and,
for the decisions the issue fixes, from the issue text (2025-09-29 -> 3.13, 2026-11-01 -> 3.14).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from pyworkers.compat import CompatError, RuntimeSelection, select
from pyworkers.compat import releases as R
from pyworkers.compat import selection as S

D = dt.date
NEWEST = R.newest_known_date()
TODAY = NEWEST  # inject "today" so the tests do not depend on the clock
STABLE = [r for r in R.releases() if not r.experimental]
FIRST = STABLE[0]
EXPERIMENTAL = [r for r in R.releases() if r.experimental]
DATED = [f for f in R.flags() if f.default_on is not None]
DAY = dt.timedelta(days=1)


def sel(date, flags=(), today=TODAY) -> RuntimeSelection:
    return select(date, flags, today=today)


def _boundaries():
    seen = set()
    for f in DATED:
        for delta, label in ((-DAY, "before"), (dt.timedelta(0), "on"), (DAY, "after")):
            d = f.default_on + delta
            if d <= NEWEST and (d, f.name) not in seen:
                seen.add((d, f.name))
                yield pytest.param(d, id=f"{f.name}-{label}-{d}")


@pytest.mark.parametrize("date", list(_boundaries()))
def test_date_boundaries(date):
    """Day before / on / after every default-on date: exactly the flags dated <= D are on."""
    if date < FIRST.default_on:
        with pytest.raises(CompatError, match="enables no runtime release"):
            sel(date)
        return
    s = sel(date)
    for f in DATED:
        assert (f.name in s.flags) == (f.default_on <= date), f.name
    assert not any(r.flag in s.flags for r in EXPERIMENTAL)
    want = [r for r in STABLE if r.default_on <= date][-1]
    assert s.release == want
    assert s.package_set_date == want.package_set_date
    assert s.compatibility_date == date
    assert list(s.flags) == sorted(set(s.flags))


@pytest.mark.parametrize("date,pyodide,python", [
    ("2025-09-29", "0.29.3", "3.13"),
    ("2026-10-31", "0.29.3", "3.13"),
    ("2026-11-01", "314.0.7", "3.14"),
    ("2026-11-21", "314.0.7", "3.14"),
])
def test_documented_decisions(date, pyodide, python):
    s = sel(date, today=D(2026, 11, 21))
    assert (s.release.pyodide_version, s.release.python_minor) == (pyodide, python)


def test_date_object_and_string_agree():
    assert sel(NEWEST) == sel(NEWEST.isoformat())


@pytest.mark.parametrize("date,flags,release,on,off", [
    # explicit release flag before its default-on date
    ("2026-01-01", ["python_workers_20260610"], "python_workers_20260610",
     ["python_workers_20250116"], []),
    # explicit first release before any date implies anything: behaviour flags stay off
    ("2025-01-01", ["python_workers_20250116"], "python_workers_20250116",
     [], ["python_inline_sync_endpoints", "python_dedicated_snapshot"]),
    # no_ of the implied 3.14 release keeps a current date on 3.13
    ("2026-11-15", ["no_python_workers_20260610"], "python_workers_20250116",
     ["python_inline_sync_endpoints"], ["python_workers_20260610"]),
    # no_ behaviour flags
    ("2026-11-15", ["no_python_inline_sync_endpoints"], "python_workers_20260610",
     ["python_dedicated_snapshot"], ["python_inline_sync_endpoints"]),
    ("2026-11-15", ["no_python_dedicated_snapshot"], "python_workers_20260610",
     ["python_inline_sync_endpoints"], ["python_dedicated_snapshot"]),
    # no_ of a flag the date does not imply: accepted, changes nothing
    ("2025-01-01", ["python_workers_20250116", "no_python_dedicated_snapshot"],
     "python_workers_20250116", [], ["python_dedicated_snapshot"]),
    # opt-in behaviour flag
    ("2026-11-15", ["python_entropy_at_import_error"], "python_workers_20260610",
     ["python_entropy_at_import_error"], []),
    # duplicates are ignored
    ("2026-11-15", ["python_entropy_at_import_error"] * 2, "python_workers_20260610",
     ["python_entropy_at_import_error"], []),
])
def test_explicit_flags(date, flags, release, on, off):
    s = sel(date, flags)
    assert s.release.flag == release
    assert s.package_set_date == s.release.package_set_date
    for f in on + [release]:
        assert s.enabled(f), f
    for f in off:
        assert not s.enabled(f), f
    assert len(s.flags) == len(set(s.flags))


@pytest.mark.parametrize("exp", EXPERIMENTAL, ids=lambda r: r.flag)
@pytest.mark.parametrize("date", [FIRST.default_on, STABLE[-1].default_on, NEWEST])
def test_experimental_needs_opt_in(exp, date):
    assert not sel(date).release.experimental
    s = sel(date, [exp.flag])
    assert s.release == exp and s.experimental
    assert s.package_set_date == exp.package_set_date
    # still the winner when an older release is turned off
    if STABLE[-1].allow_disable and date >= STABLE[-1].default_on:
        assert sel(date, [exp.flag, "no_" + STABLE[-1].flag]).release == exp


def test_flags_accepts_any_iterable_but_not_a_string():
    assert sel(NEWEST, iter(["python_entropy_at_import_error"])).enabled(
        "python_entropy_at_import_error")
    with pytest.raises(TypeError):
        sel(NEWEST, "python_entropy_at_import_error")


def _errors():
    nxt = NEWEST + DAY
    return [
        ("malformed-short", "2025-9-29", [], TODAY, ["YYYY-MM-DD"]),
        ("malformed-compact", "20250929", [], TODAY, ["YYYY-MM-DD"]),
        ("malformed-calendar", "2025-02-30", [], TODAY, ["YYYY-MM-DD"]),
        ("malformed-empty", "", [], TODAY, ["YYYY-MM-DD"]),
        ("malformed-int", 20250929, [], TODAY, ["YYYY-MM-DD"]),
        ("datetime", dt.datetime(2025, 10, 1, 12), [], TODAY, ["date only", "2025-10-01"]),
        ("future", STABLE[-1].default_on + DAY, [], STABLE[-1].default_on,
         ["in the future", f"today is {STABLE[-1].default_on}"]),
        ("beyond-table", nxt, [], nxt + 30 * DAY,
         [f"this pyworkers knows dates up to {NEWEST}", "upgrade pyworkers"]),
        ("unknown-flag", NEWEST, ["python_inline_sync_endpoint"], TODAY,
         ["unknown compatibility flag", "did you mean 'python_inline_sync_endpoints'"]),
        ("unknown-no-flag", NEWEST, ["no_python_dedicated_snapshots"], TODAY,
         ["did you mean 'no_python_dedicated_snapshot'"]),
        ("unknown-flag-far", NEWEST, ["zzz"], TODAY, ["runtimes list"]),
        ("flag-and-no", NEWEST, ["python_dedicated_snapshot", "no_python_dedicated_snapshot"],
         TODAY, ["contradict", "keep one"]),
        ("no-release", FIRST.default_on - DAY, [], TODAY,
         ["enables no runtime release", f"on or after {FIRST.default_on}", FIRST.flag]),
        ("no-not-allowed-optin", NEWEST, ["no_python_entropy_at_import_error"], TODAY,
         ["off unless you enable it", "remove"]),
        ("no-not-allowed-release", NEWEST, ["no_" + FIRST.flag], TODAY,
         ["cannot be turned off", "newer release flag"]),
    ]


@pytest.mark.parametrize("date,flags,today,fragments",
                         [pytest.param(*e[1:], id=e[0]) for e in _errors()])
def test_errors(date, flags, today, fragments):
    with pytest.raises(CompatError) as e:
        select(date, flags, today=today)
    msg = str(e.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg
    assert isinstance(e.value, ValueError)


def test_every_release_turned_off(monkeypatch):
    """Not reachable with the shipped table (the first release cannot be turned off): use one
    where it can."""
    data = R._table()
    t = R.parse_table({**data, "release": [
        {**row, "allow_disable": True} for row in data["release"]]})
    monkeypatch.setattr(R, "table", lambda: t)
    flags = ["no_" + r.flag for r in STABLE]
    with pytest.raises(CompatError, match="turn off every runtime release"):
        sel(NEWEST, flags)


def test_current_date_is_not_behind_the_local_date():
    assert S.current_date() >= dt.date.today()


def test_default_today_is_current_date(monkeypatch):
    monkeypatch.setattr(S, "current_date", lambda: FIRST.default_on)
    with pytest.raises(CompatError, match="in the future"):
        select(FIRST.default_on + DAY)
    assert select(FIRST.default_on).release == FIRST


def test_selection_is_frozen():
    s = sel(NEWEST)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.flags = ()


def test_enabled_unknown_flag():
    with pytest.raises(CompatError, match="did you mean 'python_dedicated_snapshot'"):
        sel(NEWEST).enabled("python_dedicated_snapshots")


def _selection_args():
    out = [(f.default_on, ()) for f in DATED if f.default_on >= FIRST.default_on]
    out += [(NEWEST, (r.flag, "python_entropy_at_import_error")) for r in EXPERIMENTAL]
    out.append((FIRST.default_on - DAY, (FIRST.flag,)))
    return list(dict.fromkeys(out))


@pytest.mark.parametrize("date,flags", _selection_args(), ids=str)
def test_json_round_trip(date, flags):
    s = sel(date, flags)
    d = s.to_json()
    assert json.loads(json.dumps(d)) == d
    assert set(d) >= {"release", "pyodide_version", "python_version", "platform_tag",
                      "package_set_date", "flags", "compatibility_date"}
    assert d["release"] == s.release.flag
    assert d["pyodide_version"] == s.release.pyodide_version
    assert d["python_version"] == s.release.python_version
    assert d["platform_tag"] == s.release.platform_tag
    assert d["package_set_date"] == s.package_set_date.isoformat()
    assert d["flags"] == list(s.flags)
    back = RuntimeSelection.from_json(json.loads(json.dumps(d)))
    assert back == s
    assert back.to_json() == d


def test_from_json_does_not_depend_on_today(monkeypatch):
    d = sel(NEWEST).to_json()
    monkeypatch.setattr(S, "current_date", lambda: D(2000, 1, 1))
    assert RuntimeSelection.from_json(d).to_json() == d


def _bad_records():
    good = sel(NEWEST, ["python_entropy_at_import_error"]).to_json()
    other = next(r for r in R.releases() if r.pyodide_version != good["pyodide_version"])
    return [
        ("missing-key", {k: v for k, v in good.items() if k != "platform_tag"}, "keys"),
        ("extra-key", {**good, "extra": 1}, "keys"),
        ("not-a-dict", [good], "keys"),
        ("unknown-release", {**good, "release": "python_workers_19990101"}, "not in this"),
        ("version-mismatch", {**good, "pyodide_version": other.pyodide_version}, "pyodide_version"),
        ("tag-mismatch", {**good, "platform_tag": other.platform_tag}, "platform_tag"),
        ("unknown-flag", {**good, "flags": sorted(good["flags"] + ["zzz"])}, "unknown"),
        ("unsorted", {**good, "flags": list(reversed(good["flags"]))}, "sorted"),
        ("duplicate", {**good, "flags": sorted(good["flags"] * 2)}, "sorted"),
        ("release-not-in-flags", {**good, "flags": [f for f in good["flags"]
                                                    if f != good["release"]]}, "release flag"),
        ("flags-not-list", {**good, "flags": "x"}, "list of strings"),
        ("bad-date", {**good, "package_set_date": "2026-13-01"}, "YYYY-MM-DD"),
        ("date-not-string", {**good, "compatibility_date": 20261121}, "must be a string"),
    ]


@pytest.mark.parametrize("d,fragment", [pytest.param(*b[1:], id=b[0]) for b in _bad_records()])
def test_from_json_errors(d, fragment):
    with pytest.raises(CompatError) as e:
        RuntimeSelection.from_json(d)
    assert fragment in str(e.value) and "\n" not in str(e.value)
