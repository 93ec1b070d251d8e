"""Worker configuration loading (pyworkers/config.py)."""
from __future__ import annotations

import datetime as dt

import pytest

from pyworkers.compat import releases as R
from pyworkers.compat import select
from pyworkers.config import DEFAULT_MAIN, ConfigError, WorkerConfig, load_worker_config

NEWEST = R.newest_known_date()

FULL = """\
name = "hello-worker"
main = "server.api:application"
compatibility_date = "2026-11-01"
compatibility_flags = ["python_entropy_at_import_error", "no_python_dedicated_snapshot"]
[vars]
GREETING = "hi"
"""


def _app(tmp_path, name="myapp"):
    d = tmp_path / name
    d.mkdir()
    return d


def test_pyworkers_toml(tmp_path):
    d = _app(tmp_path)
    (d / "pyworkers.toml").write_text(FULL)
    c = load_worker_config(d)
    assert c.source == d / "pyworkers.toml"
    assert (c.name, c.main, c.module, c.attribute) == (
        "hello-worker", "server.api:application", "server.api", "application")
    assert c.compatibility_date == dt.date(2026, 11, 1)
    assert c.compatibility_flags == ("python_entropy_at_import_error",
                                     "no_python_dedicated_snapshot")
    assert dict(c.vars) == {"GREETING": "hi"}
    s = c.runtime_selection(today=NEWEST)
    assert s == select("2026-11-01", list(c.compatibility_flags), today=NEWEST)


def test_pyproject_tool_table(tmp_path):
    d = _app(tmp_path)
    body = "\n".join(
        ("[tool.pyworkers.vars]" if line == "[vars]" else line) for line in FULL.splitlines())
    (d / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.pyworkers]\n' + body + "\n")
    c = load_worker_config(d)
    assert c.source == d / "pyproject.toml"
    assert c.name == "hello-worker" and dict(c.vars) == {"GREETING": "hi"}


