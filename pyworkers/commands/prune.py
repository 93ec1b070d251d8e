"""CLI commands for :mod:`pyworkers.prune`.

* ``pyworkers deployments prune [--keep N] [--dry-run] [--store DIR] [--cache-dir DIR] [--json]``:
  remove deployments that are neither current, nor among the N most recent per worker
  (default 5), nor leased by a running ``pyworkers serve``; then layers, package snapshots and
  compiled snapshot image modules nothing references. ``--json``: the report of
  :func:`pyworkers.prune.prune_deployments` plus ``"store"``.
* ``pyworkers cache prune [--store DIR]... [--dry-run] [--cache-dir DIR] [--json]``: remove
  compiled snapshot image modules no deployment of the given stores (default: the default
  store) uses and that were not used in the last 10 minutes.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from pyworkers.cli import UserError, deployments, main
from pyworkers.commands.store_options import open_store, store_option


def _fmt(n: int) -> str:
    from pyworkers.deploy_progress import fmt_bytes

    return fmt_bytes(n)


@deployments.command("prune", short_help="Remove old deployments and what nothing references.")
@click.option("--keep", type=click.IntRange(min=0), default=5, show_default=True,
              help="Most recent deployments kept per worker (the current one is always kept).")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@store_option
@click.option("--cache-dir", metavar="DIR", help="Cache root holding the snapshot image modules "
              "(default: PYWORKERS_CACHE_DIR or the user cache directory).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def prune_cmd(keep: int, dry_run: bool, store_dir: Path | None, cache_dir: str | None,
              as_json: bool) -> None:
    """Remove deployments that are neither current, nor among the KEEP most recent of their
    worker, nor in use by a running `pyworkers serve` (lease); then the layers, package
    snapshots and compiled snapshot image modules no remaining deployment references. Safe to
    run while deploys and servers run."""
    from pyworkers.prune import prune_deployments
    from pyworkers.store import StoreError

    store = open_store(store_dir)
    try:
        rep = prune_deployments(store, keep=keep, dry_run=dry_run, cache_dir=cache_dir)
    except StoreError as e:
        raise UserError(str(e)) from None
    if as_json:
        click.echo(json.dumps({**rep, "store": str(store.root)}, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for d in rep["deployments"]:
        click.echo(f"{verb} deployment {d['id']} ({_fmt(d['bytes'])})")
    for k in rep["kept"]:
        if k["why"] == "leased":
            holders = ", ".join(f"{x.get('holder', '?')} pid {x.get('pid', '?')}"
                                for x in rep["leases"].get(k["id"], []))
            click.echo(f"kept {k['id']}: in use ({holders})")
    for key, what in (("layers", "layer"), ("package_snapshots", "package snapshot"),
                      ("image_modules", "image module")):
        for x in rep[key]:
            click.echo(f"{verb} {what} {x['path']} ({_fmt(x['bytes'])})")
    for n in rep["notes"]:
        click.echo(f"note: {n}", err=True)
    click.echo(f"{'would free' if dry_run else 'freed'} {_fmt(rep['bytes'])}; "
               f"{len(rep['kept'])} deployment(s) kept", err=True)


@main.group("cache")
def cache() -> None:
    """The per-machine cache (runtimes, compiled modules, wheels, snapshot image modules)."""


@cache.command("prune", short_help="Remove snapshot image modules nothing uses.")
@click.option("--store", "stores", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Store whose deployments count as users (repeatable; default: "
                   "PYWORKERS_STORE or the user data directory).")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option("--cache-dir", metavar="DIR", help="Cache root (default: PYWORKERS_CACHE_DIR or the "
              "user cache directory).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def cache_prune_cmd(stores: tuple[Path, ...], dry_run: bool, cache_dir: str | None,
                    as_json: bool) -> None:
    """Remove compiled snapshot image modules (~35 MiB each, rebuilt on demand) that no
    deployment of the given stores uses and that nothing used in the last 10 minutes."""
    from pyworkers.prune import prune_cache

    sts = [open_store(p) for p in stores] or [open_store(None)]
    rep = prune_cache(sts, dry_run=dry_run, cache_dir=cache_dir)
    if as_json:
        click.echo(json.dumps({**rep, "stores": [str(s.root) for s in sts]}, indent=2))
        return
    for x in rep["image_modules"]:
        click.echo(f"{'would remove' if dry_run else 'removed'} image module {x['path']} ({_fmt(x['bytes'])})")
    for n in rep["notes"]:
        click.echo(f"note: {n}", err=True)
    click.echo(f"{'would free' if dry_run else 'freed'} {_fmt(rep['bytes'])}", err=True)
