"""libffi's Emscripten port on the host: what ``ctypes`` needs to call C and to be called back.

Pyodide's CPython links libffi's wasm32/Emscripten port (libffi ``src/wasm32/ffi.c``), whose
heavy lifting is JavaScript the glue supplies as four imports; pyworkers implements them here
with the same contract as the 314.0.7 glue (``pyodide.asm.mjs``: ``ffi_call_js``,
``ffi_closure_alloc_js``, ``ffi_closure_free_js``, ``ffi_prep_closure_loc_js`` and
``unbox_small_structs``):

- :func:`call` (``ffi_call_js(cif, fn, rvalue, avalue)``): reads the ``ffi_cif``, converts every
  argument from its ``avalue[i]`` slot to a wasm value (structs copied onto the guest stack and
  passed by pointer, variadic arguments laid out on the guest stack and passed as one trailing
  pointer, ``long double`` as two i64), calls table entry ``fn`` and stores the result at
  ``rvalue`` (widened to a full ``ffi_arg`` for small integers, as libffi's contract asks).
- Closures (``ffi_closure_alloc``/``ffi_prep_closure_loc``, used by ``ctypes.CFUNCTYPE``): the
  glue makes a JavaScript trampoline per closure and converts it to a wasm function with the
  closure's signature. Here each closure gets a tiny **native** wasm function generated from the
  cif's layout (:func:`closure_wat`): it allocates ``ret``/``args`` on the guest stack exactly as
  the glue's trampoline does, then ``call_indirect``\\ s libffi's C handler
  ``closure->fun(closure->cif, ret, args, closure->user_data)`` (type ``viiii``) and returns the
  value at ``ret``. The module is compiled once per layout per process (:func:`closure_module`)
  and instantiated with the closure's address in an imported mutable global; a freed closure's
  instance is reused for the next closure of that layout (a store allows at most 10,000
  instances, so one per closure ever created would end the isolate); a callback from C
  (``qsort`` calling a Python comparator) never crosses into the host.

Table slots: closures take a free slot (freed closures' slots are reused, like the glue's
``freeTableIndexes``) or grow the table by one. Every slot is recorded in
``Isolate.table_log`` with origin ``("ffi_closure", closure_address, layout)`` (``layout`` is
``None`` until prepared) or ``("ffi_free",)``; a snapshot therefore records every closure and
:func:`restore_slot` re-creates it in a restored isolate (see ``snapshot/restore.py``).

Layout of the C structures (wasm32, libffi 3.4/3.5): ``ffi_cif`` = abi u32 @0, nargs u32 @4,
arg_types ptr @8, rtype ptr @12, bytes @16, flags @20, nfixedargs u32 @24; ``ffi_type`` = size
u32 @0, alignment u16 @4, type u16 @6, elements ptr @8; ``ffi_closure`` = wrapper table index
@0, cif @4, fun @8, user_data @12.

Unsupported (as in the glue): ``complex`` types (libffi's ``ffi_prep_cif`` already refuses them,
so ctypes raises ``TypeError``/``ArgumentError`` in the guest); a layout that cannot be expressed
makes ``ffi_prep_closure_loc`` return ``FFI_BAD_TYPEDEF`` (ctypes raises in the guest). A call to
a null or ill-typed function pointer traps and ends the isolate, as it would crash a native
process.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Any

import wasmtime
from wasmtime import _ffi as _wffi
from wasmtime._func import enter_wasm

from pyworkers.runtime.engine import get_engine

# libffi type ids (ffi.h)
VOID, INT, FLOAT, DOUBLE, LONGDOUBLE, UINT8, SINT8, UINT16, SINT16 = range(9)
UINT32, SINT32, UINT64, SINT64, STRUCT, POINTER, COMPLEX = range(9, 16)
_INTLIKE = frozenset({INT, UINT8, SINT8, UINT16, SINT16, UINT32, SINT32, POINTER})
FFI_OK, FFI_BAD_TYPEDEF = 0, 1

#: origin tags in ``Isolate.table_log``
ORIGIN_CLOSURE = "ffi_closure"
ORIGIN_FREE = "ffi_free"


class FFIError(RuntimeError):
    """A libffi request the host cannot carry out (unexpected type id in a cif, call through a
    null table slot). Raised inside a host import, so the isolate's call traps."""


