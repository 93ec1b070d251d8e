"""CLI commands for pyworkers.packages: ``pyworkers resolve``.

``pyworkers resolve [APP_DIR | -r requirements.txt]`` resolves the requirements
(``requirements.txt``, else ``pyproject.toml`` dependencies, else ``pylock.toml`` as given:
:mod:`pyworkers.packages.inputs`) for the runtime
that the compatibility date and flags select (``pyworkers.compat``), writes ``pylock.toml``
(PEP 751) beside them, downloads the wheels into the shared cache (verified; ``--no-download``
skips this) and prints the pins. ``--json`` prints a list of
``{"name", "version", "source": "lock"|"index"|"path"|"url", "wheel", "sha256", "url"}``.
Progress and notes go to stderr; errors are :class:`pyworkers.cli.UserError` (one line), with
any detail lines printed above it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from pyworkers.cli import UserError, main


def _groups(app_dir: Path | None) -> tuple[str, ...]:
    """The worker configuration's ``dependency_groups`` (``()`` without an app directory)."""
    if app_dir is None:
        return ()
    from pyworkers.config import ConfigError, load_worker_config

    try:
        return load_worker_config(app_dir).dependency_groups
    except ConfigError as e:
        raise UserError(str(e)) from None


def _selection(app_dir: Path | None, date: str | None, flags: tuple[str, ...]):
    """The ``RuntimeSelection``: from the app's config (``pyworkers.config``) with the options
    as overrides when there is an app directory, else from ``--compatibility-date``/``--flag``."""
    from pyworkers.compat import CompatError, newest_known_date, select

    try:
        if app_dir is not None:
            from pyworkers.config import ConfigError, load_worker_config

            try:
                cfg = load_worker_config(app_dir, {"compatibility_date": date,
                                                   "compatibility_flags": list(flags) or None})
                return cfg.runtime_selection()
            except ConfigError as e:
                raise UserError(str(e)) from None
        if date is None:
            raise UserError("missing --compatibility-date: pass e.g. --compatibility-date "
                            f"{newest_known_date().isoformat()} (or give the app directory, "
                            "whose pyworkers.toml sets compatibility_date)")
        return select(date, flags)
    except CompatError as e:
        raise UserError(str(e)) from None


def _release_lock(selection, pyodide_lock: Path | None, cache_dir: str | None, progress):
    """The release's ``pyodide-lock.json``: ``--pyodide-lock``, else the installed release
    (``pyworkers.runtime.install.ensure_release``), else ``None`` with a note."""
    if pyodide_lock is not None:
        return pyodide_lock
    try:
        from pyworkers.runtime.install import RuntimeInstallError, ensure_release
    except ImportError:
        progress.note("the runtime installer is unavailable: resolving from the index only")
        return None
    try:
        inst = ensure_release(selection.release, cache_dir=cache_dir, progress=progress.status)
    except RuntimeInstallError as e:
        raise UserError(f"cannot install runtime {selection.release.pyodide_version} to read "
                        f"its package lock: {e}") from None
    return getattr(inst, "lock_json", None) or Path(inst.package) / "pyodide-lock.json"


