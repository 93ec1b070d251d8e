"""The content-addressed wheel cache, shared between deployments and safe for concurrent use.

Layout under the cache root (``$PYWORKERS_CACHE_DIR`` or platformdirs' user cache dir for
``pyworkers``): ``packages/wheels/sha256/<first 2 hex>/<sha256>.whl``. A wheel is written to a
temporary file in the same directory while its sha256 is computed, compared with the pinned
digest, and published with ``os.replace`` under a ``filelock`` lock (``<entry>.lock``): another
process either sees the complete file or none. On a digest mismatch the temporary file is deleted
and :class:`~pyworkers.packages.errors.HashMismatchError` raised, so nothing half-written or
unverified is ever in the cache.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import filelock
from pyworkers.paths import cache_root  # noqa: F401  (re-exported)

from .errors import HashMismatchError
from .http_client import Http

#: Seconds to wait for another process holding an entry's lock.
LOCK_TIMEOUT = 900


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class WheelCache:
    """Wheels by sha256 under ``root`` (``<cache root>/packages``)."""

    #: directory under ``root`` and file suffix of the entries
    subdir = "wheels"
    suffix = ".whl"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / self.subdir / "sha256"

    def path(self, sha256: str) -> Path:
        """Where the wheel with this digest lives (it may not exist)."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.dir / sha256[:2] / f"{sha256}{self.suffix}"

    def _lock(self, path: Path) -> filelock.FileLock:
        path.parent.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT)

    def lookup(self, sha256: str, *, verify: bool = False) -> Path | None:
        """The cached wheel, or ``None``. With ``verify`` the file is re-hashed and a corrupt
        entry deleted (then ``None``)."""
        p = self.path(sha256)
        if not p.is_file():
            return None
        if verify and sha256_file(p) != sha256:
            with self._lock(p):
                if p.is_file() and sha256_file(p) != sha256:
                    p.unlink()
            return None
        return p

    def store_bytes(self, data: bytes, sha256: str | None = None) -> Path:
        """Store ``data`` (a whole wheel); its digest must equal ``sha256`` when given."""
        actual = hashlib.sha256(data).hexdigest()
        if sha256 and actual != sha256:
            raise HashMismatchError(f"wheel data has sha256 {actual}, expected {sha256}",
                                    url="", expected=sha256, actual=actual)
        p = self.path(actual)
        if p.is_file():
            return p
        with self._lock(p):
            if not p.is_file():
                self._publish(p, lambda f: f.write(data))
        return p

    def fetch(self, http: Http, url: str, sha256: str | None, *,
              on_total: Callable[[int | None], None] | None = None,
              on_bytes: Callable[[int], None] | None = None) -> tuple[Path, str]:
        """Download ``url`` into the cache unless an entry with ``sha256`` exists.

        Returns ``(path, sha256)``. Raises :class:`HashMismatchError` (download deleted) or
        :class:`~pyworkers.packages.errors.NetworkError` (after bounded retries).
        """
        if sha256:
            p = self.lookup(sha256)
            if p is not None:
                return p, sha256
            with self._lock(self.path(sha256)):
                p = self.lookup(sha256)
                if p is not None:
                    return p, sha256
                return self._download(http, url, sha256, on_total, on_bytes)
        return self._download(http, url, None, on_total, on_bytes)

    def _download(self, http: Http, url: str, sha256: str | None, on_total, on_bytes
                  ) -> tuple[Path, str]:
        tmpdir = self.dir / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmpdir, prefix=".dl-", suffix=self.suffix)
        try:
            with os.fdopen(fd, "w+b") as f:
                actual, _ = http.stream_to(url, f, on_bytes=on_bytes, on_total=on_total)
                f.flush()
                os.fsync(f.fileno())
            if sha256 and actual != sha256:
                raise HashMismatchError(
                    f"hash mismatch for {url}: expected sha256 {sha256}, got {actual}; the "
                    "download was deleted", url=url, expected=sha256, actual=actual)
            dest = self.path(actual)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if sha256:  # caller holds the entry lock
                os.replace(tmp, dest)
            else:
                with self._lock(dest):
                    os.replace(tmp, dest)
            return dest, actual
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _publish(self, dest: Path, write: Callable) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
