"""Pure-Python wheels built from sdists, for requirements that have no wheel for the runtime.

Many projects publish only host-native wheels (or only an sdist) but build a pure-Python wheel
when their optional C extension is switched off (MarkupSafe, PyYAML, multidict, yarl, wrapt ...),
or have no native code at all (pypika). For those, :class:`SdistBuilder`:

1. downloads the sdist into the content-addressed cache (``<cache>/packages/sdists/sha256/``,
   sha256-verified, atomic, file-locked like the wheel cache);
2. refuses it at once when it has C/C++/Cython/Rust sources and the project is not in the switch
   table (``sdist_builds.toml``: per project, the environment variables that turn its extension
   off): such an sdist needs a compiler for the sandbox (``pyodide build``);
3. builds a wheel natively with pypa ``build`` (``python -m build --wheel``: an isolated build
   environment with the sdist's own ``build-system.requires``), with the table's variables set
   (``CC``/``CXX`` = ``false`` for every build, so an optional extension falls back instead of
   compiling for the host) and ``SOURCE_DATE_EPOCH`` fixed;
4. checks the wheel has no native code (no ``.so``/``.pyd``/``.dylib``/``.dll``, and
   ``Root-Is-Purelib: true`` in its ``WHEEL`` file), then rewrites it as
   ``<name>-<version>-py3-none-any.whl`` (PEP 427; ``WHEEL`` tags and ``RECORD`` rewritten,
   entries sorted with a fixed timestamp so the same sdist gives the same bytes) and stores it
   in the wheel cache by its sha256;
5. records the outcome under the sdist's sha256 (``<cache>/packages/built/sha256/<2>/<sha>.json``,
   written atomically under a file lock), failures that do not depend on the moment included
   (native code, compiled sources), so the next resolve neither rebuilds nor retries them. A
   failing ``python -m build`` (which may be a network problem in the build environment) is
   only remembered for the running process. An entry made with other switches is rebuilt.

Errors: :class:`SdistBuildError` (a :class:`~pyworkers.packages.errors.PackagesError`) names the
project, the sdist, the reason and the alternatives.
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import filelock
from packaging.utils import canonicalize_name, parse_wheel_filename

from .cache import LOCK_TIMEOUT, WheelCache
from .errors import PackagesError
from .http_client import Http
from .index import _atomic_write

#: The switch table shipped with pyworkers.
TABLE = Path(__file__).with_name("sdist_builds.toml")
#: Outcome record format (bump to rebuild every entry).
ENTRY_FORMAT = 1
#: Seconds one ``python -m build`` may take.
BUILD_TIMEOUT = 900
#: Files that mean compiled code in a wheel.
NATIVE_BINARY = re.compile(r"\.(so|pyd|dylib|dll)$|\.so\.\d")
#: Files that mean an sdist needs a compiler.
NATIVE_SOURCE = re.compile(r"\.(c|cc|cpp|cxx|c\+\+|pyx|rs|f|f90|f95|cu|m|mm)$|(^|/)Cargo\.toml$",
                           re.IGNORECASE)
#: Directories of an sdist whose sources are not built (tests, docs, examples, benchmarks).
_NOT_BUILT = re.compile(r"(^|/)(tests?|testing|docs?|examples?|benchmarks?|bench)/")
#: Build failures of this process that are not recorded on disk (sdist sha256 -> reason).
_SESSION_FAILURES: dict[str, str] = {}
#: Fixed time of the rewritten wheel's entries (zip's epoch) and of the build.
_EPOCH = "315532800"  # 1980-01-01


class SdistBuildError(PackagesError):
    """An sdist cannot become a pure-Python wheel. Attributes: ``project``, ``version``,
    ``sdist`` (file name), ``reason`` (one line); ``detail`` holds the end of the build log."""

    def __init__(self, message: str, *, project: str, version: str, sdist: str, reason: str,
                 detail: str = "") -> None:
        super().__init__(message, detail)
        self.project, self.version, self.sdist, self.reason = project, version, sdist, reason


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one project's sdist is built: ``env`` (variables set for the build, after the
    table's defaults), ``why`` (what the switches do), ``known`` (listed in the table)."""

    project: str
    env: tuple[tuple[str, str], ...]
    why: str = ""
    known: bool = False

    @property
    def digest(self) -> str:
        """Hex sha256 of the switches (part of the outcome record's key)."""
        return hashlib.sha256(json.dumps([ENTRY_FORMAT, list(self.env)]).encode()).hexdigest()


