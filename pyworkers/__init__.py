"""pyworkers: Python workers on Pyodide's CPython, hosted by wasmtime, started from memory snapshots.

Data flow (one sub-package each): ``pyworkers.compat`` (compatibility date/flags -> runtime
release) -> ``pyworkers.packages`` (requirements -> lock -> site-packages layer) ->
``pyworkers.runtime`` (wasmtime host, isolates) -> ``pyworkers.snapshot`` (capture/restore) ->
serve (pool, scaling policy, host<->guest ASGI protocol, HTTP front) -> HTTP.
"""
import os as _os

__version__ = "0.1.0"

# In a source checkout the sub-packages are the repository's top-level folders (runtime/,
# snapshot/, packages/, compat/, benchmarks/), mapped into `pyworkers` by pyproject.toml when
# installed. When this package is imported straight from a checkout (e.g. `python3 -m pyworkers`
# run at the repository root, where the current directory shadows the installed package), let
# submodule lookups also search the repository root so `pyworkers.runtime` etc. resolve there.
_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "compat")) and _os.path.isfile(
        _os.path.join(_root, "compat", "releases.toml")):
    __path__.append(_root)  # type: ignore[name-defined]
