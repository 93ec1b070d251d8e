"""Options and helpers shared by the registry commands and ``pyworkers deploy --push``
(a module of its own so that :mod:`pyworkers.commands.deploy` and
:mod:`pyworkers.commands.registry` can both import it)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from pyworkers.cli import UserError


def registry_options(f):
    """The auth and TLS options shared by push, pull and ``deploy --push``."""
    f = click.option("--ca-file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                     help="PEM file of CA certificates to trust for the registry (added to "
                          "certifi's bundle).")(f)
    f = click.option("--password-stdin", is_flag=True,
                     help="Read the registry password (or token) from standard input.")(f)
    f = click.option("--username", metavar="USER",
                     help="Registry user name (default: the docker configuration's login).")(f)
    return f


def make_client(ref, username: str | None, password_stdin: bool, ca_file: Path | None):
    """A :class:`pyworkers.registry.RegistryClient` for ``ref.host`` from the CLI options."""
    from pyworkers.registry import Credentials, RegistryClient, RegistryError

    creds = None
    if password_stdin and not username:
        raise UserError("--password-stdin needs --username")
    if username:
        if not password_stdin:
            raise UserError("give the password on standard input with --password-stdin "
                            "(never on the command line)")
        pw = sys.stdin.read().rstrip("\r\n")
        if not pw:
            raise UserError("--password-stdin: standard input was empty")
        creds = Credentials(username, pw, "--username/--password-stdin")
    try:
        return RegistryClient(ref.host, credentials=creds, ca_file=ca_file)
    except RegistryError as e:
        raise UserError(str(e)) from None


def parse_ref(text: str):
    """Parse an ``oci://`` reference or raise :class:`UserError`."""
    from pyworkers.registry import parse_reference

    try:
        return parse_reference(text)
    except ValueError as e:
        raise UserError(str(e)) from None


def push_to(dep, ref_text: str, username, password_stdin, ca_file, quiet: bool) -> dict:
    """Push ``dep`` to ``ref_text``; returns the push result as JSON; errors as UserError."""
    from pyworkers.registry import RegistryError, push_deployment

    ref = parse_ref(ref_text)
    say = (lambda _m: None) if quiet else (lambda m: click.echo(f"  {m}", err=True))
    with make_client(ref, username, password_stdin, ca_file) as client:
        try:
            res = push_deployment(client, ref, dep, progress=say)
        except (RegistryError, ValueError) as e:
            raise UserError(f"push of {dep.id} to {ref} failed: {e}") from None
    return res.to_json()
