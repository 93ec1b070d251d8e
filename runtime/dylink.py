"""Dynamic linking of side modules (C extensions in wheels: ``*.so`` wasm files with ``dylink.0``).

This mirrors Emscripten's ``libdylink.js`` (``loadWebAssemblyModule``, ``getDylinkMetadata``,
``updateGOT``, ``reportUndefinedSymbols``, ``dlopenInternal``, ``_dlsym_js``) as shipped in each
release's glue, in Python:

1. ``dlopen`` in the guest's libc allocates a ``struct dso`` and calls the ``_dlopen_js(handle)``
   import; the file name is at ``handle + 36`` and the flags at ``handle + 4``.
2. The ``dylink.0`` custom section (first section) gives memory size/alignment, table
   size/alignment, needed libraries and weak imports.
3. Memory is allocated with the guest's ``calloc`` and aligned (the *memory base*); the function
   table grows by the module's table size at its current length (the *table base*). Both are
   written into the dso handle (``+8`` allocated flag, ``+12`` mem addr, ``+16`` mem size,
   ``+20`` table addr, ``+24`` table size).
4. Imports: ``env.memory``/``env.__indirect_function_table``/``env.__stack_pointer`` and the
   exception tags are the main module's; ``env.__memory_base``/``__table_base`` are new constant
   globals; ``env.*`` functions are the host's implementation where pyworkers has one, else the
   main module's (or an already loaded library's) export of that name, so calls stay native;
   ``GOT.mem``/``GOT.func`` are entries of one global offset table per isolate (mutable i32
   globals, ``-1`` until resolved).
5. After instantiation: exports are relocated (data addresses + memory base), unresolved GOT
   entries are filled from this module's exports, then from the main module's (functions get a
   new table slot, ``addFunction``), weak ones default to 0, a missing required one fails the
   load; then ``__wasm_apply_data_relocs`` and ``__wasm_call_ctors`` run.

Only files of the read-only layers are loaded (:meth:`DynamicLinker._read`): a ``.so`` the guest
wrote to ``/tmp`` fails ``dlopen`` with a clear ``dlerror`` and is never compiled or cached.
Side modules using legacy wasm exception handling are translated with binaryen at first load and
every compiled side module is cached (``.cwasm``) by content hash. :attr:`DynamicLinker.loaded`
records each library in load order with its memory base, table base and hash (what a snapshot
needs to re-create the same layout). Reading a side module's ``dylink.0`` section and compiling
it (steps 2 and the translation/cache) is :mod:`~pyworkers.runtime.sidemodule`; this module
re-exports its names.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
from typing import TYPE_CHECKING, Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import get_extern_ptr
from wasmtime._func import enter_wasm

from pyworkers.runtime import host as H
from pyworkers.runtime import vfs as V
from pyworkers.runtime import wasmbin
from pyworkers.runtime.sidemodule import (SIDE_VARIANT_VERSION, DylinkError,  # noqa: F401
                                          DylinkMetadata, compile_side_module, read_dylink)

if TYPE_CHECKING:  # pragma: no cover
    from pyworkers.runtime.isolate import Isolate

RTLD_GLOBAL = 256
RTLD_NODELETE = 4096

# Emscripten's isInternalSym: exports that never enter the GOT.
INTERNAL_SYMBOLS = {
    "__cpp_exception", "__c_longjmp", "__wasm_apply_data_relocs", "__dso_handle", "__tls_size",
    "__tls_align", "__set_stack_limits", "_emscripten_tls_init", "__wasm_init_tls",
    "__wasm_call_ctors", "__start_em_asm", "__stop_em_asm", "__start_em_js", "__stop_em_js",
}


#: marks a function export of a library known only by name (import planning before loading)
FUNC_EXPORT = object()


@dataclasses.dataclass
class LoadedLibrary:
    """A side module loaded into an isolate (one entry per library, in load order)."""

    name: str
    sha256: str
    memory_base: int
    memory_size: int
    table_base: int
    table_size: int
    handles: list[int]
    exports: dict[str, Any]
    instance: wasmtime.Instance
    is_global: bool
    weak_imports: set[str] = dataclasses.field(default_factory=set)


class DynamicLinker:
    """Per-isolate dynamic linker state: the GOT, loaded libraries, dso handles."""

    def __init__(self, iso: "Isolate"):
        self.iso = iso
        self.got: dict[str, wasmtime.Global] = {}
        self.got_required: set[str] = set()
        self.loaded: list[LoadedLibrary] = []
        self.by_name: dict[str, LoadedLibrary] = {}
        self.by_handle: dict[int, LoadedLibrary] = {}
        self.func_slots: dict[tuple[int, str], int] = {}  # (0 main / i+1 library i, name) -> table index

    # -- glue entry points (host imports)
    def dlopen_js(self, handle: int) -> int:
        mem = self.iso.mem
        filename = mem.cstr(handle + 36)
        flags = mem.i32(handle + 4)
        try:
            self.load(filename, is_global=bool(flags & RTLD_GLOBAL), handle=handle)
            return handle
        except (DylinkError, H.FSError, wasmtime.WasmtimeError, OSError) as e:
            self._set_error(f"could not load dynamic lib: {filename}\n{e}")
            return 0

    def dlsym_js(self, handle: int, symbol: str, psymidx: int) -> int:
        if handle == 0 and handle not in self.by_handle:
            return self._dlsym_main(symbol)
        lib = self.by_handle.get(handle)
        if lib is None or symbol not in lib.exports:
            self._set_error(f'Tried to lookup unknown symbol "{symbol}" in dynamic lib: '
                            f'{lib.name if lib else handle}')
            return 0
        value = lib.exports[symbol]
        if isinstance(value, wasmtime.Func):
            idx = self._function_slot(self.loaded.index(lib) + 1, symbol, value)
            self.iso.mem.set_u32(psymidx, list(lib.exports).index(symbol))
            return idx
        return value

    def _dlsym_main(self, symbol: str) -> int:
        """``dlsym`` in the main module (handle 0, the glue's ``__main__`` DSO: what
        ``dlopen(NULL)`` / ``ctypes.CDLL(None)`` searches): a function gets a table slot, a data
        symbol gives its address."""
        try:
            value = self.iso._export(symbol)
        except KeyError:
            value = None
        if isinstance(value, wasmtime.Func):
            return self._function_slot(0, symbol, value)
        if isinstance(value, wasmtime.Global) and not symbol.startswith("__pyw_g"):
            return self.iso.data_address(symbol)
        self._set_error(f'Tried to lookup unknown symbol "{symbol}" in dynamic lib: __main__')
        return 0

    def _set_error(self, msg: str) -> None:
        b = msg.encode()[:4000] + b"\0"
        p = self.iso.malloc(len(b))
        self.iso.mem.write(p, b)
        try:
            self.iso._call("__dl_seterr", p, 0)
        finally:
            self.iso.free(p)

    # -- loading
    def _function_slot(self, owner: int, name: str, fn: wasmtime.Func) -> int:
        """Table index of function ``name`` of ``owner`` (0: main module, ``i + 1``: the i-th
        loaded library), adding it to the table on first use (``addFunction``)."""
        key = (owner, name)
        idx = self.func_slots.get(key)
        if idx is None:
            idx = self.iso._add_function(fn, ("main", name) if owner == 0 else ("lib", owner - 1, name))
            self.func_slots[key] = idx
        return idx

    def _read(self, path: str) -> bytes:
        """The bytes of side module ``path``, which must be a file of a read-only layer (the
        deployment's site-packages, app or runtime files): a file the guest wrote (``/tmp``) or
        made up is refused with :class:`DylinkError` before anything reaches the host's
        compiler or its cache."""
        fs = self.iso.fs
        node = fs.lookup(path)
        if not isinstance(node, V.HostFile):
            where = "was written by the app (in the writable /tmp)" if node.writable else "is not a layer file"
            raise DylinkError(f"{path}: refused: only side modules (.so) installed in the deployment's "
                              f"read-only layers can be loaded, this one {where}")
        of = fs.open(path, 0)
        try:
            size = fs.size_of(of.node)
            return fs.read(of, size)
        finally:
            fs.close(of)

    def _find(self, needed: str, parent: str, md: DylinkMetadata) -> str:
        if "/" in needed:
            return needed
        dirs = [os.path.dirname(parent)] + [p.replace("$ORIGIN", os.path.dirname(parent)) for p in md.runtime_paths]
        dirs += self.iso.host.environ.get("LD_LIBRARY_PATH", "").split(":") + ["/lib", "/usr/lib"]
        for d in dirs:
            if not d:
                continue
            cand = d.rstrip("/") + "/" + needed
            try:
                self.iso.fs.lookup(cand)
                return cand
            except H.FSError:
                continue
        return needed

    def load(self, path: str, *, is_global: bool = True, handle: int | None = None) -> LoadedLibrary:
        """Load side module ``path`` (a guest path) and its needed libraries.

        Raises :class:`DylinkError` for a malformed module or an undefined required symbol.
        """
        path = self.iso.fs.abspath(path)
        lib = self.by_name.get(path)
        if lib is not None:
            if handle:
                lib.handles.append(handle)
                self.by_handle[handle] = lib
            lib.is_global = lib.is_global or is_global
            return lib
        data = self._read(path)
        md = read_dylink(data)
        for needed in md.needed:
            self.load(self._find(needed, path, md), is_global=is_global)
        module, sha = compile_side_module(data, name=os.path.basename(path))
        return self._instantiate(path, module, sha, md, is_global, handle)

    def _main_export(self, name: str) -> Any | None:
        try:
            return self.iso._export(name)
        except KeyError:
            return None

    def _resolve_function(self, name: str) -> wasmtime.Func | None:
        ex = self._main_export(name)
        if isinstance(ex, wasmtime.Func):
            return ex
        for lib in self.loaded:
            v = lib.exports.get(name)
            if lib.is_global and isinstance(v, wasmtime.Func):
                return v
        return None

    def _got_entry(self, name: str, weak: bool, value: int = -1) -> wasmtime.Global:
        g = self.got.get(name)
        if g is None:
            g = _mut_i32(self.iso.store, value)
            self.got[name] = g
        if not weak:
            self.got_required.add(name)
        return g

    def _instantiate(self, path: str, module: wasmtime.Module, sha: str, md: DylinkMetadata,
                     is_global: bool, handle: int | None) -> LoadedLibrary:
        iso, mem, store = self.iso, self.iso.mem, self.iso.store
        align = 1 << md.memory_align
        memory_base = 0
        if md.memory_size:
            raw = iso._call("calloc", md.memory_size + align, 1)
            if not raw:
                raise DylinkError(f"{path}: out of memory allocating {md.memory_size} bytes")
            memory_base = (raw + align - 1) // align * align
        table_base = iso.table.size(store) if md.table_size else 0
        if handle:
            mem.pack("<BxxxIiIi", handle + 8, 1, memory_base, md.memory_size, table_base, md.table_size)
        if md.table_size:
            iso.table.grow(store, md.table_size, None)
        instance = self.instantiate_planned(module, self.plan(module, path, md.weak_imports), path,
                                            memory_base, table_base)
        exports = self.relocated_exports(instance, store, memory_base)
        lib = LoadedLibrary(path, sha, memory_base, md.memory_size, table_base, md.table_size,
                            [handle] if handle else [], exports, instance, is_global)
        lib.weak_imports = md.weak_imports
        lib_id = len(self.loaded) + 1
        # updateGOT: fill unresolved entries from this module's exports
        for name, value in exports.items():
            if name in INTERNAL_SYMBOLS or name.startswith("__em_js__"):
                continue
            g = self.got.get(name)
            if g is None or g.value(store) != -1:
                continue
            if isinstance(value, wasmtime.Func):
                g.set_value(store, wasmtime.Val.i32(self._function_slot(lib_id, name, value)))
            elif isinstance(value, int):
                g.set_value(store, wasmtime.Val.i32(_i32(value)))
        self._report_undefined(path)
        self.loaded.append(lib)
        self.by_name[path] = lib
        if handle:
            self.by_handle[handle] = lib
        relocs = exports.get("__wasm_apply_data_relocs")
        if isinstance(relocs, wasmtime.Func):
            relocs(store)
        ctors = exports.get("__wasm_call_ctors")
        if isinstance(ctors, wasmtime.Func):
            ctors(store)
        return lib

    def plan(self, module: wasmtime.Module, path: str, weak_imports: set[str]) -> list[tuple]:
        """Decide once how each import of ``module`` resolves (step 4 above), against the main
        module and the libraries loaded so far. Entries: ``("got", name, weak)``,
        ``("memory",)``, ``("table",)``, ``("memory_base",)``, ``("table_base",)``,
        ``("main", name)``, ``("host", module, name)``, ``("lib", index, name)``,
        ``("missing", name, FuncType)``."""
        main = self.iso.runtime.export_names
        out: list[tuple] = []
        for im in module.imports:
            mod_name, name = im.module, im.name
            if mod_name in ("GOT.mem", "GOT.func"):
                out.append(("got", name, name in weak_imports))
            elif name == "memory":
                out.append(("memory",))
            elif name == "__indirect_function_table":
                out.append(("table",))
            elif name in ("__memory_base", "__table_base"):
                out.append((name.strip("_"),))
            else:
                ty = im.type
                if isinstance(ty, (wasmtime.GlobalType, wasmtime.TagType)):
                    if name not in main:
                        raise DylinkError(f"{path}: cannot resolve imported {mod_name}.{name}")
                    out.append(("main", name))
                elif isinstance(ty, wasmtime.FuncType):
                    if H.implemented(name) is not None:
                        out.append(("host", mod_name, name))
                    elif main.get(name) == wasmbin.KIND_FUNC:
                        out.append(("main", name))
                    else:
                        for i, lib in enumerate(self.loaded):
                            v = lib.exports.get(name)
                            if lib.is_global and (isinstance(v, wasmtime.Func) or v is FUNC_EXPORT):
                                out.append(("lib", i, name))
                                break
                        else:
                            out.append(("missing", name, ty))
                else:
                    raise DylinkError(f"{path}: unsupported import {mod_name}.{name}")
        return out

    def instantiate_planned(self, module: wasmtime.Module, plan: list[tuple], path: str,
                            memory_base: int, table_base: int) -> wasmtime.Instance:
        """Instantiate ``module`` with the imports ``plan`` describes, through the C API
        directly (no Python wrapper per import: a side module like pydantic_core has ~170)."""
        iso, store = self.iso, self.iso.store
        ctx = store._context()
        inst_ref = ctypes.byref(iso.instance._instance)
        linker_ptr = iso.runtime.linker.ptr()
        arr = (ffi.wasmtime_extern_t * len(plan))()
        byref, got_entry = ctypes.byref, self._got_entry
        # the main module's exports by name through a void*-typed prototype of the same C
        # function: half the ctypes cost per call (a plan has ~170 of them)
        ctx_addr = ctypes.cast(ctx, ctypes.c_void_p).value
        inst_addr = ctypes.addressof(iso.instance._instance)
        base, size = ctypes.addressof(arr), ctypes.sizeof(ffi.wasmtime_extern_t)
        for i, entry in enumerate(plan):
            kind = entry[0]
            slot = arr[i]
            if kind == "main":
                b = _encoded(entry[1])
                if not _export_get(ctx_addr, inst_addr, b, len(b), base + i * size):
                    raise DylinkError(f"{path}: main module does not export {entry[1]}")
            elif kind == "got":  # the extern written in place (get_extern_ptr costs ~3x more)
                slot.kind = _EXTERN_GLOBAL
                slot.of.global_ = got_entry(entry[1], entry[2])._global
            elif kind == "host":
                m, n = _encoded(entry[1]), _encoded(entry[2])
                if not ffi.wasmtime_linker_get(linker_ptr, ctx, m, len(m), n, len(n), byref(slot)):
                    raise DylinkError(f"{path}: host function {entry[2]} not defined")
            elif kind == "memory_base" or kind == "table_base":
                arr[i] = get_extern_ptr(_const_i32(store, memory_base if kind == "memory_base" else table_base))
            elif kind == "memory":
                arr[i] = get_extern_ptr(iso.memory)
            elif kind == "table":
                arr[i] = get_extern_ptr(iso.table)
            elif kind == "lib":
                arr[i] = get_extern_ptr(self.loaded[entry[1]].exports[entry[2]])
            else:  # missing
                arr[i] = get_extern_ptr(wasmtime.Func(store, entry[2], _missing_symbol(entry[1], path)))
        raw = ffi.wasmtime_instance_t()
        with enter_wasm(store) as trap:
            error = ffi.wasmtime_instance_new(ctx, module.ptr(), arr, len(plan), ctypes.byref(raw), trap)
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        return wasmtime.Instance._from_raw(raw)

    @staticmethod
    def relocated_exports(instance: wasmtime.Instance, store, memory_base: int) -> dict[str, Any]:
        """Exports with data addresses relocated by ``memory_base`` (``relocateExports``)."""
        exports: dict[str, Any] = {}
        for name, ex in instance.exports(store).items():
            if isinstance(ex, wasmtime.Global) and not ex.type(store).mutable:
                exports[name] = ex.value(store) + memory_base
            else:
                exports[name] = ex
        return exports

    def _report_undefined(self, path: str) -> None:
        store = self.iso.store
        for name, g in self.got.items():
            if g.value(store) != -1:
                continue
            value = self._main_export(name)
            if isinstance(value, wasmtime.Func):
                g.set_value(store, wasmtime.Val.i32(self._function_slot(0, name, value)))
                continue
            if isinstance(value, wasmtime.Global):
                g.set_value(store, wasmtime.Val.i32(_i32(value.value(store) + self.iso.runtime.memory_base)))
                continue
            found = False
            for lib in self.loaded:
                v = lib.exports.get(name)
                if v is None or not lib.is_global:
                    continue
                if isinstance(v, wasmtime.Func):
                    g.set_value(store, wasmtime.Val.i32(self._function_slot(self.loaded.index(lib) + 1, name, v)))
                else:
                    g.set_value(store, wasmtime.Val.i32(_i32(v)))
                found = True
                break
            if found:
                continue
            if name not in self.got_required:
                g.set_value(store, wasmtime.Val.i32(0))
                continue
            raise DylinkError(f"{path}: undefined symbol '{name}'")


_EXTERN_GLOBAL = ffi.WASMTIME_EXTERN_GLOBAL.value
#: ``wasmtime_instance_export_get(context, instance, name, name_len, out)`` with untyped
#: pointers (the C API's signature, wasmtime.h)
_export_get = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                               ctypes.c_size_t, ctypes.c_void_p)(("wasmtime_instance_export_get", ffi.dll))
_encoded_names: dict[str, bytes] = {}


def _encoded(name: str) -> bytes:
    """``name`` as UTF-8, memoised (import plans repeat the same few hundred names)."""
    b = _encoded_names.get(name)
    if b is None:
        b = _encoded_names[name] = name.encode()
    return b


_MUT_I32 = wasmtime.GlobalType(wasmtime.ValType.i32(), True)
_CONST_I32 = wasmtime.GlobalType(wasmtime.ValType.i32(), False)


def _new_global(store, ty: wasmtime.GlobalType, value: int) -> wasmtime.Global:
    """A global holding i32 ``value`` (straight through the C API: ~10x cheaper than
    ``wasmtime.Global(...)``, which matters when restoring a few hundred GOT entries)."""
    val = ffi.wasmtime_val_t()
    val.kind = ffi.WASMTIME_I32.value
    val.of.i32 = _i32(value)
    out = ffi.wasmtime_global_t()
    error = ffi.wasmtime_global_new(store._context(), ty.ptr(), ctypes.byref(val), ctypes.byref(out))
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    return wasmtime.Global._from_raw(out)


def _mut_i32(store, value: int) -> wasmtime.Global:
    return _new_global(store, _MUT_I32, value)


def _const_i32(store, value: int) -> wasmtime.Global:
    return _new_global(store, _CONST_I32, value)


def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _missing_symbol(name: str, path: str):
    def call(*args):
        raise DylinkError(f"Dynamic linking error: cannot resolve symbol {name} (needed by {path})")

    return call
