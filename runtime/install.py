"""Runtime releases on disk: fetch, verify, unpack, translate and compile a Pyodide build.

A release goes through four cached steps, each idempotent, guarded by a file lock (safe when
several processes install at once) and published by an atomic rename, so a killed process never
leaves a half-written entry that a later one would use:

1. ``npm pack pyodide@VERSION`` (the ordinary npm client and the user's npm configuration), the
   tarball checked against the sha512 ``npm_integrity`` pinned in ``compat/releases.toml``;
2. unpack into ``<cache>/releases/<version>/package``;
3. translate legacy wasm exception handling to exnref with binaryen's ``wasm-opt`` (npm package
   ``binaryen``, pinned in the same table; run by node at install time only), because wasmtime
   refuses the legacy proposal;
4. compile with wasmtime and serialize the module (``.cwasm``), keyed by release, the hash of
   the translated wasm, the wasmtime version and the engine configuration
   (:func:`pyworkers.runtime.engine.config_fingerprint`), since a ``.cwasm`` only loads into the
   exact wasmtime build and configuration that wrote it.

Every artifact has a manifest entry (size and sha256). Before a ``.cwasm`` is deserialized its hash
is checked (deserializing a corrupted one is undefined behaviour in wasmtime); a mismatch rebuilds
the entry, never uses it.

The cache root is ``$PYWORKERS_CACHE_DIR`` or platformdirs' user cache dir for ``pyworkers``,
overridable per call (``cache_dir=``) and by the CLI's ``--cache-dir``.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import filelock

from pyworkers.compat.releases import Release, Tool, get_release, tool
from pyworkers.paths import cache_root  # noqa: F401  (re-exported)

Progress = Callable[[str], None]

#: Files of the npm package the engine needs.
PACKAGE_FILES = ("pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json")


class RuntimeInstallError(RuntimeError):
    """A release could not be installed; the message is one line naming the cause and the fix."""


class MissingToolError(RuntimeInstallError):
    """node or npm is not on PATH (needed at install time only)."""


class IntegrityError(RuntimeInstallError):
    """A downloaded tarball does not match the sha512 integrity pinned in the release table."""


@dataclasses.dataclass(frozen=True)
class InstalledRelease:
    """Paths of an installed release.

    ``package``: the unpacked npm package directory (``pyodide.asm.wasm``, ``python_stdlib.zip``,
    ``pyodide-lock.json``, the JS glue kept only as reference); ``wasm``: the exnref-translated
    module; ``cwasm``: the serialized compiled module for this wasmtime and engine configuration;
    ``wasm_sha256``: hash of the prepared module (identifies the exact build in snapshots);
    ``layout``: the glue constants of :func:`read_glue_layout` (memory base etc.).
    """

    release: Release
    root: Path
    package: Path
    wasm: Path
    cwasm: Path
    wasm_sha256: str
    layout: dict = dataclasses.field(default_factory=dict)

    @property
    def stdlib_zip(self) -> Path:
        return self.package / "python_stdlib.zip"

    @property
    def lock_json(self) -> Path:
        return self.package / "pyodide-lock.json"


# --------------------------------------------------------------------------- helpers

def _say(progress: Progress | None, msg: str) -> None:
    if progress:
        progress(msg)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_integrity(tarball: Path, integrity: str, what: str) -> None:
    algo, _, expected_b64 = integrity.partition("-")
    h = hashlib.new(algo)
    h.update(tarball.read_bytes())
    got = f"{algo}-{base64.b64encode(h.digest()).decode()}"
    if got != integrity:
        tarball.unlink(missing_ok=True)
        raise IntegrityError(
            f"{what}: tarball integrity mismatch (expected {integrity}, got {got}); the download "
            "was deleted: check your npm registry configuration and retry"
        )


def _need(cmd: str) -> str:
    exe = shutil.which(cmd)
    if not exe:
        raise MissingToolError(
            f"`{cmd}` was not found on PATH: pyworkers needs Node.js and npm at install time to fetch "
            f"runtime releases and binaryen (install Node.js >= 18, e.g. `apt-get install nodejs npm`)"
        )
    return exe


def _npm_pack(spec: str, integrity: str, dest: Path, progress: Progress | None) -> Path:
    """``npm pack SPEC`` into ``dest``; returns the verified tarball path."""
    npm = _need("npm")
    _say(progress, f"fetching {spec} with npm pack")
    try:
        out = subprocess.run(
            [npm, "pack", spec, "--json", "--pack-destination", str(dest)],
            capture_output=True, text=True, timeout=600, check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeInstallError(f"`npm pack {spec}` timed out after 600 s; check the network and retry")
    if out.returncode != 0:
        last = [ln for ln in out.stderr.splitlines() if "ERR" in ln or "error" in ln.lower()]
        detail = (last[-1] if last else out.stderr.strip().splitlines()[-1:] or ["?"])
        detail = detail if isinstance(detail, str) else detail[0]
        raise RuntimeInstallError(f"`npm pack {spec}` failed: {detail.strip()}")
    try:
        filename = json.loads(out.stdout)[0]["filename"]
    except (ValueError, LookupError):
        tgz = sorted(dest.glob("*.tgz"))
        if not tgz:
            raise RuntimeInstallError(f"`npm pack {spec}` produced no tarball")
        filename = tgz[0].name
    tarball = dest / Path(filename).name
    _check_integrity(tarball, integrity, spec)
    return tarball


def _unpack(tarball: Path, dest: Path) -> None:
    with tarfile.open(tarball, "r:gz") as tf:
        tf.extractall(dest, filter="data")


def _write_manifest(path: Path, files: dict[str, Path]) -> None:
    data = {name: {"size": p.stat().st_size, "sha256": _sha256_file(p)} for name, p in files.items()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _manifest_ok(path: Path, files: dict[str, Path], *, deep: bool) -> bool:
    """Sizes always; sha256 only when ``deep``."""
    try:
        data = json.loads(path.read_text())
        for name, p in files.items():
            entry = data[name]
            if p.stat().st_size != entry["size"]:
                return False
            if deep and _sha256_file(p) != entry["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _lock(path: Path) -> filelock.FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(path) + ".lock", timeout=900)


# --------------------------------------------------------------------------- steps

def _ensure_package(release: Release, root: Path, progress: Progress | None, deep: bool) -> Path:
    rdir = root / "releases" / release.pyodide_version
    package = rdir / "package"
    manifest = rdir / "package.manifest.json"
    files = {n: package / n for n in PACKAGE_FILES}
    if _manifest_ok(manifest, files, deep=deep):
        return package
    with _lock(rdir / "package"):
        if _manifest_ok(manifest, files, deep=True):
            return package
        if package.exists():
            _say(progress, f"cache entry {package} is incomplete or corrupted: rebuilding it")
        with tempfile.TemporaryDirectory(dir=rdir, prefix=".fetch-") as tmp:
            tarball = _npm_pack(f"pyodide@{release.pyodide_version}", release.npm_integrity, Path(tmp), progress)
            _say(progress, f"unpacking {tarball.name}")
            _unpack(tarball, Path(tmp) / "x")
            missing = [n for n in PACKAGE_FILES if not (Path(tmp) / "x" / "package" / n).is_file()]
            if missing:
                raise RuntimeInstallError(f"pyodide@{release.pyodide_version} tarball lacks {', '.join(missing)}")
            old = rdir / ".old-package"
            if package.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(package, old)
            os.replace(Path(tmp) / "x" / "package", package)
            shutil.rmtree(old, ignore_errors=True)
        _write_manifest(manifest, files)
    return package


def _ensure_binaryen(root: Path, progress: Progress | None) -> Path:
    t: Tool = tool("binaryen")
    bdir = root / "tools" / f"binaryen-{t.version}"
    wasm_opt = bdir / "bin" / "wasm-opt"
    marker = root / "tools" / f"binaryen-{t.version}.manifest.json"
    if _manifest_ok(marker, {"wasm-opt": wasm_opt}, deep=False):
        return wasm_opt
    with _lock(bdir):
        if _manifest_ok(marker, {"wasm-opt": wasm_opt}, deep=True):
            return wasm_opt
        with tempfile.TemporaryDirectory(dir=bdir.parent, prefix=".fetch-") as tmp:
            tarball = _npm_pack(f"{t.npm_package}@{t.version}", t.npm_integrity, Path(tmp), progress)
            _unpack(tarball, Path(tmp) / "x")
            shutil.rmtree(bdir, ignore_errors=True)
            os.replace(Path(tmp) / "x" / "package", bdir)
        _write_manifest(marker, {"wasm-opt": wasm_opt})
    return wasm_opt


def translate_exceptions(src: Path, dst: Path, *, root: Path | None = None,
                         progress: Progress | None = None) -> None:
    """Rewrite legacy wasm exception handling (``try``/``catch``) to exnref with binaryen.

    Runs ``node wasm-opt SRC --all-features --disable-compact-imports --translate-to-exnref``
    (``--disable-compact-imports``: without it wasmtime cannot parse the output). Writes ``dst``
    atomically. Used for ``pyodide.asm.wasm`` and for side modules (``.so``) from wheels.
    Raises :class:`RuntimeInstallError` with wasm-opt's message on failure.
    """
    root = root or cache_root()
    wasm_opt = _ensure_binaryen(root, progress)
    node = _need("node")
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    proc = subprocess.run(
        [node, str(wasm_opt), str(src), "--all-features", "--disable-compact-imports",
         "--translate-to-exnref", "-o", str(tmp)],
        capture_output=True, text=True, timeout=900,
    )
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeInstallError(f"wasm-opt failed on {src}: {proc.stderr.strip()[-500:]}")
    os.replace(tmp, dst)


def _ensure_translated(package: Path, rdir: Path, root: Path, progress: Progress | None,
                       deep: bool) -> tuple[Path, str]:
    out = rdir / "pyodide.exnref.wasm"
    manifest = rdir / "exnref.manifest.json"
    if _manifest_ok(manifest, {"wasm": out}, deep=deep):
        return out, json.loads(manifest.read_text())["wasm"]["sha256"]
    with _lock(out):
        if not _manifest_ok(manifest, {"wasm": out}, deep=True):
            _say(progress, "translating legacy exception handling (binaryen wasm-opt --translate-to-exnref)")
            t0 = time.perf_counter()
            translate_exceptions(package / "pyodide.asm.wasm", out, root=root, progress=progress)
            _say(progress, f"translated in {time.perf_counter() - t0:.1f} s")
            _write_manifest(manifest, {"wasm": out})
    return out, json.loads(manifest.read_text())["wasm"]["sha256"]


#: Bumped whenever prepare_main_module's output changes, so stale cache entries are rebuilt.
PREPARE_VERSION = 3

GLUE_PATTERNS = {
    # name -> regex over the release's Emscripten glue (pyodide.asm.js / .mjs)
    "memory_base": r'___memory_base=new WebAssembly\.Global\(\{value:"i32",mutable:false\},(\d+)\)',
    "table_base": r'___table_base=new WebAssembly\.Global\(\{value:"i32",mutable:false\},(\d+)\)',
    "stack_pointer": r'___stack_pointer=new WebAssembly\.Global\(\{value:"i32",mutable:true\},(\d+)\)',
    "heap_base": r"var ___heap_base=(\d+)",
    "stack_low": r"var ___stack_low=(\d+)",
    "stack_high": r"var ___stack_high=(\d+)",
    "table_initial": r'new WebAssembly\.Table\(\{initial:(\d+),element:"anyfunc"\}\)',
}


def read_glue_layout(package: Path) -> dict[str, int]:
    """Constants the Emscripten glue supplies to a build that imports its memory/table/globals.

    Returns ``{memory_base, table_base, stack_pointer, heap_base, stack_low, stack_high,
    table_initial}`` for builds like 0.29.3 (keys absent when the build defines them itself,
    as 314 does). Read from ``pyodide.asm.js``/``.mjs`` of the same release, so no per-release
    number is written in pyworkers.
    """
    import re

    glue = next((package / n for n in ("pyodide.asm.mjs", "pyodide.asm.js") if (package / n).exists()), None)
    if glue is None:
        return {}
    text = glue.read_text(errors="replace")
    out = {}
    for k, rx in GLUE_PATTERNS.items():
        m = re.search(rx, text)
        if m:
            out[k] = int(m.group(1))
    return out


def prepare_main_module(src: Path, dst: Path, layout: dict[str, int]) -> None:
    """Turn the main module's non-function imports into definitions (see
    :mod:`pyworkers.runtime.wasmbin`) with the glue's values: ``env.__memory_base``,
    ``env.__table_base``, ``env.__stack_pointer``, ``GOT.mem.__heap_base``/``__stack_low``/
    ``__stack_high``; ``GOT.func`` entries become 0 (all are emscripten_gl*/console helpers
    that Python never calls). The imported table gets ``table_initial`` entries as in the glue.
    Every mutable global is exported as ``__pyw_g<index>`` so snapshots can capture it.
    Raises :class:`RuntimeInstallError` for an import it cannot give a value to.
    """
    from pyworkers.runtime import wasmbin

    data = src.read_bytes()
    env_values = {"__memory_base": "memory_base", "__table_base": "table_base",
                  "__stack_pointer": "stack_pointer"}
    got_mem = {"__heap_base": "heap_base", "__stack_low": "stack_low", "__stack_high": "stack_high"}

    def value(imp) -> int:
        if imp.module == "GOT.func":
            return 0
        key = (env_values if imp.module == "env" else got_mem if imp.module == "GOT.mem" else {}).get(imp.name)
        if key is None or key not in layout:
            raise RuntimeInstallError(f"{src.name}: no value known for imported global {imp.module}.{imp.name}")
        return layout[key]

    out = wasmbin.internalize_imports(data, value, table_min=layout.get("table_initial"))
    out = wasmbin.export_mutable_globals(out)
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    tmp.write_bytes(out)
    os.replace(tmp, dst)


def _ensure_prepared(package: Path, translated: Path, rdir: Path, progress: Progress | None,
                     deep: bool) -> tuple[Path, str, dict]:
    out = rdir / f"pyodide.host.v{PREPARE_VERSION}.wasm"
    manifest = rdir / f"host.v{PREPARE_VERSION}.manifest.json"
    layout_file = rdir / "layout.json"
    if not _manifest_ok(manifest, {"wasm": out}, deep=deep) or not layout_file.exists():
        with _lock(out):
            if not _manifest_ok(manifest, {"wasm": out}, deep=True) or not layout_file.exists():
                _say(progress, "preparing the module for a shared linker (imported globals -> definitions)")
                layout = read_glue_layout(package)
                prepare_main_module(translated, out, layout)
                layout_file.write_text(json.dumps(layout, indent=1, sort_keys=True))
                _write_manifest(manifest, {"wasm": out})
    return out, json.loads(manifest.read_text())["wasm"]["sha256"], json.loads(layout_file.read_text())


def compiled_path(root: Path, key: str, name: str) -> Path:
    """Where a serialized module for ``key`` lives: ``<root>/compiled/<engine fingerprint>/``."""
    from pyworkers.runtime.engine import config_fingerprint

    return root / "compiled" / config_fingerprint() / f"{name}-{key[:24]}.cwasm"


def ensure_compiled(wasm: Path, wasm_sha256: str, name: str, *, root: Path | None = None,
                    progress: Progress | None = None) -> Path:
    """Compile ``wasm`` with the shared engine configuration and cache the ``.cwasm``.

    The cache entry is keyed by ``wasm_sha256`` and the engine fingerprint (wasmtime version +
    configuration). Returns the path; its sha256 is recorded in ``<path>.json`` and verified by
    :func:`pyworkers.runtime.engine.load_module` before each deserialize.
    """
    from pyworkers.runtime.engine import get_engine
    import wasmtime

    root = root or cache_root()
    out = compiled_path(root, wasm_sha256, name)
    manifest = out.with_suffix(".json")
    if _manifest_ok(manifest, {"cwasm": out}, deep=False):
        return out
    with _lock(out):
        if not _manifest_ok(manifest, {"cwasm": out}, deep=True):
            _say(progress, f"compiling {wasm.name} with wasmtime (Cranelift)")
            t0 = time.perf_counter()
            module = wasmtime.Module.from_file(get_engine(), str(wasm))
            tmp = out.with_name(out.name + f".tmp{os.getpid()}")
            tmp.write_bytes(module.serialize())
            os.replace(tmp, out)
            _write_manifest(manifest, {"cwasm": out})
            _say(progress, f"compiled in {time.perf_counter() - t0:.1f} s")
    return out


def ensure_release(release: Release | str, *, cache_dir: str | os.PathLike | None = None,
                   progress: Progress | None = None, verify: bool = False) -> InstalledRelease:
    """Install ``release`` (a :class:`Release` or a Pyodide version string) if needed.

    Each step is skipped when its cache entry is present and its manifest sizes match;
    ``verify=True`` re-hashes every file and rebuilds what does not match.
    Raises :class:`UnknownReleaseError` (from the release table), :class:`MissingToolError`,
    :class:`IntegrityError` or :class:`RuntimeInstallError`.
    """
    if isinstance(release, str):
        release = get_release(release)
    root = cache_root(cache_dir)
    rdir = root / "releases" / release.pyodide_version
    package = _ensure_package(release, root, progress, verify)
    translated, _ = _ensure_translated(package, rdir, root, progress, verify)
    wasm, sha, layout = _ensure_prepared(package, translated, rdir, progress, verify)
    cwasm = ensure_compiled(wasm, sha, f"pyodide-{release.pyodide_version}", root=root, progress=progress)
    if verify:
        from pyworkers.runtime.engine import verify_cwasm

        verify_cwasm(cwasm, rebuild=lambda: ensure_compiled(wasm, sha, f"pyodide-{release.pyodide_version}",
                                                            root=root, progress=progress))
    return InstalledRelease(release, rdir, package, wasm, cwasm, sha, layout)


def is_installed(release: Release | str, *, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when every step of ``release`` is cached (cheap check: no hashing, no network)."""
    if isinstance(release, str):
        release = get_release(release)
    root = cache_root(cache_dir)
    rdir = root / "releases" / release.pyodide_version
    pkg_ok = _manifest_ok(rdir / "package.manifest.json",
                          {n: rdir / "package" / n for n in PACKAGE_FILES}, deep=False)
    tr = rdir / f"host.v{PREPARE_VERSION}.manifest.json"
    if not (pkg_ok and _manifest_ok(tr, {"wasm": rdir / f"pyodide.host.v{PREPARE_VERSION}.wasm"}, deep=False)):
        return False
    sha = json.loads(tr.read_text())["wasm"]["sha256"]
    out = compiled_path(root, sha, f"pyodide-{release.pyodide_version}")
    return _manifest_ok(out.with_suffix(".json"), {"cwasm": out}, deep=False)