# ---------------------------------------------------------------------------- cif decoding
def _unbox(mem, type_ptr: int) -> tuple[int, int]:
    """``(type_ptr, type_id)`` with one-element structs replaced by their element and empty
    structs by void (the glue's ``unbox_small_structs``)."""
    type_id = mem.unpack("<H", type_ptr + 6)[0]
    while type_id == STRUCT:
        elements = mem.u32(type_ptr + 8)
        first = mem.u32(elements)
        if first == 0:
            return type_ptr, VOID
        if mem.u32(elements + 4) == 0:
            type_ptr = first
            type_id = mem.unpack("<H", first + 6)[0]
        else:
            break
    return type_ptr, type_id


def read_layout(mem, cif: int) -> tuple:
    """The call layout of ``cif``: ``(rtype_id, nfixedargs, ((type_id, size, align), ...))``
    after unboxing small structs; hashable, JSON-able, the cache key of closure modules."""
    nargs, arg_types = mem.u32(cif + 4), mem.u32(cif + 8)
    nfixed = mem.u32(cif + 24)
    _rp, rid = _unbox(mem, mem.u32(cif + 12))
    args = []
    for i in range(nargs):
        tp, tid = _unbox(mem, mem.u32(arg_types + 4 * i))
        size, align = mem.unpack("<IH", tp)
        args.append((tid, size, max(1, align)))
    return rid, nfixed, tuple(args)


def layout_from_json(obj: Any) -> tuple:
    """Inverse of JSON-encoding a :func:`read_layout` tuple (lists back to tuples)."""
    rid, nfixed, args = obj
    return int(rid), int(nfixed), tuple((int(t), int(s), int(a)) for t, s, a in args)


def wasm_signature(layout: tuple) -> tuple[list[str], list[str]]:
    """``(params, results)`` wasm value types of a closure with ``layout`` (the glue's ``sig``:
    ``v``/``vi`` (return by pointer)/``i``/``f``/``d``/``j``, then one type per fixed argument,
    plus an ``i32`` varargs pointer). Raises :class:`FFIError` for types it cannot express."""
    rid, nfixed, args = layout
    params: list[str] = []
    results: list[str] = []
    if rid == VOID:
        pass
    elif rid in (STRUCT, LONGDOUBLE):
        params.append("i32")
    elif rid in _INTLIKE:
        results.append("i32")
    elif rid == FLOAT:
        results.append("f32")
    elif rid == DOUBLE:
        results.append("f64")
    elif rid in (UINT64, SINT64):
        results.append("i64")
    else:
        raise FFIError(f"unsupported libffi return type id {rid}")
    for tid, _size, _align in args[:nfixed]:
        if tid in _INTLIKE or tid == STRUCT:
            params.append("i32")
        elif tid == FLOAT:
            params.append("f32")
        elif tid == DOUBLE:
            params.append("f64")
        elif tid == LONGDOUBLE:
            params += ["i64", "i64"]
        elif tid in (UINT64, SINT64):
            params.append("i64")
        else:
            raise FFIError(f"unsupported libffi argument type id {tid}")
    if nfixed < len(args):
        params.append("i32")
    return params, results


