"""Install wheels into a site-packages layer (the directory the engine mounts read-only).

Follows the binary distribution format (PEP 427 / the wheel spec):

* every file is checked against the wheel's ``RECORD`` (sha256 and size) while unpacking; a
  mismatch, an absolute or ``..`` path, or two wheels writing the same file is a
  :class:`~pyworkers.packages.errors.LayerError`;
* ``<name>-<version>.data/<key>/`` directories are honoured: ``purelib`` and ``platlib`` go to
  the layer root (it *is* site-packages); ``scripts``, ``data`` and ``headers`` go to
  ``.pyworkers-data/{scripts,data,headers/<project>}`` inside the layer (a dot-directory, so it
  can never shadow an importable package), which is where the sandbox's ``sys.prefix``-relative
  data lives;
* ``RECORD`` is kept and rewritten with the installed paths (relative to the layer root), and an
  ``INSTALLER`` file (``pyworkers``) is added and recorded, as installers must;
* no console-script launchers are generated (the sandbox starts no processes) and nothing is
  byte-compiled (the host's Python is not the sandbox's).

The layer is built in a temporary sibling directory and swapped in with renames, so readers see
the old layer or the new one, never a half-written one. A manifest ``.pyworkers-layer.json``
(``{"format": 1, "target": {...}, "wheels": [{"name", "version", "sha256", "filename"}]}``)
marks the directory as a layer (only such a directory, or an empty one, is ever replaced).
Limits (against zip bombs and oversized layers, checked from the zip's central directory before
anything is written; members are streamed in 1 MiB chunks, never read whole): a wheel's
uncompressed size (``PYWORKERS_WHEEL_MAX_BYTES``, default 1 GiB), its file count
(``PYWORKERS_WHEEL_MAX_FILES``, default 50,000), its compression ratio and each member's
(``PYWORKERS_WHEEL_MAX_RATIO``, default 100, applied above 1 MiB) and the whole layer's size
(``PYWORKERS_LAYER_MAX_BYTES``, default 2 GiB); see :class:`InstallLimits`. zipfile never
inflates a member past its declared size, so checking the declared sizes bounds what is written.
Shared-library needs of the installed ``.so`` files are listed with ``auditwheel-emscripten``
(``show_dylib``) and those not provided inside the layer are reported.
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from .fetch import CachedWheel, download
from .errors import LayerError
from .progress import as_progress
from .resolver import Resolution

MANIFEST = ".pyworkers-layer.json"
CHUNK = 1 << 20
#: below this many uncompressed bytes the compression ratio is not checked
RATIO_FLOOR = 1 << 20


@dataclasses.dataclass(frozen=True)
class InstallLimits:
    """Limits applied while installing wheels (bytes are uncompressed sizes).

    ``max_wheel_bytes``/``max_wheel_files``: one wheel's total size and file count;
    ``max_ratio``: uncompressed/compressed size of a wheel and of each member (checked when
    the uncompressed size is over :data:`RATIO_FLOOR`); ``max_layer_bytes``: all wheels of a
    layer together. :meth:`from_env` reads ``PYWORKERS_WHEEL_MAX_BYTES``,
    ``PYWORKERS_WHEEL_MAX_FILES``, ``PYWORKERS_WHEEL_MAX_RATIO``, ``PYWORKERS_LAYER_MAX_BYTES``.
    """

    max_wheel_bytes: int = 1 << 30
    max_wheel_files: int = 50_000
    max_ratio: float = 100.0
    max_layer_bytes: int = 2 << 30

    ENV = {"max_wheel_bytes": "PYWORKERS_WHEEL_MAX_BYTES", "max_wheel_files": "PYWORKERS_WHEEL_MAX_FILES",
           "max_ratio": "PYWORKERS_WHEEL_MAX_RATIO", "max_layer_bytes": "PYWORKERS_LAYER_MAX_BYTES"}

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "InstallLimits":
        """Defaults overridden by the environment; :class:`LayerError` names a bad variable."""
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        for field, var in cls.ENV.items():
            raw = env.get(var)
            if not raw:
                continue
            try:
                value = float(raw) if field == "max_ratio" else int(raw)
            except ValueError:
                value = 0
            if value <= 0:
                raise LayerError(f"{var}={raw!r}: expected a positive number")
            kw[field] = value
        return cls(**kw)


def _fmt(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def check_wheel_limits(zf: zipfile.ZipFile, wname: str, limits: InstallLimits,
                       wheel_size: int) -> int:
    """Check ``zf``'s central directory against ``limits`` before extracting anything;
    returns the total uncompressed size (bytes). Raises :class:`LayerError` naming the wheel,
    the limit and its variable."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    env = InstallLimits.ENV
    if len(infos) > limits.max_wheel_files:
        raise LayerError(f"{wname}: {len(infos)} files, more than the limit of {limits.max_wheel_files} "
                         f"per wheel (raise {env['max_wheel_files']} if this is expected)")
    total = sum(i.file_size for i in infos)
    if total > limits.max_wheel_bytes:
        raise LayerError(f"{wname}: {_fmt(total)} uncompressed, more than the limit of "
                         f"{_fmt(limits.max_wheel_bytes)} per wheel (raise {env['max_wheel_bytes']} "
                         "if this is expected)")
    if total > RATIO_FLOOR and total > limits.max_ratio * max(1, wheel_size):
        raise LayerError(f"{wname}: unpacks to {_fmt(total)} from {_fmt(wheel_size)} (ratio "
                         f"{total / max(1, wheel_size):.0f}, limit {limits.max_ratio:.0f}): refusing a "
                         f"likely zip bomb (raise {env['max_ratio']} if this is expected)")
    for i in infos:
        if i.file_size > RATIO_FLOOR and i.file_size > limits.max_ratio * max(1, i.compress_size):
            raise LayerError(f"{wname}: {i.filename} unpacks to {_fmt(i.file_size)} from "
                             f"{_fmt(i.compress_size)} (ratio {i.file_size / max(1, i.compress_size):.0f}, "
                             f"limit {limits.max_ratio:.0f}): refusing a likely zip bomb "
                             f"(raise {env['max_ratio']} if this is expected)")
    return total
