"""`pyworkers runtimes list` / `pyworkers runtimes select` through click's CliRunner."""
from __future__ import annotations

import datetime as dt
import json
import sys

import pytest
from click.testing import CliRunner

from pyworkers.cli import main
from pyworkers.compat import RuntimeSelection, select
from pyworkers.compat import releases as R
from pyworkers.compat import selection as S

NEWEST = R.newest_known_date()
SELECT_KEYS = {"release", "pyodide_version", "python_version", "platform_tag",
               "package_set_date", "flags", "compatibility_date"}


@pytest.fixture(autouse=True)
def fixed_today(monkeypatch):
    monkeypatch.setattr(S, "current_date", lambda: NEWEST)


def run(*args):
    return CliRunner().invoke(main, ["runtimes", *args])


@pytest.mark.parametrize("args", [
    [],
    ["--flag", "python_entropy_at_import_error"],
    ["--flag", "python_workers_20260817"],
    ["--flag", "no_python_workers_20260610", "--flag", "no_python_dedicated_snapshot"],
])
@pytest.mark.parametrize("date", ["2025-09-29", "2026-10-31", "2026-11-01", NEWEST.isoformat()])
def test_select_json_shape(date, args):
    res = run("select", "--compatibility-date", date, *args, "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert set(d) == SELECT_KEYS
    flags = [a for a in args if a != "--flag"]
    assert d == select(date, flags, today=NEWEST).to_json()
    assert isinstance(d["flags"], list) and d["flags"] == sorted(d["flags"])
    assert dt.date.fromisoformat(d["package_set_date"])
    assert RuntimeSelection.from_json(d).to_json() == d


def test_select_text():
    res = run("select", "--compatibility-date", NEWEST.isoformat(),
              "--flag", "python_workers_20260817")
    assert res.exit_code == 0
    s = select(NEWEST, ["python_workers_20260817"], today=NEWEST)
    assert s.release.flag in res.stdout and "[experimental]" in res.stdout
    assert s.release.pyodide_version in res.stdout and s.release.platform_tag in res.stdout


@pytest.mark.parametrize("args,fragment", [
    (["--compatibility-date", "2025-9-29"], "YYYY-MM-DD"),
    (["--compatibility-date", "2025-09-28"], "enables no runtime release"),
    (["--compatibility-date", "2026-11-01", "--flag", "python_inline_sync"], "did you mean"),
    ([], "missing --compatibility-date"),
])
def test_select_errors(args, fragment):
    res = run("select", *args, "--json")
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr.startswith("error: ") and fragment in res.stderr
    assert res.stderr.count("\n") == 1


def test_select_future_date(monkeypatch):
    monkeypatch.setattr(S, "current_date", lambda: dt.date(2026, 1, 1))
    res = run("select", "--compatibility-date", "2026-01-02")
    assert res.exit_code == 1 and "in the future" in res.stderr


def test_select_from_app_dir(tmp_path):
    (tmp_path / "pyworkers.toml").write_text(
        'compatibility_date = "2026-10-31"\ncompatibility_flags = ["python_workers_20260817"]\n')
    res = run("select", "--app-dir", str(tmp_path), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == select("2026-10-31", ["python_workers_20260817"],
                                            today=NEWEST).to_json()
    # CLI options override the file (flags replace the file's flags)
    res = run("select", "--app-dir", str(tmp_path), "--compatibility-date", "2026-11-01",
              "--flag", "python_entropy_at_import_error", "--json")
    assert json.loads(res.stdout) == select("2026-11-01", ["python_entropy_at_import_error"],
                                            today=NEWEST).to_json()


def test_select_app_dir_error_names_file(tmp_path):
    (tmp_path / "pyworkers.toml").write_text('compatibility_date = "2025-09-28"\n')
    res = run("select", "--app-dir", str(tmp_path))
    assert res.exit_code == 1
    assert "pyworkers.toml" in res.stderr and "enables no runtime release" in res.stderr


def test_list_json(monkeypatch):
    res = run("list", "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["newest_compatibility_date"] == NEWEST.isoformat()
    assert [r["flag"] for r in d["releases"]] == [r.flag for r in R.releases()]
    for row, r in zip(d["releases"], R.releases()):
        assert row["pyodide_version"] == r.pyodide_version
        assert row["python_version"] == r.python_version
        assert row["platform_tag"] == r.platform_tag
        assert row["package_set_date"] == r.package_set_date.isoformat()
        assert row["default_on"] == (r.default_on.isoformat() if r.default_on else None)
        assert row["experimental"] is r.experimental
        assert row["npm_integrity"] == r.npm_integrity
        assert row["installed"] in (True, False, None)
    assert [f["name"] for f in d["flags"]] == [f.name for f in R.behaviour_flags()]
    assert all(set(f) == {"name", "default_on", "allow_disable", "description"}
               for f in d["flags"])


def test_list_installed_comes_from_runtime_install(monkeypatch):
    pytest.importorskip("pyworkers.runtime.install")
    import pyworkers.runtime.install as inst

    first = R.releases()[0].pyodide_version
    monkeypatch.setattr(inst, "is_installed", lambda r: r.pyodide_version == first)
    d = json.loads(run("list", "--json").stdout)
    assert [r["installed"] for r in d["releases"]] == [
        r.pyodide_version == first for r in R.releases()]
    lines = run("list").stdout.splitlines()
    for r in R.releases():
        row = next(line for line in lines if line.startswith(r.flag + " "))
        assert row.split()[-1] == ("yes" if r.pyodide_version == first else "no")


def test_list_installed_unknown_without_runtime_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyworkers.runtime.install", None)  # import -> ImportError
    d = json.loads(run("list", "--json").stdout)
    assert all(r["installed"] is None for r in d["releases"])
    assert "unknown" in run("list").stdout


def test_list_text_has_every_release_and_flag():
    out = run("list").stdout
    for r in R.releases():
        assert r.flag in out and r.pyodide_version in out
    for f in R.behaviour_flags():
        assert f.name in out
