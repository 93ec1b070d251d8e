"""ctypes in the sandbox: libffi's Emscripten imports implemented by the host
(:mod:`pyworkers.runtime.ffi`), against the real 314.0.7 runtime."""
from __future__ import annotations

import pytest

from pyworkers.runtime import GuestError, Isolate
from pyworkers.snapshot import Restorer, take_snapshot

pytestmark = pytest.mark.slow

CALLS = r'''
import ctypes
libc = ctypes.CDLL(None)
print("strlen", libc.strlen(b"abc"))
arr = (ctypes.c_int * 8)(5, 1, 4, -2, 3, 0, 7, 6)
CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
calls = []
def cmp(a, b):
    calls.append(1)
    return a[0] - b[0]
libc.qsort(arr, len(arr), ctypes.sizeof(ctypes.c_int), CMP(cmp))
print("qsort", list(arr), len(calls) > 0)
libc.atof.restype = ctypes.c_double
print("atof", libc.atof(b"2.5"))
libc.llabs.restype = ctypes.c_longlong
libc.llabs.argtypes = [ctypes.c_longlong]
print("llabs", libc.llabs(-(1 << 40)))
libc.snprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p]
buf = ctypes.create_string_buffer(64)
n = libc.snprintf(buf, 64, b"%d-%s-%.2f-%lld", 42, b"x", ctypes.c_double(3.14159), ctypes.c_longlong(1 << 40))
print("snprintf", n, buf.value.decode())
class DIV(ctypes.Structure):
    _fields_ = [("quot", ctypes.c_int), ("rem", ctypes.c_int)]
libc.div.restype = DIV
d = libc.div(17, 5)
print("div", d.quot, d.rem)
class P(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]
F = ctypes.CFUNCTYPE(ctypes.c_double, P, ctypes.c_float, ctypes.c_longlong, ctypes.c_char)
f = F(lambda p, fl, ll, ch: p.x + p.y + fl + ll + ch[0])
print("callback", f(P(1, 2.5), 0.5, 1 << 33, b"\x02"))
S = ctypes.CFUNCTYPE(ctypes.c_short, ctypes.c_short, ctypes.c_ubyte)
print("short", S(lambda a, b: a * b)(-300, 2))
try:
    libc.no_such_function_here
except AttributeError as e:
    print("missing", "no_such_function_here" in str(e))
'''


@pytest.mark.parametrize("fixture", ["runtime_314", "runtime_029"])
def test_ctypes_calls_libc_and_python_callbacks(fixture, request):
    iso = Isolate(request.getfixturevalue(fixture))
    r = iso.run(CALLS)
    assert r.stdout.decode().splitlines() == [
        "strlen 3",
        "qsort [-2, 0, 1, 3, 4, 5, 6, 7] True",
        "atof 2.5",
        "llabs 1099511627776",
        "snprintf 23 42-x-3.14-1099511627776",
        "div 3 2",
        f"callback {1 + 2.5 + 0.5 + (1 << 33) + 2}",
        "short -600",
        "missing True",
    ]
    assert iso.eval("1 + 1") == "2"  # the isolate is alive


def test_closure_slots_are_reused_and_bad_calls_raise_in_the_guest(runtime_314):
    iso = Isolate(runtime_314)
    size0 = iso.table.size(iso.store)
    iso.run(r'''
import ctypes
F = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
G = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_double)
for i in range(300):
    assert F(lambda x, i=i: x + i)(1) == i + 1
    # a freed slot is reused by a closure of another signature
    assert G(lambda a, b, i=i: a * b + i)(1.5, 2.0) == 3.0 + i
# more closures over time than a store allows instances (10,000): trampolines are reused
for i in range(10500):
    F(lambda x: x)
''')
    # freed closures give their table slot back: 300 closures, a handful of slots
    assert iso.table.size(iso.store) - size0 < 10
    with pytest.raises(GuestError) as e:
        iso.run("import ctypes\nctypes.CDLL(None).strlen.argtypes = [ctypes.c_char_p]\n"
                "ctypes.CDLL(None).strlen(1.5)")
    assert "ArgumentError" in str(e.value)
    assert iso.eval("2 * 21") == "42"


def test_closures_survive_snapshot_and_restore(runtime_314, tmp_path):
    iso = Isolate(runtime_314)
    iso.run(r'''
import ctypes
libc = ctypes.CDLL(None)
CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
DESC = CMP(lambda a, b: b[0] - a[0])
DOUBLE = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)(lambda x: x * 2)
''')
    path = tmp_path / "ctypes.pyws"
    take_snapshot(iso, path, snapshot_type="dedicated")
    for copy in (False, True):
        restored = Restorer(path, expect_type="dedicated", copy=copy).new_isolate()
        r = restored.run(r'''
arr = (ctypes.c_int * 5)(3, 9, 1, 7, 5)
libc.qsort(arr, 5, ctypes.sizeof(ctypes.c_int), DESC)
print(list(arr), DOUBLE(1.25), libc.strlen(b"four"))
F = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
print(F(lambda x: -x)(5))
''')
        assert r.stdout.decode().split("\n")[:2] == ["[9, 7, 5, 3, 1] 2.5 4", "-5"]


def test_a_table_slot_of_unknown_origin_is_refused_at_restore(runtime_314, tmp_path):
    from pyworkers.snapshot import SnapshotError

    iso = Isolate(runtime_314)
    idx = iso.table.grow(iso.store, 1, None)
    iso.table_log.append((idx, ("made-up",)))
    path = tmp_path / "bogus.pyws"
    take_snapshot(iso, path, snapshot_type="dedicated")
    with pytest.raises(SnapshotError, match="unknown origin 'made-up'"):
        Restorer(path, expect_type="dedicated", copy=True).new_isolate()