# ---------------------------------------------------------------------------- closures
def closure_wat(layout: tuple) -> str:
    """WAT of the closure trampoline for ``layout``: export ``f`` with the closure's wasm
    signature. Imports ``env.memory``, ``env.table``, ``env.sp_get`` (``emscripten_stack_get_current``),
    ``env.sp_set`` (``_emscripten_stack_restore``) and the mutable global ``env.closure``
    (the ``ffi_closure`` address; set by the host, so a trampoline can be reused). Stack layout mirrors the glue's JavaScript trampoline."""
    rid, nfixed, args = layout
    params, results = wasm_signature(layout)
    ret_by_arg = rid in (STRUCT, LONGDOUBLE)
    body: list[str] = []
    emit = body.append

    def alloc(size: int, align: int) -> None:
        emit(f"(local.set $cur (i32.and (i32.sub (local.get $cur) (i32.const {size})) (i32.const {-align})))")

    emit("(local.set $orig (call $sp_get))")
    emit("(local.set $cur (local.get $orig))")
    p = 0
    if ret_by_arg:
        emit("(local.set $ret (local.get 0))")
        p = 1
    else:
        alloc(8, 8)
        emit("(local.set $ret (local.get $cur))")
    emit(f"(local.set $cur (i32.sub (local.get $cur) (i32.const {4 * len(args)})))")
    emit("(local.set $args (local.get $cur))")
    for i, (tid, size, align) in enumerate(args[:nfixed]):
        slot = f"(i32.store offset={4 * i} (local.get $args) (local.get $cur))"
        if tid in (UINT8, SINT8):
            alloc(1, 4), emit(slot), emit(f"(i32.store8 (local.get $cur) (local.get {p}))")
        elif tid in (UINT16, SINT16):
            alloc(2, 4), emit(slot), emit(f"(i32.store16 (local.get $cur) (local.get {p}))")
        elif tid in (INT, UINT32, SINT32, POINTER):
            alloc(4, 4), emit(slot), emit(f"(i32.store (local.get $cur) (local.get {p}))")
        elif tid == STRUCT:
            alloc(size, align), emit(slot)
            emit(f"(memory.copy (local.get $cur) (local.get {p}) (i32.const {size}))")
        elif tid == FLOAT:
            alloc(4, 4), emit(slot), emit(f"(f32.store (local.get $cur) (local.get {p}))")
        elif tid == DOUBLE:
            alloc(8, 8), emit(slot), emit(f"(f64.store (local.get $cur) (local.get {p}))")
        elif tid in (UINT64, SINT64):
            alloc(8, 8), emit(slot), emit(f"(i64.store (local.get $cur) (local.get {p}))")
        elif tid == LONGDOUBLE:
            alloc(16, 8), emit(slot)
            emit(f"(i64.store (local.get $cur) (local.get {p}))")
            p += 1
            emit(f"(i64.store offset=8 (local.get $cur) (local.get {p}))")
        p += 1
    if nfixed < len(args):
        emit(f"(local.set $va (local.get {p}))")
        for i in range(nfixed, len(args)):
            tid, size, align = args[i]
            if tid == STRUCT:
                alloc(size, align)
                emit(f"(memory.copy (local.get $cur) (i32.load (local.get $va)) (i32.const {size}))")
                emit(f"(i32.store offset={4 * i} (local.get $args) (local.get $cur))")
            else:
                emit(f"(i32.store offset={4 * i} (local.get $args) (local.get $va))")
            emit("(local.set $va (i32.add (local.get $va) (i32.const 4)))")
    emit("(call $sp_set (i32.and (local.get $cur) (i32.const -16)))")
    emit("(call_indirect (type $handler) (i32.load offset=4 (global.get $closure)) (local.get $ret)"
         " (local.get $args) (i32.load offset=12 (global.get $closure))"
         " (i32.load offset=8 (global.get $closure)))")
    emit("(call $sp_set (local.get $orig))")
    if results:
        emit(f"({results[0]}.load (local.get $ret))")
    sig = "".join(f" (param {t})" for t in params) + "".join(f" (result {t})" for t in results)
    return (
        "(module\n"
        "  (type $handler (func (param i32 i32 i32 i32)))\n"
        '  (import "env" "memory" (memory 0))\n'
        '  (import "env" "table" (table 0 funcref))\n'
        '  (import "env" "sp_get" (func $sp_get (result i32)))\n'
        '  (import "env" "sp_set" (func $sp_set (param i32)))\n'
        '  (import "env" "closure" (global $closure (mut i32)))\n'
        f'  (func (export "f"){sig}\n'
        "    (local $orig i32) (local $cur i32) (local $ret i32) (local $args i32) (local $va i32)\n    "
        + "\n    ".join(body) + "))\n"
    )


@functools.lru_cache(maxsize=256)
def closure_module(layout: tuple) -> wasmtime.Module:
    """The compiled closure trampoline for ``layout`` (cached per process, keyed by layout)."""
    return wasmtime.Module(get_engine(), closure_wat(layout))


def _pools(host) -> tuple[dict, dict]:
    """Per host: ``{layout: [(func, global), ...]}`` trampolines free for reuse and
    ``{table slot: (layout, func, global)}`` the ones in use."""
    d = host.__dict__
    if "_ffi_pool" not in d:
        d["_ffi_pool"], d["_ffi_live"] = {}, {}
    return d["_ffi_pool"], d["_ffi_live"]


