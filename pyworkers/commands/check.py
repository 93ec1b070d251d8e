"""CLI: ``pyworkers check [APP_DIR] [--json]`` (:mod:`pyworkers.check`): a compatibility report
without deploying. Exit status 0 when everything fits, 1 when a package is unavailable or a
module is absent; errors (unreadable inputs, conflicts) are one ``error:`` line."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pyworkers.cli import UserError, main


@main.command("check", short_help="Report whether an app's packages and imports fit the sandbox.")
@click.argument("app_dir", required=False, default=".",
                type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--compatibility-date", "date", metavar="YYYY-MM-DD",
              help="Compatibility date selecting the runtime (default: the app's config).")
@click.option("--flag", "flags", multiple=True, metavar="FLAG", help="Compatibility flag.")
@click.option("--index-url", metavar="URL", help="Package index (default: pip's configuration).")
@click.option("--extra-index-url", "extra_index_urls", multiple=True, metavar="URL",
              help="Additional index (repeatable).")
@click.option("--package-base-url", metavar="URL",
              help="Where the release lock's wheels download from ('' disables).")
@click.option("--pyodide-lock", type=click.Path(path_type=Path, exists=True),
              help="The release's pyodide-lock.json (default: from the installed runtime).")
@click.option("--no-build", is_flag=True, help="Do not build pure-Python wheels from sdists.")
@click.option("--cache-dir", metavar="DIR", help="Cache root.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_cmd(app_dir: Path, date: str | None, flags: tuple[str, ...], index_url: str | None,
              extra_index_urls: tuple[str, ...], package_base_url: str | None,
              pyodide_lock: Path | None, no_build: bool, cache_dir: str | None,
              as_json: bool) -> None:
    """Without deploying: one row per package (wasm wheel / pure wheel / built from sdist /
    left out / unavailable, why, newest version that works) and the app's imports of
    standard-library modules the sandbox lacks or limits."""
    from pyworkers.check import check_app, format_report
    from pyworkers.commands.packages import _groups, _release_lock, _selection
    from pyworkers.packages import PackagesError, RichProgress

    sel = _selection(app_dir, date, flags)
    with RichProgress() as progress:
        try:
            rl = _release_lock(sel, pyodide_lock, cache_dir, progress)
            report = check_app(app_dir, selection=sel, release_lock=rl, index_url=index_url,
                               extra_index_urls=list(extra_index_urls) or None,
                               cache_dir=cache_dir, build=not no_build, groups=_groups(app_dir),
                               progress=progress, package_base_url=package_base_url)
        except PackagesError as e:
            if e.detail:
                progress.console.print(e.detail, markup=False, highlight=False, soft_wrap=True)
            raise UserError(str(e)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        format_report(report, click.echo)
    if not report["ok"]:
        raise SystemExit(1)
