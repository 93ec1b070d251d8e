"""pyworkers.snapshot: capture an isolate's state into a portable file; restore isolates from it.

Public API: :func:`take_snapshot`, :class:`Restorer`, :func:`restore_isolate`,
:func:`read_snapshot`, :class:`SnapshotError`, ``SNAPSHOT_TYPES``.
"""
from pyworkers.snapshot.capture import SNAPSHOT_TYPES, take_snapshot  # noqa: F401
from pyworkers.snapshot.format import SnapshotError, read_snapshot  # noqa: F401
from pyworkers.snapshot.restore import Restorer, restore_isolate  # noqa: F401
