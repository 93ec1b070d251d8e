"""CPython's Emscripten call trampolines, as small native wasm modules.

CPython on Emscripten calls C functions through a trampoline that tolerates callers passing more
arguments than the callee declares (``Python/emscripten_trampoline.c``). In the browser the glue
supplies it as a tiny wasm module that tests the callee's type with ``ref.test`` (wasm GC) and
calls it with the right arity; without it every such call would go through the host (~11 µs).
These are our own WAT sources with the same contract as the glue's modules:

- ``trampoline_call(success_ptr, func, a1, a2, a3) -> i32`` (CPython 3.14, Pyodide 314): stores
  1 at ``success_ptr`` and calls ``func`` with 3, 2, 1 or 0 of the arguments according to its
  type; stores 0 when no arity matches. Its table index is written at
  ``_PyRuntime + *_PyEM_EMSCRIPTEN_TRAMPOLINE_OFFSET``.
- ``count_args(func) -> i32`` (CPython 3.13, Pyodide 0.29): the callee's arity (0..3) or -1;
  its table index goes to ``_PyRuntime + *_PyEM_EMSCRIPTEN_COUNT_ARGS_OFFSET``.
"""
from __future__ import annotations

import functools

import wasmtime

from pyworkers.runtime.engine import get_engine

_TYPES = """
  (type $f3 (func (param i32 i32 i32) (result i32)))
  (type $f2 (func (param i32 i32) (result i32)))
  (type $f1 (func (param i32) (result i32)))
  (type $f0 (func (result i32)))
"""

TRAMPOLINE_CALL_WAT = f"""
(module
  {_TYPES}
  (import "env" "memory" (memory 0))
  (import "env" "__indirect_function_table" (table 0 funcref))
  (func (export "trampoline_call")
        (param $ok i32) (param $f i32) (param $a i32) (param $b i32) (param $c i32) (result i32)
    (i32.store (local.get $ok) (i32.const 1))
    (if (ref.test (ref $f3) (table.get (local.get $f)))
      (then (return (call_indirect (type $f3) (local.get $a) (local.get $b) (local.get $c) (local.get $f)))))
    (if (ref.test (ref $f2) (table.get (local.get $f)))
      (then (return (call_indirect (type $f2) (local.get $a) (local.get $b) (local.get $f)))))
    (if (ref.test (ref $f1) (table.get (local.get $f)))
      (then (return (call_indirect (type $f1) (local.get $a) (local.get $f)))))
    (if (ref.test (ref $f0) (table.get (local.get $f)))
      (then (return (call_indirect (type $f0) (local.get $f)))))
    (i32.store (local.get $ok) (i32.const 0))
    (i32.const 0)))
"""

COUNT_ARGS_WAT = f"""
(module
  {_TYPES}
  (import "e" "t" (table 0 funcref))
  (func (export "f") (param $f i32) (result i32)
    (local $r funcref)
    (local.set $r (table.get (local.get $f)))
    (if (ref.test (ref $f3) (local.get $r)) (then (return (i32.const 3))))
    (if (ref.test (ref $f2) (local.get $r)) (then (return (i32.const 2))))
    (if (ref.test (ref $f1) (local.get $r)) (then (return (i32.const 1))))
    (if (ref.test (ref $f0) (local.get $r)) (then (return (i32.const 0))))
    (i32.const -1)))
"""


@functools.cache
def trampoline_call_module() -> wasmtime.Module:
    """Compiled ``trampoline_call`` module (imports ``env.memory``, ``env.__indirect_function_table``)."""
    return wasmtime.Module(get_engine(), TRAMPOLINE_CALL_WAT)


@functools.cache
def count_args_module() -> wasmtime.Module:
    """Compiled ``count_args`` module (imports ``e.t``, the function table)."""
    return wasmtime.Module(get_engine(), COUNT_ARGS_WAT)
