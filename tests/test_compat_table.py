"""The compatibility table (compat/releases.toml) and its loader/checker (compat/releases.py)."""
from __future__ import annotations

import copy
import datetime as dt

import pytest

from pyworkers.compat import releases as R


def test_issue_required_rows():
    """The releases the issue requires, with the documented decisions."""
    by_flag = {r.flag: r for r in R.releases()}
    old = by_flag["python_workers_20250116"]
    assert (old.pyodide_version, old.python_minor, old.default_on) == (
        "0.29.3", "3.13", dt.date(2025, 9, 29))
    assert old.platform_tag == "pyodide_2025_0_wasm32"
    new = by_flag["python_workers_20260610"]
    assert (new.pyodide_version, new.python_minor, new.default_on) == (
        "314.0.7", "3.14", dt.date(2026, 11, 1))
    assert new.platform_tag == "pyemscripten_2026_0_wasm32"
    exp = [r for r in R.releases() if r.experimental]
    assert exp and all(r.default_on is None for r in exp)
    assert all(r.pyodide_version.startswith("314.") for r in exp)


def test_behaviour_flags_required():
    fl = {f.name: f for f in R.behaviour_flags()}
    first = min(r.default_on for r in R.releases() if r.default_on)
    assert fl["python_inline_sync_endpoints"].default_on == first
    assert fl["python_inline_sync_endpoints"].allow_disable
    assert fl["python_entropy_at_import_error"].default_on is None
    assert fl["python_dedicated_snapshot"].default_on is not None
    assert fl["python_dedicated_snapshot"].allow_disable
    assert all(f.description for f in R.flags())


def test_default_release_is_newest_stable():
    stable = [r for r in R.releases() if not r.experimental]
    assert R.default_release() == max(stable, key=lambda r: r.default_on)


def test_get_release_prefers_non_experimental_when_versions_are_shared():
    for r in R.releases():
        got = R.get_release(r.pyodide_version)
        assert got.pyodide_version == r.pyodide_version
        if any(x.pyodide_version == r.pyodide_version and not x.experimental
               for x in R.releases()):
            assert not got.experimental


def test_get_release_unknown():
    with pytest.raises(R.UnknownReleaseError, match="runtimes list"):
        R.get_release("1.2.3")


def test_release_for_flag():
    for r in R.releases():
        assert R.release_for_flag(r.flag) is r
    with pytest.raises(R.UnknownReleaseError, match="python_workers_20250116"):
        R.release_for_flag("python_workers_19990101")


def test_tool_binaryen():
    t = R.tool("binaryen")
    assert t.npm_package == "binaryen" and t.npm_integrity.startswith("sha512-")


def _good() -> dict:
    return copy.deepcopy(R._table())


def test_shipped_table_parses():
    assert R.parse_table(_good()) == R.table()


def _mutations():
    def drop_newest(t):
        del t["compatibility"]["newest_date"]

    def bad_date(t):
        t["release"][0]["package_set_date"] = "2025-9-29"

    def exp_with_default(t):
        next(r for r in t["release"] if r["experimental"])["default_on"] = "2026-01-01"

    def dup_flag(t):
        t["flag"][0]["name"] = t["release"][0]["flag"]

    def no_prefix(t):
        t["flag"][0]["name"] = "no_thing"

    def beyond_newest(t):
        t["flag"][0]["default_on"] = "2099-01-01"

    def out_of_order(t):
        t["release"].reverse()

    def unknown_key(t):
        t["release"][0]["pyodide"] = "x"

    def bad_tag(t):
        t["release"][0]["platform_tag"] = "pyodide_2099_0_wasm32"

    def bad_integrity(t):
        t["release"][0]["npm_integrity"] = "sha256-abc"

    def all_experimental(t):
        for r in t["release"]:
            r["experimental"] = True
            r.pop("default_on", None)

    return [(drop_newest, "newest_date is missing"), (bad_date, "not a YYYY-MM-DD"),
            (exp_with_default, "must not have default_on"), (dup_flag, "appears twice"),
            (no_prefix, "not start with no_"), (beyond_newest, "after newest_date"),
            (out_of_order, "oldest first"), (unknown_key, "unknown keys"),
            (bad_tag, "does not contain abi_version"), (bad_integrity, "npm_integrity"),
            (all_experimental, "no non-experimental release")]


@pytest.mark.parametrize("mutate,fragment", _mutations(), ids=lambda x: getattr(x, "__name__", ""))
def test_broken_tables_are_refused(mutate, fragment):
    t = _good()
    mutate(t)
    with pytest.raises(R.TableError, match="releases.toml") as e:
        R.parse_table(t)
    assert fragment in str(e.value)
