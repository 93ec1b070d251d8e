"""CLI commands for `pyworkers snapshot` (create, inspect)."""
from __future__ import annotations

import json
import sys

import click

from pyworkers.cli import UserError, main


@main.group("snapshot")
def snapshot() -> None:
    """Memory snapshots: create one from an app, inspect and verify a file."""


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


@snapshot.command("create")
@click.argument("app_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--type", "snapshot_type", type=click.Choice(["baseline", "package", "dedicated"]),
              default="dedicated", show_default=True, help="What the snapshot contains.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Snapshot file to write.")
@click.option("--runtime", "release", metavar="VERSION", help="Pyodide version (baseline without an app).")
@click.option("--store", type=click.Path(file_okay=False), help="Deployment store for layers (default: a temporary one).")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot metadata as JSON.")
def create_cmd(app_dir, snapshot_type, output, release, store, as_json) -> None:
    """Create a baseline, package or dedicated snapshot of APP_DIR into a file.

    baseline: runtime + warm standard library (APP_DIR optional); package: + the app's packages
    imported; dedicated: + the app's whole top level (what `pyworkers deploy` takes).
    """
    from pyworkers.commands.engine import progress_printer
    from pyworkers.snapshot.create import create_snapshot

    try:
        meta = create_snapshot(app_dir, snapshot_type, output, release=release, store=store,
                               progress=progress_printer("snapshot: "))
    except Exception as e:  # noqa: BLE001 - one clear line, details on stderr
        from pyworkers.runtime import GuestError

        detail = getattr(e, "detail", None) or (e.traceback if isinstance(e, GuestError) else None)
        if detail:
            click.echo(str(detail).rstrip(), err=True)
        raise UserError(str(e).splitlines()[0] if str(e) else type(e).__name__)
    if as_json:
        click.echo(json.dumps(meta, indent=2, sort_keys=True, default=str))
    else:
        click.echo(f"{output}: {meta['snapshot_type']} snapshot of {meta['memory_size'] / 2**20:.1f} MiB "
                   f"linear memory for Pyodide {meta['release']}")


@snapshot.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print header, metadata and sections as JSON.")
@click.option("--verify", is_flag=True, help="Check every section's checksum; exit 1 on any mismatch.")
def inspect_cmd(file: str, as_json: bool, verify: bool) -> None:
    """Show a snapshot's metadata, sections and side modules."""
    from pyworkers.snapshot import SnapshotError, read_snapshot

    try:
        snap = read_snapshot(file)
    except SnapshotError as e:
        raise UserError(str(e))
    meta = snap.metadata
    problems = []
    if verify:
        for s in meta["sections"]:
            try:
                snap.section(s["name"])
            except SnapshotError as e:
                problems.append(str(e))
    if as_json:
        out = {"file": file, "digest": snap.digest, "metadata": meta}
        if verify:
            out["verified"] = not problems
            out["problems"] = problems
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        click.echo(f"{file}: pyworkers snapshot, format {meta['format_version']}, type {meta['snapshot_type']}")
        click.echo(f"  runtime     Pyodide {meta['release']} (Python {meta.get('python_version')}), "
                   f"build {meta['build_sha256'][:16]}")
        click.echo(f"  wasmtime    {meta['wasmtime_version']} ({meta['engine']})")
        click.echo(f"  created     {meta['created']}")
        click.echo(f"  memory      {_fmt_bytes(meta['memory_size'])} linear memory")
        click.echo(f"  layer hash  {meta.get('layer_hash')}   app hash {meta.get('app_hash')}")
        if meta.get("selection"):
            sel = meta["selection"]
            click.echo(f"  selection   {sel.get('release')} (compatibility date {sel.get('compatibility_date')})")
        ent = meta.get("entropy") or {}
        click.echo(f"  entropy     {ent.get('calls', 0)} host entropy calls before the snapshot")
        click.echo("  sections:")
        for s in meta["sections"]:
            click.echo(f"    {s['name']:8} {_fmt_bytes(s['length']):>10} stored, {_fmt_bytes(s['raw_length']):>10} raw "
                       f"({s['compression']}) sha256 {s['sha256'][:16]}")
        if meta.get("side_modules"):
            click.echo("  side modules (load order):")
            for lib in meta["side_modules"]:
                click.echo(f"    {lib['path']}  memory base {lib['memory_base']}  table base {lib['table_base']}  "
                           f"sha256 {lib['sha256'][:16]}")
        if verify:
            click.echo("  verify: " + ("all checksums match" if not problems else "FAILED"))
    for p in problems:
        click.echo(f"error: {p}", err=True)
    if problems:
        sys.exit(1)
