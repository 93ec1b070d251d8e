"""Precompiled bytecode in layers: written by the guest's CPython, used by later imports."""
import pytest

from pyworkers.runtime import Isolate
from pyworkers.runtime.bytecode import precompile_layer

pytestmark = pytest.mark.slow


def test_precompiled_layer_is_used_by_imports(tmp_path, runtime_314):
    layer = tmp_path / "site-packages"
    pkg = layer / "demo_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 41\n")
    (pkg / "lazy.py").write_text("def f():\n    return 42\n")
    (pkg / "broken_py2.py").write_text("print 'python 2 only'\n")  # skipped, like pip does
    res = precompile_layer(layer, runtime_314)
    tag = "cpython-" + runtime_314.release.python_minor.replace(".", "")
    pycs = sorted(p.name for p in (pkg / "__pycache__").iterdir())
    assert pycs == [f"__init__.{tag}.pyc", f"lazy.{tag}.pyc"]
    assert res["files"] == 2
    iso = Isolate(runtime_314, site_packages=layer)
    r = iso.run("import demo_pkg.lazy, importlib.util\n"
                "print(demo_pkg.lazy.f(), demo_pkg.lazy.__spec__.cached)\n"
                "import sys; print(type(demo_pkg.lazy.__spec__.loader).__name__)")
    value, cached = r.stdout.decode().split()[:2]
    assert value == "42" and cached.endswith(f"lazy.{tag}.pyc")
    # the bytecode is really read: make the source unreadable-by-content but same size/mtime
    import os

    src = pkg / "lazy.py"
    st = src.stat()
    src.write_text("def f():\n    return 99\n")  # same length
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert Isolate(runtime_314, site_packages=layer).eval("__import__('demo_pkg.lazy').lazy.f()") == "42"
