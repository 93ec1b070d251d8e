"""The one wasmtime ``Engine`` configuration pyworkers compiles and runs with.

Every compiled module (``.cwasm``) is only valid for the exact wasmtime build and configuration that
wrote it, so the configuration lives here, once, and :func:`config_fingerprint` (wasmtime version +
these settings) keys every compiled-module cache entry.

Settings and why:
- ``wasm_exceptions``: Pyodide uses wasm exceptions (translated to exnref at install time);
- ``wasm_gc`` + ``wasm_function_references``: CPython's Emscripten trampoline modules use
  ``ref.test`` on function references (see the glue's ``getWasmTrampolineModule``);
- ``epoch_interruption``: request timeouts interrupt running wasm (stores get a huge deadline
  unless a caller sets one);
- ``memory_init_cow``: instances map data segments copy-on-write from the ``.cwasm`` (snapshots
  restored Wizer-style rely on it; it cannot be read back, so it is always set explicitly).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import wasmtime

#: Settings applied to :class:`wasmtime.Config`, in this order. Part of the cache key.
CONFIG_SETTINGS: dict[str, object] = {
    "wasm_exceptions": True,
    "wasm_gc": True,
    "wasm_function_references": True,
    "wasm_reference_types": True,
    "wasm_bulk_memory": True,
    "wasm_tail_call": True,
    "epoch_interruption": True,
    "memory_init_cow": True,
    "cranelift_opt_level": "speed",
    "parallel_compilation": True,
}


def wasmtime_version() -> str:
    """Version of the installed ``wasmtime`` Python package (e.g. ``"50.0.1"``)."""
    from importlib.metadata import version

    return version("wasmtime")


@functools.cache
def config_fingerprint() -> str:
    """``wasmtime-<version>-<hash of CONFIG_SETTINGS>``: the key of compiled-module caches."""
    h = hashlib.sha256(json.dumps(CONFIG_SETTINGS, sort_keys=True).encode()).hexdigest()[:10]
    return f"wasmtime-{wasmtime_version()}-{h}"


@functools.cache
def get_engine() -> wasmtime.Engine:
    """The process-wide engine (compiles and runs every module; thread-safe)."""
    cfg = wasmtime.Config()
    for k, v in CONFIG_SETTINGS.items():
        setattr(cfg, k, v)
    return wasmtime.Engine(cfg)


class CorruptCacheError(RuntimeError):
    """A compiled module in the cache does not match its recorded hash."""


def verify_cwasm(path: Path, rebuild: Callable[[], Path] | None = None) -> Path:
    """Check ``path`` against the sha256 in ``<path>.json``.

    On a mismatch the entry is deleted and, if ``rebuild`` is given, rebuilt (its result
    returned); otherwise :class:`CorruptCacheError` names the file. A ``.cwasm`` is never
    deserialized unverified: wasmtime trusts its contents.
    """
    manifest = path.with_suffix(".json")
    try:
        expected = json.loads(manifest.read_text())["cwasm"]["sha256"]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        ok = h.hexdigest() == expected
    except (OSError, ValueError, KeyError):
        ok = False
    if ok:
        return path
    for p in (path, manifest):
        try:
            os.unlink(p)
        except OSError:
            pass
    if rebuild is None:
        raise CorruptCacheError(f"compiled module {path} failed its checksum and was deleted; "
                                "run the command again to rebuild it")
    return rebuild()


_loaded: dict[str, wasmtime.Module] = {}


def load_module(path: Path, rebuild: Callable[[], Path] | None = None) -> wasmtime.Module:
    """Deserialize a verified ``.cwasm`` (memoized per process; ~3 ms + hashing once)."""
    key = str(path)
    mod = _loaded.get(key)
    if mod is None:
        path = verify_cwasm(path, rebuild)
        mod = wasmtime.Module.deserialize_file(get_engine(), str(path))
        _loaded[key] = mod
    return mod
