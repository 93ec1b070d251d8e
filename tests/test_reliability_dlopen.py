"""Reliability: only side modules from read-only layers are loaded (issue 17, item 3)."""
from __future__ import annotations

import ast
import hashlib
import os

import pytest

from pyworkers.runtime import Isolate
from pyworkers.runtime.install import cache_root


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _section(sid: int, body: bytes) -> bytes:
    return bytes([sid]) + _leb(len(body)) + body


def _name(s: str) -> bytes:
    return _leb(len(s)) + s.encode()


def side_module(tag: bytes) -> bytes:
    """The smallest valid side module: a ``dylink.0`` section (no memory, no table) and a
    custom section carrying ``tag`` (so each test's module has its own hash)."""
    mem_info = bytes([1]) + _leb(4) + bytes(4)  # WASM_DYLINK_MEM_INFO: 0, 0, 0, 0
    return (b"\0asm\1\0\0\0" + _section(0, _name("dylink.0") + mem_info)
            + _section(0, _name("pyworkers-test") + tag))


def _cached_names() -> set[str]:
    d = cache_root(None) / "sidemodules"
    return set(os.listdir(d)) if d.is_dir() else set()


@pytest.mark.slow
def test_dlopen_of_a_guest_written_so_fails_and_reaches_no_cache(runtime_314, tmp_path):
    layer = tmp_path / "layer"
    layer.mkdir()
    good = side_module(b"layer")
    (layer / "ok.so").write_bytes(good)
    evil = side_module(os.urandom(16))
    sha = hashlib.sha256(evil).hexdigest()[:32]
    before = _cached_names()
    iso = Isolate(runtime_314, mounts={"/data": str(layer)})
    out = ast.literal_eval(iso.run(f'''
import importlib.machinery, importlib.util, sys
def load(name, path):
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        importlib.util.module_from_spec(spec)
        return "imported"
    except ImportError as e:
        return type(e).__name__ + ": " + str(e)
res = {{"layer": load("ok", "/data/ok.so")}}
open("/tmp/evil.so", "wb").write({evil!r})
res["path"] = load("evil", "/tmp/evil.so")
ext = "/tmp/evilmod" + importlib.machinery.EXTENSION_SUFFIXES[0]
open(ext, "wb").write({evil!r})
sys.path.insert(0, "/tmp")
try:
    import evilmod
    res["import"] = "imported"
except ImportError as e:
    res["import"] = type(e).__name__ + ": " + str(e)
print(repr(res))
''').stdout.decode())
    # the layer's module was loaded (it just has no PyInit function)
    assert "PyInit_ok" in out["layer"] and "refused" not in out["layer"], out["layer"]
    for key in ("path", "import"):
        assert out[key].startswith("ImportError") and "refused" in out[key] \
            and "read-only layers" in out[key], out[key]
    assert not [n for n in _cached_names() - before if n.startswith(sha)]
    assert not [n for n in _cached_names() if n.startswith(sha)]
    assert not [lib for lib in iso.linker.loaded if lib.name.startswith("/tmp")]
    iso.close()