@functools.lru_cache(maxsize=4)
def _table(path: str) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def table_digest(path: Path = TABLE) -> str:
    """Hex sha256 of the switch table (part of the lock's input digest)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def recipe(project: str, path: Path = TABLE) -> Recipe:
    """The build recipe for ``project`` (any spelling): the table's defaults merged with its
    entry. Raises ``KeyError``-free: an unlisted project gets the defaults with ``known=False``."""
    t = _table(str(path))
    env = dict((t.get("defaults") or {}).get("env") or {})
    entry = (t.get("projects") or {}).get(canonicalize_name(project))
    if entry is not None:
        env.update(entry.get("env") or {})
    pairs = tuple(sorted((str(k), str(v)) for k, v in env.items()))
    return Recipe(canonicalize_name(project), pairs, (entry or {}).get("why", ""),
                  entry is not None)


class SdistCache(WheelCache):
    """sdists by sha256 under ``<root>/sdists/sha256/<2>/<sha256>.sdist`` (same guarantees as
    :class:`~pyworkers.packages.cache.WheelCache`)."""

    subdir = "sdists"
    suffix = ".sdist"


@dataclasses.dataclass(frozen=True)
class BuiltWheel:
    """A wheel built from an sdist: ``filename`` (``*-py3-none-any.whl``), ``sha256``, ``size``
    (bytes), ``path`` (in the wheel cache), ``sdist_sha256``."""

    filename: str
    sha256: str
    size: int
    path: Path
    sdist_sha256: str


def _members(path: Path) -> list[str]:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    with tarfile.open(path) as tf:
        return [m.name for m in tf.getmembers() if m.isfile()]


def native_sources(path: Path) -> list[str]:
    """Files of the sdist at ``path`` that need a compiler (C/C++/Cython/Rust/Fortran sources,
    ``Cargo.toml``), outside tests/docs/examples. Raises ``tarfile.TarError``/``zipfile.
    BadZipFile`` for a broken archive."""
    out = []
    for name in _members(path):
        rel = name.split("/", 1)[1] if "/" in name else name
        if NATIVE_SOURCE.search(rel) and not _NOT_BUILT.search(rel):
            out.append(rel)
    return sorted(out)


def _extract(path: Path, dest: Path) -> Path:
    """Unpack the sdist (tar with the ``data`` filter, or zip with path checks); returns the
    project directory (the one holding ``pyproject.toml`` or ``setup.py``)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for n in zf.namelist():
                if n.startswith("/") or ".." in Path(n).parts:
                    raise ValueError(f"unsafe path {n!r} in the archive")
            zf.extractall(dest)
    else:
        with tarfile.open(path) as tf:
            tf.extractall(dest, filter="data")
    for d in [dest, *sorted(p for p in dest.iterdir() if p.is_dir())]:
        if (d / "pyproject.toml").is_file() or (d / "setup.py").is_file():
            return d
    raise ValueError("no pyproject.toml or setup.py in the archive")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def check_pure(wheel: Path) -> str | None:
    """``None`` when the wheel has no native code, else the reason (one line): a compiled file
    (``.so``/``.pyd``/``.dylib``/``.dll``) or ``Root-Is-Purelib`` not ``true``."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        native = [n for n in names if NATIVE_BINARY.search(n)]
        if native:
            return f"the built wheel has native code ({', '.join(native[:3])})"
        wheel_files = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/WHEEL")]
        if len(wheel_files) != 1:
            return "the built wheel has no .dist-info/WHEEL file"
        text = zf.read(wheel_files[0]).decode("utf-8", "replace")
    m = re.search(r"^Root-Is-Purelib:\s*(\S+)", text, re.MULTILINE)
    if not m or m.group(1).lower() != "true":
        return ("the built wheel is platform-specific (Root-Is-Purelib is not true): its C "
                "extension is not optional")
    return None


def retag_pure(wheel: Path, name: str, version: str) -> tuple[str, bytes]:
    """Rewrite a pure wheel as ``<name>-<version>-py3-none-any.whl`` (PEP 427/491): ``WHEEL``
    tags replaced, ``RECORD`` recomputed, entries sorted with a fixed timestamp (deterministic
    bytes). Returns ``(filename, bytes)``."""
    dist = re.sub(r"[-_.]+", "_", name)
    filename = f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        files = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
    info_dir = next(n.split("/", 1)[0] for n in files if n.endswith(".dist-info/WHEEL")
                    and n.count("/") == 1)
    wheel_txt = files[f"{info_dir}/WHEEL"].decode("utf-8")
    lines = [ln for ln in wheel_txt.splitlines() if ln and not ln.startswith("Tag:")]
    lines.append("Tag: py3-none-any")
    files[f"{info_dir}/WHEEL"] = ("\n".join(lines) + "\n").encode()
    record_name = f"{info_dir}/RECORD"
    files.pop(record_name, None)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for n in sorted(files):
        w.writerow([n, _record_hash(files[n]), len(files[n])])
    w.writerow([record_name, "", ""])
    files[record_name] = buf.getvalue().encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for n in sorted(files, key=lambda x: (x.startswith(f"{info_dir}/"), x)):
            zi = zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, files[n])
    return filename, out.getvalue()


class SdistBuilder:
    """Builds, checks and caches pure-Python wheels from sdists (see the module docstring).

    Args:
        root: ``<cache root>/packages``.
        http: the :class:`~pyworkers.packages.http_client.Http` client for sdist downloads.
        progress: a :class:`~pyworkers.packages.progress.Progress` (status lines).
        index_url: passed to the isolated build environment's pip as ``PIP_INDEX_URL``
            (``None``: pip's own configuration).
    """

    def __init__(self, root: Path, http: Http, progress: Any, index_url: str | None = None,
                 table: Path = TABLE) -> None:
        self.root = Path(root)
        self.http, self.progress, self.index_url, self.table = http, progress, index_url, table
        self.wheels = WheelCache(self.root)
        self.sdists = SdistCache(self.root)
        self.entries = self.root / "built" / "sha256"

    # --- records -------------------------------------------------------------
    def _entry_path(self, sdist_sha256: str) -> Path:
        return self.entries / sdist_sha256[:2] / f"{sdist_sha256}.json"

    def _read(self, sdist_sha256: str, rec: Recipe) -> dict | None:
        try:
            e = json.loads(self._entry_path(sdist_sha256).read_text())
        except (OSError, ValueError):
            return None
        if e.get("format") != ENTRY_FORMAT or e.get("recipe") != rec.digest:
            return None
        if e.get("ok") and self.wheels.lookup(e.get("sha256", "")) is None:
            return None  # the wheel was pruned from the cache: rebuild
        return e

    def _write(self, sdist_sha256: str, entry: dict) -> None:
        p = self._entry_path(sdist_sha256)
        p.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(p, json.dumps(entry, indent=1).encode())

    def cached_failure(self, name: str, sdist_sha256: str | None) -> str | None:
        """The recorded reason why this sdist did not build, or ``None``."""
        if not sdist_sha256:
            return None
        if sdist_sha256 in _SESSION_FAILURES:
            return _SESSION_FAILURES[sdist_sha256]
        e = self._read(sdist_sha256, recipe(name, self.table))
        return e["reason"] if e is not None and not e.get("ok") else None

    # --- steps -----------------------------------------------------------------
    def fetch(self, url: str, sha256: str | None) -> tuple[Path, str]:
        """The sdist in the cache (downloaded if needed, sha256-verified): ``(path, sha256)``."""
        self.progress.status(f"downloading {url.rsplit('/', 1)[-1]}")
        return self.sdists.fetch(self.http, url, sha256 or None)

    def viable(self, name: str, filename: str, url: str, sha256: str | None) -> str | None:
        """``None`` if the sdist may build a pure wheel, else the reason: a recorded earlier
        failure, or native sources in a project the switch table does not list."""
        failed = self.cached_failure(name, sha256)
        if failed:
            return failed
        rec = recipe(name, self.table)
        if rec.known:
            return None
        path, _ = self.fetch(url, sha256)
        try:
            native = native_sources(path)
        except (tarfile.TarError, zipfile.BadZipFile, OSError) as e:
            return f"its sdist {filename} cannot be read ({e})"
        if native:
            more = f" and {len(native) - 3} more" if len(native) > 3 else ""
            return (f"its sdist {filename} has compiled sources ({', '.join(native[:3])}{more}) "
                    "and pyworkers knows no switch that builds it without them: it needs a "
                    "compiler for the sandbox")
        return None

    def build(self, name: str, version: str, filename: str, url: str,
              sha256: str | None) -> BuiltWheel:
        """Build (or take from the cache) the pure wheel of ``name`` ``version`` from its sdist.

        Raises :class:`SdistBuildError` (the failure is recorded) or
        :class:`~pyworkers.packages.errors.NetworkError` /
        :class:`~pyworkers.packages.errors.HashMismatchError` for the download.
        """
        rec = recipe(name, self.table)
        path, sha = self.fetch(url, sha256)
        entry = self._entry_path(sha)
        entry.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(entry) + ".lock", timeout=LOCK_TIMEOUT):
            e = self._read(sha, rec)
            if e is None and sha in _SESSION_FAILURES:
                e = {"ok": False, "reason": _SESSION_FAILURES[sha]}
            if e is None:
                e = self._build_locked(name, version, filename, path, sha, rec)
                if e.get("transient"):
                    _SESSION_FAILURES[sha] = e["reason"]
                else:
                    self._write(sha, e)
        if not e.get("ok"):
            raise self._error(name, version, filename, e["reason"], e.get("log", ""))
        wpath = self.wheels.lookup(e["sha256"])
        assert wpath is not None
        return BuiltWheel(e["wheel"], e["sha256"], wpath.stat().st_size, wpath, sha)

    @staticmethod
    def _error(name: str, version: str, filename: str, reason: str,
               log: str = "") -> SdistBuildError:
        return SdistBuildError(
            f"{name} {version}: cannot build a pure-Python wheel from its sdist {filename}: "
            f"{reason}", project=name, version=version, sdist=filename, reason=reason,
            detail=log)

    def _build_locked(self, name: str, version: str, filename: str, path: Path, sha: str,
                      rec: Recipe) -> dict:
        base = {"format": ENTRY_FORMAT, "recipe": rec.digest, "sdist": filename,
                "project": name, "version": version, "env": dict(rec.env)}
        if not rec.known:
            try:
                native = native_sources(path)
            except (tarfile.TarError, zipfile.BadZipFile, OSError) as e:
                return {**base, "ok": False, "reason": f"its sdist cannot be read ({e})"}
            if native:
                return {**base, "ok": False,
                        "reason": f"compiled sources ({', '.join(native[:3])}) and no known "
                                  "switch to build without them: it needs a compiler for the "
                                  "sandbox"}
        self.progress.status(f"building {name} {version} from {filename} (pure Python)")
        with tempfile.TemporaryDirectory(prefix="pyworkers-build-") as tmp:
            tmpd = Path(tmp)
            try:
                src = _extract(path, tmpd / "src")
            except (tarfile.TarError, zipfile.BadZipFile, OSError, ValueError) as e:
                return {**base, "ok": False, "reason": f"its sdist cannot be unpacked ({e})"}
            out = tmpd / "dist"
            env = {**os.environ, **dict(rec.env), "SOURCE_DATE_EPOCH": _EPOCH,
                   "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            if self.index_url:
                env["PIP_INDEX_URL"] = self.index_url
            cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(src)]
            try:
                r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                   timeout=BUILD_TIMEOUT, cwd=tmpd)
            except subprocess.TimeoutExpired:
                return {**base, "ok": False, "transient": True,
                        "reason": f"the build took over {BUILD_TIMEOUT} s"}
            log = "\n".join((r.stdout + r.stderr).strip().splitlines()[-25:])
            wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
            if r.returncode != 0 or len(wheels) != 1:
                return {**base, "ok": False, "log": log, "transient": True,
                        "reason": f"`python -m build --wheel` failed (exit {r.returncode}; "
                                  "the end of its output is above)"}
            try:
                wn, wv, _, _ = parse_wheel_filename(wheels[0].name)
            except Exception as e:  # noqa: BLE001 - report any bad name
                return {**base, "ok": False, "reason": f"the build wrote {wheels[0].name} ({e})"}
            if wn != canonicalize_name(name):
                return {**base, "ok": False, "reason": f"the build made a wheel for {wn}"}
            bad = check_pure(wheels[0])
            if bad:
                return {**base, "ok": False, "reason": bad, "log": log}
            fname, data = retag_pure(wheels[0], wn, str(wv))
        p = self.wheels.store_bytes(data)
        return {**base, "ok": True, "wheel": fname, "sha256": p.stem, "size": len(data)}


def alternatives(name: str, target_name: str, newest_wheel: str | None) -> str:
    """The ways out when ``name`` has neither a usable wheel nor a buildable sdist."""
    opts = []
    if newest_wheel:
        opts.append(f"require {name}=={newest_wheel} (the newest version with a wheel for "
                    f"{target_name})")
    opts.append("build a wasm wheel with pyodide-build (`pyodide build`) and list its path in "
                "requirements.txt")
    opts.append("serve the release's own packages with --package-base-url if its lock has "
                f"{name}")
    opts.append(f"drop {name} from the requirements")
    return "alternatives: " + "; ".join(opts)
