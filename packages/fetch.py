"""Download a resolution's wheels into the content-addressed cache (sha256-verified).

Wheels already cached are re-hashed (a corrupt entry is deleted and fetched again). Downloads
run on a few threads and report bytes to ``progress``. A ``"lock"`` pin whose package base URL
fails (network error or HTTP error after the bounded retries) falls back to the index: the same
project and version, the best wheel for the target; this is said once. A hash mismatch is never
retried elsewhere: the download is deleted and
:class:`~pyworkers.packages.errors.HashMismatchError` raised.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .cache import WheelCache, cache_root
from .errors import HashMismatchError, NetworkError, NoCompatibleWheelError
from .http_client import Http
from .index import PackageIndex, index_config
from .progress import Progress, as_progress
from .resolver import PinnedWheel, Resolution
from .target import Target

#: Parallel downloads.
WORKERS = 4


@dataclasses.dataclass(frozen=True)
class CachedWheel:
    """A pinned wheel and its verified file in the cache. ``wheel`` is the pin actually used
    (a ``"lock"`` pin becomes an ``"index"`` pin when the lock's URL failed)."""

    wheel: PinnedWheel
    path: Path


def _target_of(resolution: Resolution) -> Target | None:
    from pyworkers.compat.releases import UnknownReleaseError, get_release

    v = resolution.target.get("pyodide_version")
    try:
        return Target.of(get_release(v)) if v else None
    except UnknownReleaseError:
        return None


class _Fallback:
    """Index lookups for lock pins whose base URL failed; says so once."""

    def __init__(self, resolution: Resolution, http: Http, progress: Progress,
                 index_url: str | None, cache_root_dir: Path) -> None:
        self.resolution, self.http, self.progress = resolution, http, progress
        self.index_url, self.root = index_url, cache_root_dir
        self._lock = threading.Lock()
        self._said = False
        self._index: PackageIndex | None = None
        self.failed_base = False

    def index(self) -> PackageIndex:
        with self._lock:
            if self._index is None:
                urls = list(self.resolution.index_urls)
                if self.index_url:
                    cfg = index_config(self.index_url)
                elif urls:
                    cfg = index_config(urls[0], urls[1:])
                else:
                    cfg = index_config()
                self._index = PackageIndex(cfg, http=self.http, cache_dir=self.root)
            return self._index

    def say(self, w: PinnedWheel, err: NetworkError) -> None:
        with self._lock:
            self.failed_base = True
            if not self._said:
                self._said = True
                self.progress.note(f"the release's package base URL failed ({err.message}); "
                                   "fetching the lock's pins from the package index instead")

    def replacement(self, w: PinnedWheel, err: NetworkError) -> PinnedWheel:
        target = _target_of(self.resolution)
        best = None
        if target is not None:
            for f in self.index().files(w.name):
                if not f.filename.endswith(".whl") or f.yanked is not False or not f.sha256:
                    continue
                try:
                    n, v, _, tags = parse_wheel_filename(f.filename)
                except (InvalidWheelFilename, InvalidVersion):
                    continue
                if n != w.name or v != Version(w.version):
                    continue
                rank = target.wheel_rank(tags)
                if rank is not None and (best is None or rank < best[0]):
                    best = (rank, f)
        if best is None:
            tname = target.name if target else "this runtime"
            tag = target.platform_tag if target else "?"
            raise NoCompatibleWheelError(
                f"{w.name} {w.version}: the release lock's wheel could not be downloaded "
                f"({err.url}) and the package index has no wheel for {tname} ({tag}) at that "
                "version; pass --package-base-url URL (a mirror of the release's packages) or "
                "re-resolve", project=w.name, target=tname, platform_tag=tag)
        f = best[1]
        return dataclasses.replace(w, source="index", filename=f.filename, url=f.url,
                                   sha256=f.sha256, size=f.size, upload_time=f.upload_time,
                                   index=f.index)


def download(resolution: Resolution | Sequence[PinnedWheel],
             cache_dir: str | os.PathLike | None = None, *,
             transport: Any = None, progress: Any = None, index_url: str | None = None,
             workers: int = WORKERS) -> list[CachedWheel]:
    """Make sure every wheel of ``resolution`` is in the cache, verified; return them in order.

    Args:
        resolution: a :class:`~pyworkers.packages.resolver.Resolution` or a list of pins.
        cache_dir: cache root (default ``$PYWORKERS_CACHE_DIR`` or the user cache dir); wheels
            live in ``<root>/packages/wheels/sha256/``.
        transport: an ``httpx`` transport replacing the network (tests).
        progress: ``None``, a ``(str) -> None`` callable or a ``Progress`` (download bars).
        index_url: index for the lock fallback (default: the resolution's indexes).
        workers: parallel downloads.

    Raises :class:`HashMismatchError` (the download is deleted), :class:`NetworkError` (after
    bounded retries, naming the URL), :class:`NoCompatibleWheelError` (a lock pin that neither
    its base URL nor the index can supply).
    """
    prog = as_progress(progress)
    res = resolution if isinstance(resolution, Resolution) else Resolution(
        tuple(resolution), {})
    root = cache_root(cache_dir) / "packages"
    cache = WheelCache(root)
    cfg_cert = None
    try:
        cfg_cert = index_config(res.index_urls[0] if res.index_urls else None).cert
    except Exception:  # noqa: BLE001 - no index config: default TLS settings
        pass
    http = Http(transport=transport, cert=cfg_cert)
    fb = _Fallback(res, http, prog, index_url, root)
    build_lock = threading.Lock()

    def one(w: PinnedWheel) -> CachedWheel:
        if w.sha256:
            p = cache.lookup(w.sha256, verify=True)
            if p is not None:
                return CachedWheel(w, p)
        if w.source == "sdist" and w.sdist is not None:
            return rebuild(w)
        if w.source == "lock" and fb.failed_base:
            w = fb.replacement(w, NetworkError("base URL failed earlier", w.url))
            return fetch(w)
        try:
            return fetch(w)
        except NetworkError as e:
            if w.source != "lock":
                raise
            fb.say(w, e)
            return fetch(fb.replacement(w, e))

    def rebuild(w: PinnedWheel) -> CachedWheel:
        # A wheel built from an sdist is not downloadable: build it again (deterministic bytes).
        from .sdist import SdistBuilder

        with build_lock:
            b = SdistBuilder(root, http, prog, index_url=index_url).build(
                w.name, w.version, w.sdist.filename, w.sdist.url, w.sdist.sha256)
        if b.sha256 != w.sha256:
            raise HashMismatchError(
                f"{w.name} {w.version}: rebuilding {w.sdist.filename} gave a wheel with sha256 "
                f"{b.sha256}, but the lock pins {w.sha256}: re-resolve (delete pylock.toml)",
                url=w.sdist.url, expected=w.sha256, actual=b.sha256)
        return CachedWheel(w, b.path)

    def fetch(w: PinnedWheel) -> CachedWheel:
        if w.sha256:
            p = cache.lookup(w.sha256, verify=True)
            if p is not None:
                return CachedWheel(w, p)
        started = []

        def total(n: int | None) -> None:
            if started:  # a retry: restart the bar
                prog.download_end(w.filename)
            started.append(True)
            prog.download_start(w.filename, n or w.size)

        try:
            path, _ = cache.fetch(http, w.url, w.sha256 or None, on_total=total,
                                  on_bytes=lambda n: prog.download_advance(w.filename, n))
        finally:
            if started:
                prog.download_end(w.filename)
        return CachedWheel(w, path)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            futs = [ex.submit(one, w) for w in res.wheels]
            out = []
            first_err: BaseException | None = None
            for f in futs:
                try:
                    out.append(f.result())
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    first_err = first_err or e
            if first_err is not None:
                raise first_err
        return out
    finally:
        http.close()