DATA_DIR = ".pyworkers-data"
INSTALLER = b"pyworkers\n"


@dataclasses.dataclass(frozen=True)
class InstalledLayer:
    """Result of :func:`install_layer`: ``path`` (the site-packages directory), ``wheels``
    (what was installed), ``files`` (number of files written), ``unresolved_libraries``
    (``{".so path in the layer": [needed libraries not found in the layer]}``; the runtime
    itself may still provide them)."""

    path: Path
    wheels: tuple[CachedWheel, ...]
    files: int
    unresolved_libraries: dict[str, list[str]]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _safe(name: str, wheel: str) -> str:
    n = name.replace("\\", "/")
    parts = n.split("/")
    if n.startswith("/") or re.match(r"^[A-Za-z]:", n) or ".." in parts:
        raise LayerError(f"{wheel}: unsafe path {name!r} in the wheel: refusing to install it")
    return posixpath.normpath(n)


def _dist_info(names: list[str], project: str, wheel: str) -> str:
    dirs = {n.split("/", 1)[0] for n in names if "/" in n}
    cands = [d for d in dirs if d.endswith(".dist-info")
             and canonicalize_name(d[:-len(".dist-info")].rsplit("-", 1)[0]) == project]
    if len(cands) != 1:
        raise LayerError(f"{wheel}: expected one {project}-*.dist-info directory, found "
                         f"{sorted(d for d in dirs if d.endswith('.dist-info')) or 'none'}")
    return cands[0]


