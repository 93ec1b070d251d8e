"""Precompiled bytecode for read-only layers.

Inside the sandbox every import compiles its module from source: Pyodide's CPython runs with
``dont_write_bytecode`` and the layers are read-only, so nothing is ever cached. That cost is paid
at deploy (importing the app) and, worse, on the request path for modules a framework imports
lazily (e.g. FastAPI imports ``fastapi.telemetry._runtime`` on the first call into the app:
8 ms of a 14 ms cold start, measured).

:func:`precompile_layer` compiles every ``.py`` file of a site-packages layer *with the guest's
own CPython* (so the bytecode's magic number is the release's) in an isolate whose
``sys.pycache_prefix`` points into the writable ``/tmp``, then copies the ``.pyc`` files into
``__pycache__`` directories beside the sources, where CPython's normal lookup
(``importlib.util.cache_from_source``) finds them. The ``.pyc`` headers record the source's
mtime and size as the sandbox's file system reports them (the host's values), so they validate.
Run it while the layer is still private (before it is published).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

_COMPILE = r'''
import compileall, sys
sys.pycache_prefix = "/tmp/pyc"
ok = compileall.compile_dir(%(root)r, quiet=2, workers=1, legacy=False, optimize=-1)
print("ok" if ok else "some files failed to compile")
'''


def precompile_layer(layer: str | os.PathLike, release, *, progress: Callable[[str], None] | None = None,
                     tmp_cap: int = 1 << 30) -> dict:
    """Add ``__pycache__/*.cpython-3XY.pyc`` for every module of ``layer`` (a site-packages dir).

    ``release`` is a Pyodide version, :class:`Release` or :class:`Runtime`. Returns
    ``{"files": n, "bytes": total, "seconds": s}``. Files that fail to compile (syntax only
    valid elsewhere, e.g. test data) are skipped, as ``pip install`` does. Raises
    ``GuestError`` if the guest cannot run the compiler at all.
    """
    from pyworkers.runtime import Isolate
    from pyworkers.runtime import vfs as V

    layer = Path(layer)
    t0 = time.perf_counter()
    iso = Isolate(release, site_packages=layer, tmp_cap=tmp_cap)
    try:
        guest_root = iso.runtime.site_packages_guest_path
        iso.run(_COMPILE % {"root": guest_root})
        prefix = iso.fs.lookup("/tmp/pyc" + guest_root)
        files = total = 0

        def copy(node: V.MemDir, rel: Path) -> None:
            nonlocal files, total
            for name, child in node.children.items():
                if isinstance(child, V.MemDir):
                    copy(child, rel / name)
                elif isinstance(child, V.MemFile) and name.endswith(".pyc"):
                    dest = layer / rel / "__pycache__" / name
                    dest.parent.mkdir(exist_ok=True)
                    tmp = dest.with_name(dest.name + ".tmp")
                    tmp.write_bytes(bytes(child.data))
                    os.replace(tmp, dest)
                    files += 1
                    total += len(child.data)

        copy(prefix, Path("."))  # type: ignore[arg-type]
    finally:
        iso.close()
    res = {"files": files, "bytes": total, "seconds": round(time.perf_counter() - t0, 2)}
    if progress:
        progress(f"precompiled {files} modules ({total / 2**20:.1f} MiB of bytecode) in {res['seconds']} s")
    return res


_STDLIB = r'''
import importlib.util, marshal, zipfile, sys
from importlib._bootstrap_external import _code_to_hash_pyc
src_zip = %(zip)r
out = %(out)r
n = failed = 0
with zipfile.ZipFile(src_zip) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
    for info in zin.infolist():
        data = zin.read(info)
        zout.writestr(info, data)
        if not info.filename.endswith(".py"):
            continue
        try:
            code = compile(data, src_zip + "/" + info.filename, "exec", dont_inherit=True)
        except SyntaxError:
            failed += 1
            continue
        pyc = _code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False)
        zi = zipfile.ZipInfo(info.filename[:-3] + ".pyc", info.date_time)
        zout.writestr(zi, bytes(pyc))
        n += 1
print(n, failed)
'''

#: Bumped when the bytecode zip's layout changes (part of its cache file name).
STDLIB_BYTECODE_VERSION = 1


def stdlib_bytecode_zip(installed) -> Path:
    """Where the release's stdlib zip with bytecode lives (may not exist yet)."""
    return installed.root / f"python_stdlib.pyc.v{STDLIB_BYTECODE_VERSION}.zip"


def ensure_stdlib_bytecode(rt, *, progress: Callable[[str], None] | None = None) -> Path:
    """The release's ``python_stdlib.zip`` plus a ``.pyc`` beside every ``.py`` (compiled by the
    guest's CPython; PEP 552 *unchecked* hash-based pycs, which zipimport uses without comparing
    timestamps), built once per release into the runtime cache (file lock, atomic rename).
    ``rt`` is a :class:`~pyworkers.runtime.isolate.Runtime` booted with the plain zip."""
    import filelock

    from pyworkers.runtime import Isolate

    out = stdlib_bytecode_zip(rt.installed)
    if out.exists():
        return out
    with filelock.FileLock(str(out) + ".lock", timeout=900):
        if out.exists():
            return out
        t0 = time.perf_counter()
        iso = Isolate(rt, mounts={"/work/stdlib.zip": str(rt.installed.stdlib_zip)}, tmp_cap=256 << 20)
        try:
            r = iso.run(_STDLIB % {"zip": "/work/stdlib.zip", "out": "/tmp/stdlib.pyc.zip"})
            node = iso.fs.lookup("/tmp/stdlib.pyc.zip")
            tmp = out.with_name(out.name + f".tmp{os.getpid()}")
            tmp.write_bytes(bytes(node.data))  # type: ignore[attr-defined]
            os.replace(tmp, out)
        finally:
            iso.close()
        if progress:
            n, failed = r.stdout.split()
            progress(f"precompiled the standard library ({n.decode()} modules) in "
                     f"{time.perf_counter() - t0:.1f} s")
    return out