def _closure_func(iso, idx: int, closure: int, layout: tuple) -> wasmtime.Func:
    """A trampoline for ``closure`` at table slot ``idx``: a freed one of the same layout with
    its closure global re-pointed, else a new instance. Instances are never freed before their
    store and a store allows 10,000 of them, so they are pooled: the count stays at the peak
    number of closures alive at once, however many are created over time."""
    store = iso.store
    pool, live = _pools(iso.host)
    _release(iso.host, idx)
    value = wasmtime.Val.i32(closure - (1 << 32) if closure >= 1 << 31 else closure)
    free = pool.get(layout)
    if free:
        func, g = free.pop()
        g.set_value(store, value)
    else:
        g = wasmtime.Global(store, wasmtime.GlobalType(wasmtime.ValType.i32(), True), value)
        inst = wasmtime.Instance(store, closure_module(layout),
                                 [iso.memory, iso.table, iso._export("emscripten_stack_get_current"),
                                  iso._export("_emscripten_stack_restore"), g])
        func = inst.exports(store)["f"]
    live[idx] = (layout, func, g)
    return func


def _release(host, idx: int) -> None:
    pool, live = _pools(host)
    entry = live.pop(idx, None)
    if entry is not None:
        pool.setdefault(entry[0], []).append(entry[1:])


def _slots(iso) -> tuple[list, dict, list]:
    """``(table_log, {slot: position in it}, [free closure slots])``, built once per host from
    ``Isolate.table_log`` (which a snapshot restore provides; other code only appends to it)."""
    d = iso.host.__dict__
    st = d.get("_ffi_slots")
    if st is None or st[0] is not iso.table_log:
        log = iso.table_log
        st = d["_ffi_slots"] = (log, {i: k for k, (i, _o) in enumerate(log)},
                                [i for i, o in log if o[0] == ORIGIN_FREE])
    return st


def _log_slot(iso, idx: int, origin: tuple) -> None:
    """Record ``origin`` for table slot ``idx`` in ``Isolate.table_log`` (replacing its entry)."""
    iso.host.__dict__.get("_ffi_targets", {}).pop(idx, None)
    log, pos, free = _slots(iso)
    k = pos.get(idx)
    if k is None or k >= len(log) or log[k][0] != idx:
        pos[idx] = len(log)
        log.append((idx, origin))
    else:
        log[k] = (idx, origin)
    if origin[0] == ORIGIN_FREE:
        free.append(idx)


def closure_alloc(host, size: int, code: int) -> int:
    """``ffi_closure_alloc_js(size, code)``: malloc ``size`` bytes for the closure, reserve a
    table slot (a freed one first), store the slot index at ``*code`` and ``closure->wrapper``.
    Returns the closure address."""
    iso = host.isolate
    closure = iso.malloc(size)
    free = _slots(iso)[2]
    idx = free.pop() if free else iso.table.grow(iso.store, 1, None)
    _log_slot(iso, idx, (ORIGIN_CLOSURE, closure, None))
    host.mem.set_u32(code, idx)
    host.mem.set_u32(closure, idx)
    return closure


def closure_free(host, closure: int) -> None:
    """``ffi_closure_free_js(closure)``: empty the closure's table slot, keep it for reuse and
    free the closure memory."""
    iso = host.isolate
    idx = host.mem.u32(closure)
    iso.table.set(iso.store, idx, None)
    _release(host, idx)
    _log_slot(iso, idx, (ORIGIN_FREE,))
    iso.free(closure)


def prep_closure_loc(host, closure: int, cif: int, fun: int, user_data: int, codeloc: int) -> int:
    """``ffi_prep_closure_loc_js(closure, cif, fun, user_data, codeloc)``: put a function with
    the cif's signature at table slot ``codeloc`` and fill ``closure->cif/fun/user_data``.
    Returns ``FFI_OK`` or ``FFI_BAD_TYPEDEF`` (a layout that cannot be expressed)."""
    iso, mem = host.isolate, host.mem
    try:
        layout = read_layout(mem, cif)
        func = _closure_func(iso, codeloc, closure, layout)
    except FFIError:
        return FFI_BAD_TYPEDEF
    iso.table.set(iso.store, codeloc, func)
    _log_slot(iso, codeloc, (ORIGIN_CLOSURE, closure, [layout[0], layout[1], [list(a) for a in layout[2]]]))
    mem.set_u32(closure + 4, cif)
    mem.set_u32(closure + 8, fun)
    mem.set_u32(closure + 12, user_data)
    return FFI_OK


