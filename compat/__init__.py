"""pyworkers.compat: compatibility dates and flags select the runtime release and its package set.

Public API (re-exported here):

* :func:`select` ``(compatibility_date, flags=(), *, today=None) -> RuntimeSelection``
* :class:`RuntimeSelection` (frozen; ``release``, ``flags``, ``package_set_date``,
  ``compatibility_date``, ``enabled(flag)``, ``to_json()``, ``from_json(d)``)
* :class:`CompatError` (``ValueError``): a user error, one line with the fix
* the table: :class:`Release`, :class:`Flag`, :func:`flags`,
  :func:`behaviour_flags`, :func:`get_release`, :func:`release_for_flag`,
  :func:`default_release`, :func:`newest_known_date`, :func:`tool`

The data lives in ``releases.toml``; the rules in :mod:`pyworkers.compat.selection`. The table
functions ``releases()`` etc. are in :mod:`pyworkers.compat.releases`; ``pyworkers.compat.releases``
stays that module (the function is not re-exported here, so it cannot shadow the module).
"""
from .releases import (
    Flag,
    Release,
    TableError,
    Tool,
    UnknownReleaseError,
    behaviour_flags,
    default_release,
    flags,
    get_release,
    newest_known_date,
    release_for_flag,
    tool,
)
from . import releases, selection
from .selection import CompatError, RuntimeSelection, current_date, parse_compatibility_date, select

__all__ = [
    "CompatError", "Flag", "Release", "RuntimeSelection", "TableError", "Tool",
    "UnknownReleaseError", "behaviour_flags", "current_date", "default_release", "flags",
    "get_release", "newest_known_date", "parse_compatibility_date", "release_for_flag",
    "releases", "select", "selection", "tool",
]
