"""CLI commands for `pyworkers bench` (benchmarks live in the `benchmarks/` folder)."""
from __future__ import annotations

import json

import click

from pyworkers.cli import main


@main.group("bench")
def bench() -> None:
    """Benchmarks, measured side by side on this machine (medians, not timed tests)."""


@bench.command("engine")
@click.option("--release", default="314.0.7", show_default=True, help="Pyodide version.")
@click.option("--runs", default=20, show_default=True, help="Counted isolate cold starts.")
@click.option("--process-runs", default=5, show_default=True, help="Counted fresh-process starts.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def engine_cmd(release: str, runs: int, process_runs: int, as_json: bool) -> None:
    """Cold start to a usable interpreter from the cached compiled module."""
    from pyworkers.benchmarks import engine

    res = engine.run(release, runs, process_runs)
    click.echo(json.dumps(res, indent=2) if as_json else engine.format_table(res))


@bench.command("snapshot")
@click.option("--app", "app", default="examples/fastapi-full", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="App directory to deploy and restore.")
@click.option("--runs", default=30, show_default=True, help="Counted restores.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def snapshot_cmd(app: str, runs: int, as_json: bool) -> None:
    """Snapshot restore time, memory per isolate and leaks, beside boot + import."""
    from pyworkers.benchmarks import snapshot

    res = snapshot.run(app, runs)
    click.echo(json.dumps(res, indent=2) if as_json else snapshot.format_table(res))