def restore_slot(iso, idx: int, origin: tuple) -> None:
    """Re-create table slot ``idx`` of a restored isolate from its snapshot ``origin``
    (``("ffi_closure", address, layout-or-None)`` or ``("ffi_free",)``); the closure structure
    itself is in the restored memory."""
    if origin[0] == ORIGIN_CLOSURE and origin[2] is not None:
        iso.table.set(iso.store, idx, _closure_func(iso, idx, int(origin[1]), layout_from_json(origin[2])))


# ---------------------------------------------------------------------------- calls
def _wrap(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


_KINDS = {"i32": _wffi.WASMTIME_I32.value, "i64": _wffi.WASMTIME_I64.value,
          "f32": _wffi.WASMTIME_F32.value, "f64": _wffi.WASMTIME_F64.value}


class _RawCall:
    """A table entry called through ``wasmtime_func_call`` with preallocated value buffers
    (like ``pyworkers.runtime.capi.I32Call``; ``Func.__call__`` re-reads the type and converts every value on
    each call). ``kinds``: the parameter kinds (``"i32"``, ``"i64"``, ``"f32"``, ``"f64"``)."""

    __slots__ = ("store", "ctx", "func", "ref", "kinds", "rkind", "params", "results", "n", "nres")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, fn: int):
        ty = func.type(store)
        self.kinds = tuple(str(t) for t in ty.params)
        rkinds = [str(t) for t in ty.results]
        bad = [k for k in (*self.kinds, *rkinds) if k not in _KINDS]
        if bad or len(rkinds) > 1:
            raise FFIError(f"ffi_call: function {fn} has the unsupported type {ty}")
        self.store, self.ctx, self.func = store, store._context(), func
        self.ref = ctypes.byref(func._func)
        self.rkind = rkinds[0] if rkinds else None
        self.n, self.nres = len(self.kinds), len(rkinds)
        self.params = (_wffi.wasmtime_val_t * max(1, self.n))()
        for i, k in enumerate(self.kinds):
            self.params[i].kind = _KINDS[k]
        self.results = (_wffi.wasmtime_val_t * 1)()

    def __call__(self, values: list) -> Any:
        params = self.params
        for i, k in enumerate(self.kinds):
            setattr(params[i].of, k, values[i])
        with enter_wasm(self.store) as trap:
            error = _wffi.wasmtime_func_call(self.ctx, self.ref, params, self.n, self.results, self.nres, trap)
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        return getattr(self.results[0].of, self.rkind) if self.rkind else None


def _target(host, fn: int) -> _RawCall:
    """A caller for table entry ``fn``, cached per host (slots this module changes are dropped
    from the cache in :func:`_log_slot`; other slots are only ever added)."""
    cache = host.__dict__.setdefault("_ffi_targets", {})
    hit = cache.get(fn)
    if hit is None:
        iso = host.isolate
        func = iso.table.get(iso.store, fn)
        if func is None:
            raise FFIError(f"ffi_call: call through null function pointer {fn}")
        hit = cache[fn] = _RawCall(iso.store, func, fn)
    return hit


