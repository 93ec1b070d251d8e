"""The app directory -> the deployment's read-only copy of it, under limits.

:func:`copy_app` scans the directory first (``lstat`` only: nothing is read), refusing it before
anything is copied when it is too large (``PYWORKERS_APP_MAX_BYTES``, default 256 MiB) or holds
too many files (``PYWORKERS_APP_MAX_FILES``, default 20,000), or when a symbolic link loops or
points out of the app directory. Then every file is streamed (1 MiB chunks) into the copy while
it is hashed, made read-only, and given the source's modification time, so a redeploy of
unchanged files keeps their ``Last-Modified``/``ETag``. Symbolic links inside the app are
followed (copied as what they point to) and listed in one note.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import stat as st
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["AppDirError", "AppLimits", "copy_app", "IGNORED_DIRS", "IGNORED_FILES", "IGNORED_SUFFIXES"]

#: Directories never copied from the app (version control, caches, virtual environments).
IGNORED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "venv", "node_modules",
                          ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".idea",
                          ".vscode", ".pyworkers"})
#: File suffixes never copied from the app.
IGNORED_SUFFIXES = (".pyc", ".pyo")
IGNORED_FILES = frozenset({".DS_Store"})
CHUNK = 1 << 20


class AppDirError(Exception):
    """The app directory cannot be deployed as it is; ``str(e)`` is one short line naming the
    path and the fix."""


@dataclasses.dataclass(frozen=True)
class AppLimits:
    """Limits of an app directory: ``max_bytes`` (total size of its files, bytes) and
    ``max_files``. :meth:`from_env` reads ``PYWORKERS_APP_MAX_BYTES``/``PYWORKERS_APP_MAX_FILES``."""

    max_bytes: int = 256 << 20
    max_files: int = 20_000

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "AppLimits":
        env = os.environ if environ is None else environ
        kw = {}
        for field, var in (("max_bytes", "PYWORKERS_APP_MAX_BYTES"), ("max_files", "PYWORKERS_APP_MAX_FILES")):
            raw = env.get(var)
            if not raw:
                continue
            try:
                value = int(raw)
            except ValueError:
                value = 0
            if value <= 0:
                raise AppDirError(f"{var}={raw!r}: expected a positive integer")
            kw[field] = value
        return cls(**kw)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclasses.dataclass
class _Plan:
    dirs: list[str] = dataclasses.field(default_factory=list)
    files: list[tuple[str, str, os.stat_result]] = dataclasses.field(default_factory=list)  # rel, real, stat
    links: list[str] = dataclasses.field(default_factory=list)
    total: int = 0


def _scan(src: Path, excluded: list[Path], limits: AppLimits, note: Callable[[str], None] | None) -> _Plan:
    plan = _Plan()
    root = str(src)

    def inside(real: str) -> bool:
        return real == root or real.startswith(root.rstrip(os.sep) + os.sep)

    def walk(real_dir: str, rel: str, stack: tuple[str, ...]) -> None:
        try:
            names = sorted(os.listdir(real_dir))
        except OSError as e:
            raise AppDirError(f"{rel or '.'}: cannot list the directory ({e.strerror})") from None
        for name in names:
            r = f"{rel}{name}"
            path = os.path.join(real_dir, name)
            try:
                lst = os.lstat(path)
            except OSError:
                continue
            real = path
            if st.S_ISLNK(lst.st_mode):
                target = os.readlink(path)
                try:
                    real = os.path.realpath(path, strict=True)
                except OSError as e:
                    if e.errno == 40 or "loop" in str(e).lower():  # ELOOP
                        raise AppDirError(f"{r}: symbolic link loop ({r} -> {target}): remove the link") from None
                    if note:
                        note(f"skipped {r}: a symbolic link to {target}, which does not exist")
                    continue
                except RuntimeError:  # older Pythons report loops this way
                    raise AppDirError(f"{r}: symbolic link loop ({r} -> {target}): remove the link") from None
                if not inside(real):
                    raise AppDirError(f"{r}: a symbolic link to {real}, outside the app directory "
                                      "(the sandbox only sees the app): copy what it points to into "
                                      "the app or remove the link")
                plan.links.append(f"{r} -> {target}")
                try:
                    lst = os.stat(real)
                except OSError:
                    continue
            if any(Path(real) == x or Path(real).is_relative_to(x) for x in excluded):
                continue
            if st.S_ISDIR(lst.st_mode):
                if name in IGNORED_DIRS:
                    continue
                if real in stack:
                    raise AppDirError(f"{r}: symbolic link loop ({r} leads back to "
                                      f"{os.path.relpath(real, root)}): remove the link")
                plan.dirs.append(r)
                walk(real, r + "/", stack + (real,))
            elif st.S_ISREG(lst.st_mode):
                if name in IGNORED_FILES or name.endswith(IGNORED_SUFFIXES):
                    continue
                plan.files.append((r, real, lst))
                plan.total += lst.st_size
                if plan.total > limits.max_bytes:
                    raise AppDirError(f"the app directory holds more than {_mib(limits.max_bytes)} of files "
                                      f"(reached at {r}, {_mib(lst.st_size)}): move large data out of "
                                      "the app or raise PYWORKERS_APP_MAX_BYTES")
                if len(plan.files) > limits.max_files:
                    raise AppDirError(f"the app directory holds more than {limits.max_files} files "
                                      f"(reached at {r}): raise PYWORKERS_APP_MAX_FILES if this is expected")
            elif note:
                note(f"skipped {r}: not a regular file or directory")

    walk(root, "", (root,))
    return plan


def copy_app(src: Path, dest: Path, *, exclude: Sequence[Path] = (),
             note: Callable[[str], None] | None = None, limits: AppLimits | None = None) -> dict:
    """Copy the app directory ``src`` to ``dest`` (which must not exist) and hash it.

    Skips :data:`IGNORED_DIRS`, :data:`IGNORED_FILES`, ``*.pyc``/``*.pyo`` and any path in
    ``exclude`` (e.g. a store inside the app directory). Symbolic links inside ``src`` are
    copied as the file or directory they point to and listed in one ``note``. Files are
    copied read-only with their modification times (ns). ``limits`` default to
    :meth:`AppLimits.from_env`.

    Returns ``{"hash": "sha256:<hex>", "files": int, "bytes": int}``; the hash covers every
    copied file's relative POSIX path and content, in sorted order. Raises
    :class:`AppDirError` (nothing copied) for a symbolic link loop, a link out of the app, or
    a directory over its limits; ``OSError`` if a file cannot be read.
    """
    src = Path(src).resolve()
    excluded = [Path(p).resolve() for p in exclude]
    plan = _scan(src, excluded, limits or AppLimits.from_env(), note)
    if plan.links and note:
        shown = ", ".join(plan.links[:10]) + (f" and {len(plan.links) - 10} more" if len(plan.links) > 10 else "")
        note(f"symbolic links in the app (copied as what they point to): {shown}")
    dest.mkdir(parents=True)
    for r in plan.dirs:
        (dest / r).mkdir()
    entries: list[tuple[str, str]] = []
    total = 0
    for r, real, lst in plan.files:
        out = dest / r
        h = hashlib.sha256()
        n = 0
        with open(real, "rb") as fin, open(out, "wb") as fout:
            while n <= lst.st_size and (chunk := fin.read(min(CHUNK, lst.st_size - n + 1))):
                n += len(chunk)
                h.update(chunk)
                fout.write(chunk)
        if n != lst.st_size:
            raise AppDirError(f"{r}: changed while it was copied ({lst.st_size} -> {n}+ bytes): deploy again")
        os.chmod(out, 0o555 if lst.st_mode & 0o111 else 0o444)
        os.utime(out, ns=(lst.st_atime_ns, lst.st_mtime_ns))
        entries.append((r, h.hexdigest()))
        total += n
    h = hashlib.sha256()
    for r, digest in entries:
        h.update(r.encode() + b"\0" + digest.encode() + b"\n")
    return {"hash": "sha256:" + h.hexdigest(), "files": len(entries), "bytes": total}
