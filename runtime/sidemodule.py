"""Side module files (C extensions in wheels: ``*.so`` wasm files with ``dylink.0``): reading
their ``dylink.0`` section (:func:`read_dylink`, as ``getDylinkMetadata`` in Emscripten's
``libdylink.js``) and compiling them for this engine (:func:`compile_side_module`: legacy
exception handling translated with binaryen, mutable globals exported for snapshots, cached in
memory and on disk by content hash). Linking one into an isolate is
:mod:`pyworkers.runtime.dylink`."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path

import wasmtime

from pyworkers.runtime import wasmbin
from pyworkers.runtime.engine import get_engine, load_module


class DylinkError(RuntimeError):
    """A side module could not be loaded (reported to the guest through ``dlerror``)."""


@dataclasses.dataclass
class DylinkMetadata:
    """Contents of a ``dylink.0`` section (sizes in bytes / table entries, aligns as log2)."""

    memory_size: int = 0
    memory_align: int = 0
    table_size: int = 0
    table_align: int = 0
    needed: list[str] = dataclasses.field(default_factory=list)
    weak_imports: set[str] = dataclasses.field(default_factory=set)
    tls_exports: set[str] = dataclasses.field(default_factory=set)
    runtime_paths: list[str] = dataclasses.field(default_factory=list)


def read_dylink(data: bytes) -> DylinkMetadata:
    """Parse the ``dylink.0`` custom section, which must be the module's first section
    (``getDylinkMetadata`` in libdylink.js). Raises :class:`DylinkError` otherwise."""
    if data[:8] != wasmbin.MAGIC:
        raise DylinkError("not a WebAssembly module")
    if data[8] != 0:
        raise DylinkError("need the dylink section to be first")
    size, pos = wasmbin.read_uleb(data, 9)
    end = pos + size
    name, pos = wasmbin.read_name(data, pos)
    if name != "dylink.0":
        raise DylinkError("need a dylink.0 section (is this a side module?)")
    md = DylinkMetadata()

    def strings(p):
        n, p = wasmbin.read_uleb(data, p)
        out = []
        for _ in range(n):
            s, p = wasmbin.read_name(data, p)
            out.append(s)
        return out, p

    while pos < end:
        kind = data[pos]
        sub_size, pos = wasmbin.read_uleb(data, pos + 1)
        sub_end = pos + sub_size
        if kind == 1:  # WASM_DYLINK_MEM_INFO
            md.memory_size, p = wasmbin.read_uleb(data, pos)
            md.memory_align, p = wasmbin.read_uleb(data, p)
            md.table_size, p = wasmbin.read_uleb(data, p)
            md.table_align, p = wasmbin.read_uleb(data, p)
        elif kind == 2:  # WASM_DYLINK_NEEDED
            md.needed, _ = strings(pos)
        elif kind == 3:  # WASM_DYLINK_EXPORT_INFO
            n, p = wasmbin.read_uleb(data, pos)
            for _ in range(n):
                sym, p = wasmbin.read_name(data, p)
                flags, p = wasmbin.read_uleb(data, p)
                if flags & 256:
                    md.tls_exports.add(sym)
        elif kind == 4:  # WASM_DYLINK_IMPORT_INFO
            n, p = wasmbin.read_uleb(data, pos)
            for _ in range(n):
                _mod, p = wasmbin.read_name(data, p)
                sym, p = wasmbin.read_name(data, p)
                flags, p = wasmbin.read_uleb(data, p)
                if flags & 3 == 1:
                    md.weak_imports.add(sym)
        elif kind == 5:  # WASM_DYLINK_RUNTIME_PATH
            md.runtime_paths, _ = strings(pos)
        pos = sub_end
    return md


_compile_lock = threading.Lock()
SIDE_VARIANT_VERSION = 2
_modules: dict[str, wasmtime.Module] = {}


def compile_side_module(data: bytes, *, name: str = "side", cache_dir: str | os.PathLike | None = None,
                        progress=None, variant: str = "load") -> tuple[wasmtime.Module, str]:
    """Compile a side module, translating legacy exception handling first if needed.

    Every variant exports the module's mutable globals (``__pyw_g<index>``) so snapshots can
    capture them. ``variant="restore"`` also turns active data segments passive: used to
    re-instantiate the module over a restored memory image without overwriting it.
    Returns ``(module, sha256 of the original bytes)``. Cached in memory and on disk
    (``<cache>/sidemodules/<sha>.<variant>.wasm``, ``.cwasm`` per engine fingerprint).
    """
    from pyworkers.runtime.install import _sha256_file, cache_root, ensure_compiled, translate_exceptions

    sha = hashlib.sha256(data).hexdigest()
    key = f"{sha}:{variant}"
    mod = _modules.get(key)
    if mod is not None:
        return mod, sha
    with _compile_lock:
        mod = _modules.get(key)
        if mod is not None:
            return mod, sha
        root = cache_root(cache_dir)
        sdir = root / "sidemodules"
        sdir.mkdir(parents=True, exist_ok=True)
        wasm = sdir / f"{sha[:32]}.wasm"
        if not wasm.exists():
            src = sdir / f"{sha[:32]}.orig.wasm.tmp{os.getpid()}"
            src.write_bytes(data)
            try:
                try:
                    wasmtime.Module.validate(get_engine(), data)
                    os.replace(src, wasm)
                except wasmtime.WasmtimeError as e:
                    if "legacy_exceptions" not in str(e) and "legacy exceptions" not in str(e):
                        raise DylinkError(f"{name}: not a valid WebAssembly module for this runtime: "
                                          f"{str(e).splitlines()[0]}") from None
                    translate_exceptions(src, wasm, root=root, progress=progress)
            finally:
                src.unlink(missing_ok=True)
        out = sdir / f"{sha[:32]}.{variant}.v{SIDE_VARIANT_VERSION}.wasm"
        if not out.exists():
            rewritten = wasmbin.export_mutable_globals(wasm.read_bytes())
            if variant == "restore":
                # its data and what its start function (global relocations, TLS setup) wrote
                # are in the image already; globals are set from the snapshot after
                rewritten = wasmbin.drop_start(wasmbin.make_data_passive(rewritten))
            elif variant != "load":
                raise ValueError(f"unknown side module variant {variant!r}")
            tmp = out.with_name(out.name + f".tmp{os.getpid()}")
            tmp.write_bytes(rewritten)
            os.replace(tmp, out)
        cwasm = ensure_compiled(out, _sha256_file(out), f"side-{Path(name).stem}-{variant}"[:60], root=root,
                                progress=progress)
        mod = load_module(cwasm)
        _modules[key] = mod
        return mod, sha