def call(host, cif: int, fn: int, rvalue: int, avalue: int) -> None:
    """``ffi_call_js(cif, fn, rvalue, avalue)``: call table entry ``fn`` as described by
    ``cif`` (see the module docstring). Raises :class:`FFIError` for an unexpected type id or a
    null function pointer (the guest call traps)."""
    iso, mem = host.isolate, host.mem
    nargs, arg_types = mem.u32(cif + 4), mem.u32(cif + 8)
    nfixed = mem.u32(cif + 24)
    _rp, rid = _unbox(mem, mem.u32(cif + 12))
    if not 0 <= rid < COMPLEX:
        raise FFIError(f"ffi_call: unsupported return type id {rid}")
    orig = iso._call("emscripten_stack_get_current")
    cur = orig
    args: list[Any] = []
    ret_by_arg = rid in (LONGDOUBLE, STRUCT)
    if ret_by_arg:
        args.append(rvalue)
    for i in range(nfixed):
        aptr = mem.u32(avalue + 4 * i)
        tp, tid = _unbox(mem, mem.u32(arg_types + 4 * i))
        if tid in (INT, SINT32, UINT32, POINTER):
            args.append(mem.u32(aptr))
        elif tid == FLOAT:
            args.append(mem.unpack("<f", aptr)[0])
        elif tid == DOUBLE:
            args.append(mem.unpack("<d", aptr)[0])
        elif tid == UINT8:
            args.append(mem.unpack("<B", aptr)[0])
        elif tid == SINT8:
            args.append(mem.unpack("<b", aptr)[0])
        elif tid == UINT16:
            args.append(mem.unpack("<H", aptr)[0])
        elif tid == SINT16:
            args.append(mem.unpack("<h", aptr)[0])
        elif tid in (UINT64, SINT64):
            args.append(mem.unpack("<Q", aptr)[0])
        elif tid == LONGDOUBLE:
            args += list(mem.unpack("<QQ", aptr))
        elif tid == STRUCT:
            size, align = mem.unpack("<IH", tp)
            cur = (cur - size) & ~(max(1, align) - 1)
            mem.write(cur, mem.read(aptr, size))
            args.append(cur)
        else:
            raise FFIError(f"ffi_call: unsupported argument type id {tid}")
    if nfixed != nargs:
        structs = []
        for i in range(nargs - 1, nfixed - 1, -1):
            aptr = mem.u32(avalue + 4 * i)
            tp, tid = _unbox(mem, mem.u32(arg_types + 4 * i))
            if tid in (UINT8, SINT8):
                cur -= 1
                mem.write(cur, mem.read(aptr, 1))
            elif tid in (UINT16, SINT16):
                cur = (cur - 2) & ~1
                mem.write(cur, mem.read(aptr, 2))
            elif tid in (INT, UINT32, SINT32, POINTER, FLOAT):
                cur = (cur - 4) & ~3
                mem.write(cur, mem.read(aptr, 4))
            elif tid in (DOUBLE, UINT64, SINT64):
                cur = (cur - 8) & ~7
                mem.write(cur, mem.read(aptr, 8))
            elif tid == LONGDOUBLE:
                cur = (cur - 16) & ~7
                mem.write(cur, mem.read(aptr, 16))
            elif tid == STRUCT:
                cur = (cur - 4) & ~3
                size, align = mem.unpack("<IH", tp)
                structs.append((cur, aptr, size, max(1, align)))
            else:
                raise FFIError(f"ffi_call: unsupported variadic argument type id {tid}")
        args.append(cur)
        for target, aptr, size, align in structs:
            cur = (cur - size) & ~(align - 1)
            mem.write(cur, mem.read(aptr, size))
            mem.set_u32(target, cur)
    target = _target(host, fn)
    values = []
    for k, kind in enumerate(target.kinds):
        v = args[k] if k < len(args) else 0  # JavaScript passes undefined (0) for missing ones
        if kind == "i32":
            values.append(_wrap(int(v), 32))
        elif kind == "i64":
            values.append(_wrap(int(v), 64))
        else:
            values.append(float(v))
    moved = cur != orig or orig & 15
    if moved:
        iso._call("_emscripten_stack_restore", cur & ~15)
    try:
        result = target(values)
    finally:
        if moved:
            iso._call("_emscripten_stack_restore", orig)
    if ret_by_arg or rid == VOID:
        return
    if result is None:
        result = 0
    if rid in (INT, UINT32, SINT32, POINTER, UINT8, SINT8, UINT16, SINT16):
        v = int(result)
        if rid in (UINT8, SINT8):
            v = (v & 0xFF) if rid == UINT8 else _wrap(v, 8)
        elif rid in (UINT16, SINT16):
            v = (v & 0xFFFF) if rid == UINT16 else _wrap(v, 16)
        mem.set_u32(rvalue, v)  # widened to a full ffi_arg
    elif rid == FLOAT:
        mem.pack("<f", rvalue, float(result))
    elif rid == DOUBLE:
        mem.pack("<d", rvalue, float(result))
    elif rid in (UINT64, SINT64):
        mem.set_u64(rvalue, int(result))
    else:
        raise FFIError(f"ffi_call: unsupported return type id {rid}")


__all__ = ["FFIError", "call", "closure_alloc", "closure_free", "prep_closure_loc", "restore_slot",
           "read_layout", "wasm_signature", "closure_wat", "closure_module", "layout_from_json"]
