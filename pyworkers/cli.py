"""The ``pyworkers`` command line.

Each command group lives in its own module under :mod:`pyworkers.commands` and attaches itself to
the groups defined here; this module only defines the groups and imports those modules.
Errors go to stderr with a non-zero exit; data goes to stdout (``--json`` where scripts want it).
"""
from __future__ import annotations

import click

from pyworkers import __version__


class UserError(click.ClickException):
    """An error the user can fix: printed as one line (``error: ...``) on stderr, exit status 1."""

    def format_message(self) -> str:  # pragma: no cover - click prints it
        return self.message

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyworkers")
def main() -> None:
    """Run Python web apps (ASGI) in WebAssembly isolates that cold-start from memory snapshots.

    \b
    Typical use:
      pyworkers python -c "import sys; print(sys.version)"   run code in a fresh sandbox
      pyworkers runtimes list                                 runtime releases and what is installed
      pyworkers check APP_DIR                                 will its packages and imports work here?
    """


@main.group()
def runtimes() -> None:
    """Runtime releases (Pyodide builds): list, select, install."""


@main.group("deployments")
def deployments() -> None:
    """Deployments in the store: list, show, verify, rollback."""


# Command modules register themselves on the groups above.
from pyworkers.commands import engine as _engine  # noqa: E402,F401
from pyworkers.commands import compat as _compat  # noqa: E402,F401
from pyworkers.commands import packages as _packages  # noqa: E402,F401
from pyworkers.commands import snapshot as _snapshot  # noqa: E402,F401
from pyworkers.commands import deploy as _deploy  # noqa: E402,F401
from pyworkers.commands import registry as _registry  # noqa: E402,F401
from pyworkers.commands import prune as _prune  # noqa: E402,F401
from pyworkers.commands import serve as _serve  # noqa: E402,F401
from pyworkers.commands import bench as _bench  # noqa: E402,F401
from pyworkers.commands import check as _check  # noqa: E402,F401
from pyworkers.commands import secret as _secret  # noqa: E402,F401