def test_defaults_without_config(tmp_path):
    d = _app(tmp_path, "my_app.v2")
    (d / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no [tool.pyworkers]
    c = load_worker_config(d)
    assert c.source is None
    assert (c.name, c.main, c.compatibility_date, c.compatibility_flags, dict(c.vars)) == (
        "my_app.v2", DEFAULT_MAIN, None, (), {})
    with pytest.raises(ConfigError, match=r'add compatibility_date = "2026-11-21"'):
        c.runtime_selection(today=dt.date(2026, 11, 21))


def test_bare_toml_date(tmp_path):
    d = _app(tmp_path)
    (d / "pyworkers.toml").write_text("compatibility_date = 2025-09-29\n")
    assert load_worker_config(d).compatibility_date == dt.date(2025, 9, 29)


def test_overrides_win(tmp_path):
    d = _app(tmp_path)
    (d / "pyworkers.toml").write_text(FULL)
    c = load_worker_config(d, {"compatibility_date": "2025-10-01", "main": "app:app",
                               "compatibility_flags": ["python_workers_20260817"],
                               "vars": {"OTHER": "1"}, "name": None})
    assert c.compatibility_date == dt.date(2025, 10, 1)
    assert c.main == "app:app" and c.name == "hello-worker"
    assert c.compatibility_flags == ("python_workers_20260817",)
    assert dict(c.vars) == {"GREETING": "hi", "OTHER": "1"}
    assert c.origins["compatibility_date"] == "command line"
    assert c.origins["name"].endswith("pyworkers.toml")


def test_config_is_frozen(tmp_path):
    c = load_worker_config(_app(tmp_path))
    assert isinstance(c, WorkerConfig)
    with pytest.raises(Exception):
        c.name = "x"
    with pytest.raises(TypeError):
        c.vars["X"] = "1"


@pytest.mark.parametrize("text,key,fragment", [
    ('compatability_date = "2026-11-01"\n', "compatability_date",
     "did you mean 'compatibility_date'"),
    ('bogus = 1\n', "bogus", "the keys are"),
    ("name = 3\n", "name", "must be a string"),
    ('name = "has space"\n', "name", "not a worker name"),
    ('main = "app"\n', "main", "module:attribute"),
    ('main = "my-app:app"\n', "main", "module:attribute"),
    ("main = ['a:b']\n", "main", "must be a string"),
    ('compatibility_date = "2026-11"\n', "compatibility_date", "YYYY-MM-DD"),
    ("compatibility_date = 20261101\n", "compatibility_date", "YYYY-MM-DD"),
    ("compatibility_date = 2026-11-01T10:00:00\n", "compatibility_date", "YYYY-MM-DD"),
    ('compatibility_flags = "python_dedicated_snapshot"\n', "compatibility_flags",
     "array of strings"),
    ("compatibility_flags = [1]\n", "compatibility_flags", "array of strings"),
    ('compatibility_flags = ["python_dedicated_snapshots"]\n', "compatibility_flags",
     "did you mean 'python_dedicated_snapshot'"),
    ('vars = "A=1"\n', "vars", "table of strings"),
    ("[vars]\nPORT = 8080\n", "vars.PORT", 'quote it, PORT = "8080"'),
    ('[vars]\n"1BAD" = "x"\n', "vars.1BAD", "environment variable name"),
])
def test_file_errors_name_key_and_file(tmp_path, text, key, fragment):
    d = _app(tmp_path)
    (d / "pyworkers.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_worker_config(d)
    msg = str(e.value)
    assert msg.startswith(f"{d / 'pyworkers.toml'}: {key}: ")
    assert fragment in msg and "\n" not in msg


def test_pyproject_error_names_tool_table(tmp_path):
    d = _app(tmp_path)
    (d / "pyproject.toml").write_text("[tool.pyworkers]\nmain = 1\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml \[tool.pyworkers\]: main: must be"):
        load_worker_config(d)


def test_override_errors_name_command_line(tmp_path):
    with pytest.raises(ConfigError, match="^command line: compatibility_date: "):
        load_worker_config(_app(tmp_path), {"compatibility_date": "tomorrow"})


def test_invalid_toml(tmp_path):
    d = _app(tmp_path)
    (d / "pyworkers.toml").write_text("name = \n")
    with pytest.raises(ConfigError, match="pyworkers.toml: not valid TOML"):
        load_worker_config(d)


def test_both_files_is_an_error(tmp_path):
    d = _app(tmp_path)
    (d / "pyworkers.toml").write_text('name = "a"\n')
    (d / "pyproject.toml").write_text('[tool.pyworkers]\nname = "b"\n')
    with pytest.raises(ConfigError, match="keep one"):
        load_worker_config(d)


def test_missing_app_dir(tmp_path):
    with pytest.raises(ConfigError, match="app directory not found"):
        load_worker_config(tmp_path / "nope")


def test_bad_directory_name_needs_explicit_name(tmp_path):
    d = _app(tmp_path, "has space")
    with pytest.raises(ConfigError, match='name: not set .* add name = "my-worker"'):
        load_worker_config(d)
    (d / "pyworkers.toml").write_text('name = "ok"\n')
    assert load_worker_config(d).name == "ok"


@pytest.mark.parametrize("date,flags,fragment", [
    ("2025-09-28", [], "enables no runtime release"),
    ("2026-11-01", ["python_dedicated_snapshot", "no_python_dedicated_snapshot"], "contradict"),
])
def test_selection_errors_name_the_file(tmp_path, date, flags, fragment):
    d = _app(tmp_path)
    (d / "pyworkers.toml").write_text(
        f'compatibility_date = "{date}"\ncompatibility_flags = {flags!r}\n'.replace("'", '"'))
    c = load_worker_config(d)
    with pytest.raises(ConfigError) as e:
        c.runtime_selection(today=NEWEST)
    assert str(e.value).startswith(str(d / "pyworkers.toml")) and fragment in str(e.value)


def test_future_date_from_file(tmp_path):
    d = _app(tmp_path)
    (d / "pyworkers.toml").write_text('compatibility_date = "2026-06-02"\n')
    with pytest.raises(ConfigError, match="in the future"):
        load_worker_config(d).runtime_selection(today=dt.date(2026, 6, 1))


def test_max_concurrency_key(tmp_path):
    from pyworkers.config import ConfigError, load_worker_config

    (tmp_path / "pyworkers.toml").write_text('name = "w"\nmax_concurrency = 8\n')
    assert load_worker_config(tmp_path).max_concurrency == 8
    for bad in ("0", "true", '"8"'):
        (tmp_path / "pyworkers.toml").write_text(f'name = "w"\nmax_concurrency = {bad}\n')
        with pytest.raises(ConfigError, match="max_concurrency: must be an integer"):
            load_worker_config(tmp_path)
