"""Host -> guest calls through CPython's C API: :class:`I32Call`, the fast call of an exported
i32-only C function, and :func:`parse_reply`, which reads the guest helper's reply to a request
(the ``repr`` of a dict of literals)."""
from __future__ import annotations

import ast
import ctypes
from typing import TYPE_CHECKING

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._func import enter_wasm

if TYPE_CHECKING:  # pragma: no cover
    from pyworkers.runtime.isolate import Isolate


class I32Call:
    """A host -> guest call of a C function taking and returning only i32s, straight through
    ``wasmtime_func_call`` with preallocated value buffers.

    ``wasmtime.Func.__call__`` re-reads the function type and converts every value on each
    call (~11 µs); the C API calls a request makes (malloc, PyBytes_*, PyObject_CallObject, ...)
    all have i32-only signatures, so they can skip that (~2 µs). Traps and host exceptions are
    raised exactly as wasmtime-py raises them. Raises ``TypeError`` at construction when export
    ``name`` is not i32-only (at most one result), and when called with the wrong number of
    arguments; the result is read as unsigned (``0 .. 2**32-1``) or is ``None``.
    """

    __slots__ = ("ctx", "func", "params", "results", "nparams", "nresults", "store")

    def __init__(self, iso: "Isolate", name: str):
        func = iso._export(name)
        sig = iso.runtime.i32_signatures.get(name)
        if sig is None:  # checked once per runtime: the type does not depend on the store
            ty = func.type(iso.store)
            if any(str(t) != "i32" for t in (*ty.params, *ty.results)) or len(ty.results) > 1:
                raise TypeError(f"{name} is not an i32-only function")
            sig = iso.runtime.i32_signatures[name] = (len(ty.params), len(ty.results))
        self.store = iso.store
        self.ctx = iso.store._context()
        self.func = ctypes.byref(func._func)
        self.nparams, self.nresults = sig
        self.params = (ffi.wasmtime_val_t * max(1, self.nparams))()
        for i in range(self.nparams):
            self.params[i].kind = ffi.WASMTIME_I32.value
        self.results = (ffi.wasmtime_val_t * max(1, self.nresults))()

    def __call__(self, *args: int) -> int | None:
        if len(args) != self.nparams:
            raise TypeError(f"expected {self.nparams} arguments, got {len(args)}")
        params = self.params
        for i, a in enumerate(args):
            params[i].of.i32 = a
        with enter_wasm(self.store) as trap:
            error = ffi.wasmtime_func_call(self.ctx, self.func, params, self.nparams, self.results,
                                           self.nresults, trap)
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        if self.nresults:
            # results are pointers, sizes or counts: read them as unsigned (a pointer above
            # 2 GiB would otherwise come back negative)
            return self.results[0].of.i32 & 0xFFFFFFFF
        return None


#: parsed replies of the guest by their exact bytes, for short replies made only of scalars
#: (``{'ok': True}``, ``{'ok': True, 'value': None}``, ...): ``ast.literal_eval`` compiles its
#: input (~10 µs); a hit returns a new dict with the same immutable values
_REPLY_CACHE: dict[bytes, dict] = {}
_REPLY_CACHE_MAX = 256
_SCALARS = (str, int, float, bool, bytes, type(None))


def parse_reply(data: bytes) -> dict:
    """The guest's reply (``repr`` of a dict of literals) as a dict; raises ``ValueError``,
    ``SyntaxError``, ``MemoryError`` or ``RecursionError`` for a malformed one."""
    hit = _REPLY_CACHE.get(data)
    if hit is not None:
        return dict(hit)
    reply = ast.literal_eval(data.decode("utf-8", "surrogatepass"))
    if not isinstance(reply, dict):
        raise ValueError("reply is not a dict")
    if len(data) <= 160 and len(_REPLY_CACHE) < _REPLY_CACHE_MAX \
            and all(type(k) is str and type(v) in _SCALARS for k, v in reply.items()):
        _REPLY_CACHE[data] = dict(reply)
    return reply
