"""CLI commands for pyworkers.compat: ``pyworkers runtimes list`` and ``pyworkers runtimes select``.

Data goes to stdout (``--json`` for scripts); errors are :class:`pyworkers.cli.UserError`
(``error: ...`` on stderr, exit status 1).

``runtimes list --json`` prints::

    {"newest_compatibility_date": "YYYY-MM-DD",
     "releases": [{"flag", "pyodide_version", "python_version", "abi_version", "platform_tag",
                   "emscripten_version", "npm_integrity", "package_set_date",
                   "default_on": "YYYY-MM-DD" | null, "experimental": bool,
                   "allow_disable": bool, "description", "installed": bool | null}, ...],
     "flags": [{"name", "default_on": "YYYY-MM-DD" | null, "allow_disable": bool,
                "description"}, ...]}

(``installed`` is ``null`` when it cannot be determined.) ``runtimes select --json`` prints
:meth:`pyworkers.compat.RuntimeSelection.to_json`.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from pyworkers.cli import UserError, runtimes
from pyworkers.compat import CompatError, behaviour_flags, newest_known_date, select
from pyworkers.compat.releases import releases


def _installed(release) -> bool | None:
    """``pyworkers.runtime.install.is_installed(release)``, or ``None`` if that is unavailable."""
    try:
        from pyworkers.runtime.install import is_installed
    except ImportError:
        return None
    return bool(is_installed(release))


def _iso(d) -> str | None:
    return d.isoformat() if d is not None else None


def _list_json() -> dict:
    rels = []
    for r in releases():
        rels.append({
            "flag": r.flag,
            "pyodide_version": r.pyodide_version,
            "python_version": r.python_version,
            "abi_version": r.abi_version,
            "platform_tag": r.platform_tag,
            "emscripten_version": r.emscripten_version,
            "npm_integrity": r.npm_integrity,
            "package_set_date": r.package_set_date.isoformat(),
            "default_on": _iso(r.default_on),
            "experimental": r.experimental,
            "allow_disable": r.allow_disable,
            "description": r.description,
            "installed": _installed(r),
        })
    flags = [{"name": f.name, "default_on": _iso(f.default_on), "allow_disable": f.allow_disable,
              "description": f.description} for f in behaviour_flags()]
    return {"newest_compatibility_date": newest_known_date().isoformat(),
            "releases": rels, "flags": flags}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


@runtimes.command("list", short_help="Runtime releases, behaviour flags, what is installed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (shape in the README).")
def list_cmd(as_json: bool) -> None:
    """Every runtime release and behaviour flag, and whether each release is installed locally."""
    data = _list_json()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    word = {True: "yes", False: "no", None: "unknown"}
    rows = [["RELEASE FLAG", "PYODIDE", "PYTHON", "PLATFORM TAG", "PACKAGE SET", "DEFAULT ON",
             "INSTALLED"]]
    for r in data["releases"]:
        on = "experimental (opt-in)" if r["experimental"] else (r["default_on"] or "opt-in")
        rows.append([r["flag"], r["pyodide_version"], r["python_version"], r["platform_tag"],
                     r["package_set_date"], on, word[r["installed"]]])
    click.echo(_table(rows))
    click.echo()
    rows = [["BEHAVIOUR FLAG", "DEFAULT ON", "NO_ ALLOWED", "WHAT IT CHANGES"]]
    for f in data["flags"]:
        rows.append([f["name"], f["default_on"] or "opt-in", "yes" if f["allow_disable"] else "no",
                     f["description"]])
    click.echo(_table(rows))
    click.echo()
    click.echo(f"This pyworkers knows compatibility dates up to {data['newest_compatibility_date']}.")


@runtimes.command("select", short_help="What a compatibility date and flags select.")
@click.option("--compatibility-date", "date", metavar="YYYY-MM-DD",
              help="Compatibility date (required unless --app-dir's config sets one).")
@click.option("--flag", "flags", multiple=True, metavar="FLAG",
              help="Compatibility flag to turn on, or no_FLAG to turn an implied one off "
                   "(repeatable; replaces the config file's compatibility_flags).")
@click.option("--app-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Read compatibility_date/compatibility_flags from this app's pyworkers.toml "
                   "or pyproject.toml [tool.pyworkers]; the options above override it.")
@click.option("--json", "as_json", is_flag=True, help="Print the selection as JSON.")
def select_cmd(date: str | None, flags: tuple[str, ...], app_dir: Path | None,
               as_json: bool) -> None:
    """Show the runtime release, package set and flags a compatibility date and flags select."""
    from pyworkers.config import ConfigError, load_worker_config

    try:
        if app_dir is not None:
            cfg = load_worker_config(app_dir, {"compatibility_date": date,
                                               "compatibility_flags": list(flags) or None})
            sel = cfg.runtime_selection()
        elif date is None:
            raise UserError("missing --compatibility-date: pass e.g. --compatibility-date "
                            f"{newest_known_date().isoformat()} (or --app-dir DIR to read it "
                            "from the worker's config)")
        else:
            sel = select(date, flags)
    except (CompatError, ConfigError) as e:
        raise UserError(str(e)) from None
    if as_json:
        click.echo(json.dumps(sel.to_json(), indent=2))
        return
    r = sel.release
    exp = "  [experimental]" if r.experimental else ""
    rows = [
        ["release", f"{r.flag}{exp}"],
        ["pyodide", r.pyodide_version],
        ["python", r.python_version],
        ["platform tag", r.platform_tag],
        ["package set date", sel.package_set_date.isoformat()],
        ["compatibility date", sel.compatibility_date.isoformat()],
        ["flags", ", ".join(sel.flags)],
    ]
    click.echo(_table(rows))