@main.command("resolve", short_help="Resolve an app's requirements to pinned wheels for a runtime.")
@click.argument("app_dir", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option("-r", "--requirement", "requirements", type=click.Path(path_type=Path,
              dir_okay=False), help="Requirements file (default: APP_DIR/requirements.txt).")
@click.option("--compatibility-date", "date", metavar="YYYY-MM-DD",
              help="Compatibility date selecting the runtime (default: the app's config).")
@click.option("--flag", "flags", multiple=True, metavar="FLAG",
              help="Compatibility flag (repeatable), as for `pyworkers runtimes select`.")
@click.option("--index-url", metavar="URL",
              help="Package index (simple API). Default: PIP_INDEX_URL, pip's config, pip's "
                   "default.")
@click.option("--extra-index-url", "extra_index_urls", multiple=True, metavar="URL",
              help="Additional index (repeatable). Default: pip's configuration.")
@click.option("--exclude-newer", metavar="DATE",
              help="Only files uploaded before DATE (YYYY-MM-DD or RFC 3339) count. Default: "
                   "the runtime's package-set date.")
@click.option("--no-exclude-newer", is_flag=True, help="Count files of any upload date.")
@click.option("--package-base-url", metavar="URL",
              help="Where the release lock's wheels download from (default: Pyodide's CDN "
                   "for the release, or PYWORKERS_PACKAGE_BASE_URL; '' disables).")
@click.option("--pyodide-lock", type=click.Path(path_type=Path, exists=True),
              help="The release's pyodide-lock.json (default: from the installed runtime).")
@click.option("--no-release-lock", is_flag=True,
              help="Ignore the release's pinned package set; resolve from the index only.")
@click.option("--lock", "lock_path", type=click.Path(path_type=Path, dir_okay=False),
              help="PEP 751 lock file to reuse and write (default: pylock.toml beside the "
                   "requirements).")
@click.option("--pre", is_flag=True, help="Allow pre-releases.")
@click.option("--no-download", is_flag=True, help="Resolve only; do not download the wheels.")
@click.option("--no-build", is_flag=True,
              help="Never build pure-Python wheels from sdists (packages without a wheel for "
                   "the runtime then fail).")
@click.option("--cache-dir", metavar="DIR", help="Cache root (default: PYWORKERS_CACHE_DIR or "
              "the user cache directory).")
@click.option("--json", "as_json", is_flag=True, help="Print the pins as JSON.")
def resolve_cmd(app_dir: Path | None, requirements: Path | None, date: str | None,
                flags: tuple[str, ...], index_url: str | None,
                extra_index_urls: tuple[str, ...], exclude_newer: str | None,
                no_exclude_newer: bool, package_base_url: str | None,
                pyodide_lock: Path | None, no_release_lock: bool, lock_path: Path | None,
                pre: bool, no_download: bool, no_build: bool, cache_dir: str | None,
                as_json: bool) -> None:
    """Resolve an app's requirements (requirements.txt, else pyproject.toml [project]
    dependencies, else pylock.toml as given) to an exact, hash-pinned set of wheels for the
    runtime its compatibility date selects, write pylock.toml beside them and download the
    wheels. Packages with no wheel for the runtime are built as pure-Python wheels from their
    sdists when that works (--no-build turns this off)."""
    from pyworkers.packages import (DEFAULT, IMPLICIT_REQUIREMENTS, PackagesError, RichProgress,
                                    download, parse_exclude_newer, read_lock, resolve, write_lock)
    from pyworkers.packages.inputs import app_inputs

    if app_dir is not None and requirements is not None:
        raise UserError("give APP_DIR or -r FILE, not both")
    if exclude_newer and no_exclude_newer:
        raise UserError("--exclude-newer and --no-exclude-newer contradict each other: keep one")
    base = app_dir if app_dir is not None else (requirements.parent if requirements else Path("."))
    if requirements is not None:
        if not requirements.is_file():
            raise UserError(f"no requirements file: {requirements} does not exist")
        req_file, kind = requirements, "requirements"
    else:
        try:
            inputs = app_inputs(base, _groups(base))
        except PackagesError as e:
            raise UserError(str(e)) from None
        if inputs.kind is None:
            raise UserError(f"no requirements in {base}: add requirements.txt or [project] "
                            "dependencies to pyproject.toml (or pass -r FILE)")
        req_file, kind = inputs.path, inputs.kind
    sel = _selection(app_dir if app_dir is not None else (None if requirements else Path(".")),
                     date, flags)
    if exclude_newer:
        try:
            cutoff = parse_exclude_newer(exclude_newer)
        except ValueError as e:
            raise UserError(str(e)) from None
    else:
        cutoff = None if no_exclude_newer else DEFAULT
    lock = lock_path if lock_path is not None else req_file.parent / "pylock.toml"
    with RichProgress() as progress:
        try:
            if kind == "pylock":
                progress.note(f"{req_file}: no requirements.txt or pyproject.toml dependencies; "
                              "using the lock as given")
                res = read_lock(req_file)
                lock = req_file
            else:
                rl = None if no_release_lock else _release_lock(sel, pyodide_lock, cache_dir,
                                                                progress)
                reqs = inputs.requirements if requirements is None else req_file
                res = resolve(reqs, sel, pyodide_lock=rl,
                              package_base_url=DEFAULT if package_base_url is None
                              else package_base_url,
                              index_url=index_url, extra_index_urls=list(extra_index_urls) or None,
                              exclude_newer=cutoff, lock_path=lock, pre=pre, cache_dir=cache_dir,
                              progress=progress, build=not no_build,
                              implicit=IMPLICIT_REQUIREMENTS)
            if res.reused and res.built_from_sdist():
                progress.note("built from sdists (pure Python): " + ", ".join(
                    f"{w.name} {w.version}" for w in res.built_from_sdist()))
            wheels = res.wheels
            if not no_download:
                got = download(res, cache_dir, progress=progress, index_url=index_url)
                wheels = tuple(c.wheel for c in got)
                if wheels != res.wheels:  # lock pins fetched from the index instead
                    write_lock(dataclasses.replace(res, wheels=wheels), lock)
        except PackagesError as e:
            if e.detail:
                progress.console.print(e.detail, markup=False, highlight=False,
                                       soft_wrap=True)
            raise UserError(str(e)) from None
    if as_json:
        click.echo(json.dumps([w.to_json() for w in wheels], indent=2))
        return
    rel = sel.release
    click.echo(f"# Pyodide {rel.pyodide_version} ({rel.platform_tag}), {len(wheels)} wheels, "
               f"lock {lock}{' (reused)' if res.reused else ''}")
    rows = [["NAME", "VERSION", "SOURCE", "WHEEL"]] + [
        [w.name, w.version, w.source, w.filename] for w in wheels]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
