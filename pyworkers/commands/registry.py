"""CLI commands for :mod:`pyworkers.registry`.

* ``pyworkers push [DEPLOYMENT] oci://HOST[:PORT]/REPO[:TAG] [--store DIR] [--username U
  --password-stdin] [--ca-file PEM] [--json] [-q]``: push a deployment (an id, a unique id
  prefix or a worker name for its current deployment; default the only worker's current one)
  and point TAG (default: the worker name) at it. ``--json``: ``{"reference", "digest",
  "deployment", "blobs": [{"role", "mediaType", "digest", "size", "uploaded"}],
  "uploaded_bytes", "seconds"}``.
* ``pyworkers pull oci://HOST[:PORT]/REPO:TAG|@sha256:HEX [--store DIR] [--no-current]
  [--no-prepare] [--cache-dir DIR] [auth/TLS options] [--json] [-q]``: pull a deployment into
  the store (verified, atomic) and make it its worker's current one. ``--json``:
  ``{"deployment", "name", "digest", "pulled", "current", "blobs", "downloaded_bytes",
  "seconds", "store"}``.

Credentials: ``--username`` with the password on standard input (``--password-stdin``), else
the docker configuration (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``).
"""
from __future__ import annotations

import json

import click

from pyworkers.cli import UserError, main
from pyworkers.commands.store_options import open_store, pick_deployment, store_option
from pyworkers.commands.registry_options import parse_ref, push_to, make_client, registry_options


@main.command("push", short_help="Push a deployment to an OCI registry.")
@click.argument("args", nargs=-1, required=True, metavar="[DEPLOYMENT] oci://HOST/REPO[:TAG]")
@store_option
@registry_options
@click.option("--json", "as_json", is_flag=True, help="Print what was pushed as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def push_cmd(args: tuple[str, ...], store_dir, username, password_stdin, ca_file, as_json,
             quiet) -> None:
    """Push DEPLOYMENT (an id, a unique id prefix, or a worker name for its current
    deployment; default: the only worker's current one) to an OCI registry as an artifact,
    and point TAG (default: the worker's name) at it. Parts the registry already has (a
    shared site-packages layer, an unchanged app) are not uploaded again."""
    if len(args) > 2:
        raise UserError("give at most a deployment and a reference: pyworkers push [DEPLOYMENT] "
                        "oci://HOST/REPO[:TAG]")
    ref_text = args[-1]
    dep = pick_deployment(open_store(store_dir), args[0] if len(args) == 2 else None)
    out = push_to(dep, ref_text, username, password_stdin, ca_file, quiet or as_json)
    if as_json:
        click.echo(json.dumps(out, indent=2))
    elif not quiet:
        up = [b["role"] for b in out["blobs"] if b["uploaded"]]
        click.echo(f"pushed {out['deployment']} to {out['reference']} ({out['digest']}); "
                   f"uploaded {', '.join(up) or 'nothing'} ({out['uploaded_bytes']} bytes) in "
                   f"{out['seconds']:.2f} s", err=True)


@main.command("pull", short_help="Pull a deployment from an OCI registry into the store.")
@click.argument("reference", metavar="oci://HOST/REPO:TAG|@sha256:...")
@store_option
@click.option("--current/--no-current", default=True, show_default=True,
              help="Make it its worker's current deployment.")
@click.option("--prepare/--no-prepare", default=True, show_default=True,
              help="Check the snapshot restores here and compile its image module before "
                   "publishing (so serving starts warm).")
@click.option("--cache-dir", metavar="DIR", help="Cache root for runtimes and compiled modules.")
@registry_options
@click.option("--json", "as_json", is_flag=True, help="Print what was pulled as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def pull_cmd(reference: str, store_dir, current: bool, prepare: bool, cache_dir, username,
             password_stdin, ca_file, as_json, quiet) -> None:
    """Pull the deployment at REFERENCE (a tag or a digest) into the store: every blob is
    checked against its sha256 digest, the app against its content hash, the snapshot against
    the record; the deployment is then published atomically."""
    from pyworkers.registry import RegistryError, pull_deployment
    from pyworkers.store import StoreError

    ref = parse_ref(reference)
    store = open_store(store_dir)
    say = (lambda _m: None) if (quiet or as_json) else (lambda m: click.echo(f"  {m}", err=True))
    with make_client(ref, username, password_stdin, ca_file) as client:
        try:
            res = pull_deployment(client, ref, store, make_current=current, prepare=prepare,
                                  cache_dir=cache_dir, progress=say)
        except (RegistryError, StoreError) as e:
            raise UserError(f"pull of {ref} failed: {e}") from None
    if as_json:
        click.echo(json.dumps({**res.to_json(), "store": str(store.root)}, indent=2))
    elif not quiet:
        what = "pulled" if res.pulled else "already had"
        click.echo(f"{what} {res.deployment.id} ({res.deployment.name}) from {ref} "
                   f"({res.downloaded_bytes} bytes in {res.seconds:.2f} s)"
                   + ("; it is current" if res.current else ""), err=True)

