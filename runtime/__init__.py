"""pyworkers.runtime: the wasmtime host for Pyodide's CPython (isolates, VFS, dynamic linker).

Public API: :class:`Isolate`, :class:`Runtime`, :class:`RunResult` and the errors
:class:`GuestError`, :class:`IsolateCrashed`, :class:`GuestExited`.
"""
from pyworkers.runtime.isolate import (  # noqa: F401
    GuestError, GuestExited, Isolate, IsolateCrashed, IsolateError, RunResult, Runtime,
)
