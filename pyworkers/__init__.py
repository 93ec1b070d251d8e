"""pyworkers: Python workers on Pyodide's CPython, hosted by wasmtime, started from memory snapshots.

Data flow (one sub-package each): ``pyworkers.compat`` (compatibility date/flags -> runtime
release) -> ``pyworkers.packages`` (requirements -> lock -> site-packages layer) ->
``pyworkers.runtime`` (wasmtime host, isolates) -> ``pyworkers.snapshot`` (capture/restore) ->
runtime pool -> HTTP.
"""

__version__ = "0.1.0"
