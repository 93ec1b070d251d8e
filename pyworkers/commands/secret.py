"""``pyworkers secret put|list|delete``: a worker's secrets in the store
(:class:`pyworkers.bindings.secrets.SecretStore`). Values are read from stdin and never
printed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pyworkers.cli import UserError, main
from pyworkers.commands.store_options import open_store, store_option


@main.group("secret")
def secret() -> None:
    """Secrets of a worker: set in os.environ and env.NAME of its isolates, never in a
    deployment, a snapshot or a log."""


def _worker(store, name: str | None) -> str:
    """``--name``, else the worker configured in the current directory, else the store's
    only worker."""
    if name:
        return name
    from pyworkers.config import ConfigError, load_worker_config

    here = Path.cwd()
    if (here / "pyworkers.toml").is_file() or (here / "pyproject.toml").is_file():
        try:
            return load_worker_config(here).name
        except ConfigError as e:
            raise UserError(str(e)) from None
    names = store.names() if store.root.is_dir() else []
    if len(names) == 1:
        return names[0]
    raise UserError("give --name WORKER (workers in the store: "
                    + (", ".join(names) or "none") + ")")


def _secrets(store):
    from pyworkers.bindings.secrets import SecretStore

    return SecretStore(store.root)


@secret.command("put", short_help="Set a secret (value from stdin).")
@click.argument("secret_name", metavar="NAME")
@click.option("--name", help="Worker name (default: ./pyworkers.toml's, else the store's only "
                             "worker).")
@store_option
def put_cmd(secret_name: str, name: str | None, store_dir: Path | None) -> None:
    """Set secret NAME of a worker to the value read from stdin (one trailing newline is
    dropped). Isolates started afterwards see it; no redeploy needed."""
    from pyworkers.bindings import BindingsError

    store = open_store(store_dir)
    worker = _worker(store, name)
    if sys.stdin.isatty():
        click.echo(f"value of {secret_name} (end with Ctrl-D):", err=True)
    value = sys.stdin.read()
    if value.endswith("\n"):
        value = value[:-1]
        if value.endswith("\r"):
            value = value[:-1]
    dep = store.current(worker) if store.root.is_dir() else None
    if dep is not None and secret_name in (dep.record["config"].get("vars") or {}):
        raise UserError(f"worker {worker!r}: {secret_name} is a [vars] key of its current "
                        f"deployment ({dep.id}): rename one of them")
    try:
        existed = _secrets(store).put(worker, secret_name, value)
    except BindingsError as e:
        raise UserError(str(e)) from None
    click.echo(f"{'updated' if existed else 'added'} secret {secret_name} of {worker}", err=True)


@secret.command("list", short_help="Names of a worker's secrets (never values).")
@click.option("--name", help="Worker name (default: ./pyworkers.toml's, else every worker "
                             "with secrets).")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(name: str | None, store_dir: Path | None, as_json: bool) -> None:
    """Secret names per worker (values are never shown)."""
    from pyworkers.bindings import BindingsError

    store = open_store(store_dir)
    sec = _secrets(store)
    try:
        workers = [name] if name else sec.workers()
        rows = {w: sec.names(w) for w in workers}
    except BindingsError as e:
        raise UserError(str(e)) from None
    if as_json:
        click.echo(json.dumps({"store": str(store.root), "secrets": rows}, indent=2))
        return
    for w, names in rows.items():
        for n in names:
            click.echo(f"{w}\t{n}")


@secret.command("delete", short_help="Remove a secret.")
@click.argument("secret_name", metavar="NAME")
@click.option("--name", help="Worker name (default: ./pyworkers.toml's, else the store's only "
                             "worker).")
@store_option
def delete_cmd(secret_name: str, name: str | None, store_dir: Path | None) -> None:
    """Remove secret NAME of a worker (isolates started afterwards no longer see it)."""
    from pyworkers.bindings import BindingsError

    store = open_store(store_dir)
    worker = _worker(store, name)
    try:
        _secrets(store).delete(worker, secret_name)
    except BindingsError as e:
        raise UserError(str(e)) from None
    click.echo(f"deleted secret {secret_name} of {worker}", err=True)