def install_wheel(wheel_path: Path, root: Path, project: str, *, filename: str | None = None,
                  owners: dict[str, str] | None = None, limits: InstallLimits | None = None,
                  budget: list[int] | None = None) -> int:
    """Unpack one wheel into the layer ``root`` (site-packages); returns the number of files.

    ``owners`` (path -> wheel) detects two wheels writing the same file. ``limits`` (default
    :meth:`InstallLimits.from_env`) are checked before extraction; ``budget`` (``[bytes
    left]``, shared by the wheels of one layer) bounds the layer. Raises :class:`LayerError`
    for a bad, unsafe or oversized wheel (see the module docstring).
    """
    wname = filename or wheel_path.name
    owners = owners if owners is not None else {}
    limits = limits or InstallLimits.from_env()
    project = canonicalize_name(project)
    try:
        zf = zipfile.ZipFile(wheel_path)
    except zipfile.BadZipFile as e:
        raise LayerError(f"{wname}: not a wheel (zip): {e}") from None
    with zf:
        total = check_wheel_limits(zf, wname, limits, os.path.getsize(wheel_path))
        if budget is not None:
            if total > budget[0]:
                raise LayerError(f"{wname}: the layer would exceed {_fmt(limits.max_layer_bytes)} "
                                 f"uncompressed (raise {InstallLimits.ENV['max_layer_bytes']} if this "
                                 "is expected)")
            budget[0] -= total
        infos = [i for i in zf.infolist() if not i.is_dir()]
        names = [i.filename for i in infos]
        di = _dist_info(names, project, wname)
        data_dir = di[:-len(".dist-info")] + ".data"
        try:
            wheel_meta = zf.read(f"{di}/WHEEL").decode("utf-8")
            record_raw = zf.read(f"{di}/RECORD").decode("utf-8")
        except KeyError as e:
            raise LayerError(f"{wname}: missing {e.args[0]}") from None
        m = re.search(r"^Wheel-Version:\s*(\d+)\.", wheel_meta, re.M)
        if not m or m.group(1) != "1":
            raise LayerError(f"{wname}: unsupported Wheel-Version (pyworkers installs 1.x)")
        record: dict[str, tuple[str, str]] = {}
        for row in csv.reader(io.StringIO(record_raw)):
            if row:
                record[posixpath.normpath(row[0])] = (row[1] if len(row) > 1 else "",
                                                      row[2] if len(row) > 2 else "")
        scheme = {
            "purelib": "", "platlib": "",
            "scripts": f"{DATA_DIR}/scripts/", "data": f"{DATA_DIR}/data/",
            "headers": f"{DATA_DIR}/headers/{project}/",
        }
        new_record: list[tuple[str, str, str]] = []
        count = 0
        for info in infos:
            src = _safe(info.filename, wname)
            if src == f"{di}/RECORD" or src.endswith((".dist-info/RECORD.jws",
                                                       ".dist-info/RECORD.p7s")):
                continue
            if src.startswith(data_dir + "/"):
                rest = src[len(data_dir) + 1:]
                key, _, sub = rest.partition("/")
                if key not in scheme or not sub:
                    raise LayerError(f"{wname}: unknown .data directory {key!r} (PEP 427 knows "
                                     "purelib, platlib, scripts, data, headers)")
                dest_rel = _safe(scheme[key] + sub, wname)
            else:
                dest_rel = src
            h, size = record.get(src, ("", ""))
            algo = h.split("=", 1)[0] if h else ""
            if algo and algo != "sha256" and (algo not in hashlib.algorithms_guaranteed
                                              or algo in ("md5", "sha1")):
                raise LayerError(f"{wname}: RECORD uses weak or unknown hash {algo!r}")
            if dest_rel in owners:
                raise LayerError(f"{wname} and {owners[dest_rel]} both install {dest_rel}")
            owners[dest_rel] = wname
            dest = root / dest_rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            sha = hashlib.sha256()
            other = hashlib.new(algo) if algo and algo != "sha256" else None
            n = 0
            with zf.open(info) as fin, open(dest, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    n += len(chunk)
                    if n > info.file_size:  # never more than the central directory declared
                        raise LayerError(f"{wname}: {src} is larger than its zip entry declares")
                    sha.update(chunk)
                    if other is not None:
                        other.update(chunk)
                    fout.write(chunk)
            if h:
                if other is not None:
                    digest = algo + "=" + base64.urlsafe_b64encode(other.digest()).rstrip(b"=").decode()
                else:
                    digest = "sha256=" + base64.urlsafe_b64encode(sha.digest()).rstrip(b"=").decode()
                if digest != h:
                    raise LayerError(f"{wname}: {src} does not match its RECORD hash: the wheel "
                                     "is corrupt or was modified")
            if size and size.isdigit() and int(size) != n:
                raise LayerError(f"{wname}: {src} is {n} bytes, RECORD says {size}")
            mode = (info.external_attr >> 16) & 0o777
            if mode & 0o111:
                dest.chmod(0o755)
            new_record.append((dest_rel, "sha256=" + base64.urlsafe_b64encode(sha.digest()).rstrip(b"=").decode(),
                               str(n)))
            count += 1
        inst = f"{di}/INSTALLER"
        (root / inst).write_bytes(INSTALLER)
        new_record = [r for r in new_record if r[0] != inst]
        new_record.append((inst, _record_hash(INSTALLER), str(len(INSTALLER))))
        new_record.append((f"{di}/RECORD", "", ""))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(new_record)
        (root / di / "RECORD").write_text(buf.getvalue(), encoding="utf-8")
        return count + 2


def _library_needs(root: Path) -> dict[str, list[str]]:
    try:
        from auditwheel_emscripten import show_dylib
        from auditwheel_emscripten.wasm_utils import is_wasm_module
    except Exception:  # noqa: BLE001 - optional check
        return {}
    present = {p.name for p in root.rglob("*.so*")}
    out: dict[str, list[str]] = {}
    for so in root.rglob("*.so"):
        try:
            if not is_wasm_module(so):
                continue
            needed, _ = show_dylib(so)
        except Exception:  # noqa: BLE001 - a malformed module is the engine's problem
            continue
        miss = [n for n in needed if Path(n).name not in present]
        if miss:
            out[so.relative_to(root).as_posix()] = miss
    return out


def install_layer(source: Resolution | Iterable[CachedWheel], dest_dir: str | os.PathLike, *,
                  cache_dir: str | os.PathLike | None = None, transport: Any = None,
                  progress: Any = None, limits: InstallLimits | None = None) -> InstalledLayer:
    """Install every wheel of ``source`` into the site-packages directory ``dest_dir``.

    ``source`` is a :class:`~pyworkers.packages.resolver.Resolution` (downloaded first with
    :func:`~pyworkers.packages.fetch.download`, using ``cache_dir``/``transport``/
    ``progress``) or already-downloaded :class:`~pyworkers.packages.fetch.CachedWheel`\\ s.
    ``dest_dir`` is replaced atomically; it must not exist, be empty, or be a layer written
    before (it has ``.pyworkers-layer.json``). ``limits`` default to
    :meth:`InstallLimits.from_env`. Raises :class:`LayerError`, and whatever ``download`` raises.
    """
    prog = as_progress(progress)
    limits = limits or InstallLimits.from_env()
    budget = [limits.max_layer_bytes]
    if isinstance(source, Resolution):
        wheels = download(source, cache_dir, transport=transport, progress=prog)
        target = source.target
    else:
        wheels = list(source)
        target = {}
    dest = Path(dest_dir).resolve()
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir())
                                                 and not (dest / MANIFEST).is_file())):
        raise LayerError(f"{dest} exists and is not a pyworkers layer: refusing to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        owners: dict[str, str] = {}
        files = 0
        for cw in wheels:
            prog.status(f"installing {cw.wheel.filename}")
            files += install_wheel(cw.path, staging, cw.wheel.name, filename=cw.wheel.filename,
                                   owners=owners, limits=limits, budget=budget)
        manifest = {"format": 1, "target": target,
                    "wheels": [{"name": c.wheel.name, "version": c.wheel.version,
                                "sha256": c.wheel.sha256, "filename": c.wheel.filename}
                               for c in wheels]}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        needs = _library_needs(staging)
        for so, libs in needs.items():
            prog.note(f"{so} needs {', '.join(libs)}, not in the layer (the runtime must "
                      "provide it)")
        staging.chmod(0o755)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(dest, old)
        os.replace(staging, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return InstalledLayer(dest, tuple(wheels), files, needs)
