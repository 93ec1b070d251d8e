"""Host functions defined on a linker through wasmtime's *unchecked* C API.

``wasmtime.Linker.define_func`` wraps every call of a host function in wasmtime-py's generic
trampoline: it builds a ``Caller``, converts each argument with ``Val._from_raw`` and the result
with ``Val._convert_to_raw`` and re-reads value types on each call (measured: ~60 µs of a
guest -> host call on a loaded machine, 4x the host function's own body). Our host functions
take and return only numbers (and null references), so :func:`define_raw` registers them with
``wasmtime_linker_define_func_unchecked`` instead: the callback receives the raw
``wasmtime_val_raw_t`` array (arguments in, results out, in place) and reads each argument from
the union field of its type.

Errors behave as with wasmtime-py: the exception is kept in ``wasmtime._func.LAST_EXCEPTION``
(what ``maybe_raise_last_exn`` re-raises) and a trap is returned, which ends the wasm call.
Source of the callback contract: wasmtime's ``wasmtime/func.h``
(``wasmtime_func_unchecked_callback_t``) and ``wasmtime/linker.h``.
"""
from __future__ import annotations

import ctypes
from typing import Any, Callable

import wasmtime
import wasmtime._func as _wfunc
from wasmtime import _bindings as B

_FIELDS = {
    "i32": "i32", "i64": "i64", "f32": "f32", "f64": "f64",
    # references: only null crosses (the JS-bridge imports; no JavaScript values exist here).
    # A reference argument reaches the Python function as None; a reference result must be
    # None and is written as the raw null (0: wasmtime's ``wasmtime_val_raw_t`` GC reference
    # index, or a null pointer)
    "anyref": "anyref", "externref": "externref",
}
_REFS = ("anyref", "externref")
_TRAP_MSG = b"python exception"
#: callbacks must stay alive as long as the linker (they are called from C)
_KEEP: list[Any] = []


def _field(vt: wasmtime.ValType) -> str:
    name = str(vt)
    if name not in _FIELDS:
        raise TypeError(f"raw host functions take numbers only, not {name}")
    return _FIELDS[name]


def _trap() -> int:
    t = B.wasmtime_trap_new(ctypes.create_string_buffer(_TRAP_MSG), len(_TRAP_MSG))
    return ctypes.cast(t, ctypes.c_void_p).value or 0


def _callback(fn: Callable[..., Any], params: list[str], result: str | None):
    n = len(params)
    all_i32 = all(p == "i32" for p in params)

    if all_i32 and n <= 4:
        # the common shapes, unrolled (no per-call list building)
        if n == 0:
            def call(vals):
                return fn()
        elif n == 1:
            def call(vals):
                return fn(vals[0].i32)
        elif n == 2:
            def call(vals):
                return fn(vals[0].i32, vals[1].i32)
        elif n == 3:
            def call(vals):
                return fn(vals[0].i32, vals[1].i32, vals[2].i32)
        else:
            def call(vals):
                return fn(vals[0].i32, vals[1].i32, vals[2].i32, vals[3].i32)
    else:
        fields = list(params)

        def call(vals):
            return fn(*[None if f in _REFS else getattr(vals[i], f)
                        for i, f in enumerate(fields)])

    ref_result = result in _REFS

    def raw(env, caller, vals, nvals):
        try:
            r = call(vals)
            if ref_result:
                if r is not None:
                    raise TypeError(f"a host function returning {result} can only return "
                                    f"None (null), not {type(r).__name__}")
                setattr(vals[0], result, 0)
            elif result is not None:
                setattr(vals[0], result, r)
            return 0
        except BaseException as e:  # noqa: BLE001 - handed to the wasm caller as a trap
            _wfunc.LAST_EXCEPTION = e
            return _trap()

    return B.wasmtime_func_unchecked_callback_t(raw)


_no_finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(0)


def define_raw(linker: wasmtime.Linker, module: str, name: str, ty: wasmtime.FuncType,
               fn: Callable[..., Any]) -> None:
    """Define ``module.name`` of type ``ty`` on ``linker`` as ``fn(*numbers) -> number|None``
    (at most one result; ``anyref``/``externref`` arguments arrive as None, such a result must
    be None: null). Raises ``TypeError`` for other types and
    ``wasmtime.WasmtimeError`` if the linker refuses the definition."""
    params = [_field(p) for p in ty.params]
    results = [_field(r) for r in ty.results]
    if len(results) > 1:
        raise TypeError(f"{module}.{name}: more than one result")
    cb = _callback(fn, params, results[0] if results else None)
    _KEEP.append(cb)
    mb, nb = module.encode(), name.encode()
    err = B.wasmtime_linker_define_func_unchecked(
        linker.ptr(), ctypes.create_string_buffer(mb), len(mb),
        ctypes.create_string_buffer(nb), len(nb), ty.ptr(), cb, None, _no_finalizer)
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)


__all__ = ["define_raw"]
