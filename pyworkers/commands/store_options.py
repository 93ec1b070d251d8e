"""What the store-using commands share (``deploy``, ``deployments ...``, ``secret``,
``registry``): the ``--store`` option, opening the store with a user-facing error, and picking
one deployment by id or worker name."""
from __future__ import annotations

from pathlib import Path

import click

from pyworkers.cli import UserError

#: ``--store DIR`` (``$PYWORKERS_STORE``), passed to the command as ``store_dir``
store_option = click.option(
    "--store", "store_dir", type=click.Path(path_type=Path, dir_okay=True, file_okay=False),
    default=None, envvar="PYWORKERS_STORE", show_envvar=True,
    help="Deployment store directory (default: the user data directory, "
         "pyworkers/deployments).")


def open_store(path: Path | None):
    """The :class:`pyworkers.store.Store` at ``path`` (``None``: the default one). Raises
    :class:`UserError` with the store's message when it cannot be opened."""
    from pyworkers.store import Store, StoreError

    try:
        return Store(path)
    except StoreError as e:
        raise UserError(str(e)) from None


def pick_deployment(store, ref: str | None):
    """The deployment ``ref`` names (a deployment id or a worker name: its current one), or
    with ``ref`` ``None`` the current deployment of the store's only worker. Raises
    :class:`UserError` naming the choices when that is ambiguous, or the store's message."""
    from pyworkers.store import StoreError

    try:
        if ref is None:
            names = store.names()
            if len(names) != 1:
                raise UserError("give a deployment id or a worker name (" + (
                    ", ".join(names) if names else f"the store {store.root} is empty") + ")")
            return store.current(names[0])
        return store.get(ref)
    except StoreError as e:
        raise UserError(str(e)) from None
