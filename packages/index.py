"""The package index: configuration, the simple API (PEP 691 JSON and PEP 503 HTML), metadata.

* :func:`index_config` finds the index URL in the user's configuration, never in our code:
  ``--index-url`` (argument), ``$PIP_INDEX_URL``, pip's configuration (``install.index-url`` /
  ``global.index-url`` from pip's config files), else pip's own default index (read from the
  installed pip). Extra indexes (``--extra-index-url``, ``$PIP_EXTRA_INDEX_URL``, pip config) are
  searched too; a ``file://`` index whose directory does not exist is skipped quietly.
* :class:`PackageIndex` fetches project pages (``Accept`` prefers PEP 691 JSON, takes PEP 503
  HTML) and maps both to :class:`IndexFile` records, including PEP 700 ``upload-time``, PEP 592
  ``yanked`` and PEP 658/714 ``core-metadata``. Pages are cached per run in memory and on disk
  for ``ttl`` seconds (parsed, a few hundred bytes per file).
* Wheel metadata (``METADATA``) comes from the PEP 658 ``.metadata`` file when the index offers
  one (hash-checked), else from the wheel itself by HTTP range requests (the zip's central
  directory and one member, like pip's lazy wheel), else by downloading the wheel into the
  content-addressed cache. Metadata is cached on disk by the wheel's sha256.
* Every request is retried a bounded number of times (``RETRIES``) on connection errors, 429
  and 5xx, then fails with :class:`~pyworkers.packages.errors.NetworkError` naming the URL.

This module holds the configuration and :class:`PackageIndex`; the records and page parsers
are in :mod:`~pyworkers.packages.simple_api`, the HTTP client (retries) in
:mod:`~pyworkers.packages.http_client` and the range-request metadata reader in
:mod:`~pyworkers.packages.lazy_wheel`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
from packaging.utils import canonicalize_name

from .errors import IndexConfigError, PackagesError
from .http_client import Http
from .lazy_wheel import RangeFile, RangeUnsupported, metadata_from_zip
from .simple_api import IndexFile, parse_simple_html, parse_simple_json

#: ``Accept`` header for project pages: PEP 691 JSON preferred, PEP 503 HTML accepted.
ACCEPT = ("application/vnd.pypi.simple.v1+json, "
          "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01")
#: Bytes fetched from the end of a wheel in the first range request for its metadata.
TAIL_BYTES = 64 * 1024
#: Default seconds an index page stays valid in the on-disk cache.
PAGE_TTL = 600


# --------------------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Where packages come from.

    Attributes: ``index_url`` (simple API root), ``extra_index_urls``, ``cert`` (CA bundle path
    from pip's ``cert`` setting, ``None`` for the default), ``origin`` (where ``index_url`` was
    found, e.g. ``"PIP_INDEX_URL"``), ``no_index`` (indexes disabled).
    """

    index_url: str
    extra_index_urls: tuple[str, ...] = ()
    cert: str | None = None
    origin: str = "argument"
    no_index: bool = False

    @property
    def urls(self) -> tuple[str, ...]:
        """All index URLs searched, primary first (empty with ``no_index``)."""
        if self.no_index:
            return ()
        return tuple(dict.fromkeys((self.index_url, *self.extra_index_urls)))


def _pip_config() -> dict[str, str]:
    """pip's merged configuration (files and ``PIP_*`` environment), ``{}`` if pip is absent."""
    try:
        from pip._internal.configuration import Configuration
    except Exception:  # noqa: BLE001 - pip absent or changed
        return {}
    try:
        conf = Configuration(isolated=False)
        conf.load()
        return {k: v for k, v in conf.items()}
    except Exception:  # noqa: BLE001 - a broken pip config must not break us
        return {}


def _pip_default_index() -> str | None:
    try:
        from pip._internal.models.index import PyPI
    except Exception:  # noqa: BLE001
        return None
    return PyPI.simple_url


def index_config(index_url: str | None = None, extra_index_urls: Iterable[str] | None = None,
                 *, no_index: bool = False) -> IndexConfig:
    """Find the index configuration (order in the module docstring).

    Raises :class:`~pyworkers.packages.errors.IndexConfigError` if no index is configured and
    pip (whose default we use) is not installed.
    """
    conf = _pip_config()

    def get(key: str) -> str | None:
        """``PIP_<KEY>`` if set (even empty), else pip's config files (install, global)."""
        env = "PIP_" + key.upper().replace("-", "_")
        if env in os.environ:
            return os.environ[env]
        for section in ("install", "global"):
            v = conf.get(f"{section}.{key}")
            if v:
                return v
        return None

    origin = "--index-url"
    url = index_url
    if not url and os.environ.get("PIP_INDEX_URL"):
        url, origin = os.environ["PIP_INDEX_URL"], "PIP_INDEX_URL"
    if not url and get("index-url"):
        url, origin = get("index-url"), "pip configuration (index-url)"
    if not url:
        url, origin = _pip_default_index(), "pip's default index"
    if not url and not no_index:
        raise IndexConfigError("no package index configured: pass --index-url URL or set "
                               "PIP_INDEX_URL (pip is not installed, so its default is unknown)")
    if extra_index_urls is None:
        extra_index_urls = (get("extra-index-url") or "").split()
    cert = get("cert")
    return IndexConfig(url or "", tuple(extra_index_urls), cert or None, origin, no_index)


# --------------------------------------------------------------------------- the index

class PackageIndex:
    """Project pages and wheel metadata from the configured indexes.

    ``cache_dir`` holds ``index-pages/`` (parsed pages, ``ttl`` seconds) and ``metadata/`` (by
    wheel sha256). ``wheel_store`` (optional, a callable ``(data: bytes, sha256) -> Path``)
    receives whole wheels downloaded while reading metadata, so they are not fetched twice.
    ``note`` receives one-line notices.
    """

    def __init__(self, config: IndexConfig, *, http: Http, cache_dir: Path | None = None,
                 ttl: float = PAGE_TTL, wheel_lookup: Callable[[str], Path | None] | None = None,
                 wheel_store: Callable[[bytes, str], Path] | None = None,
                 note: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.http = http
        self.cache_dir = cache_dir
        self.ttl = ttl
        self.wheel_lookup = wheel_lookup
        self.wheel_store = wheel_store
        self.note = note or (lambda m: None)
        self._pages: dict[str, list[IndexFile]] = {}
        self._lock = threading.Lock()
        self.skipped_indexes: list[str] = []

    # pages -------------------------------------------------------------------
    def files(self, project: str) -> list[IndexFile]:
        """All files of ``project`` (canonicalised) on every configured index, in page order.

        A project missing from an index (HTTP 404) contributes nothing. Raises
        :class:`NetworkError` when an index cannot be reached.
        """
        project = canonicalize_name(project)
        with self._lock:
            if project in self._pages:
                return self._pages[project]
        out: list[IndexFile] = []
        for root in self.config.urls:
            out += self._page(root, project)
        with self._lock:
            self._pages[project] = out
        return out

    def _page(self, root: str, project: str) -> list[IndexFile]:
        page_url = root.rstrip("/") + "/" + project + "/"
        if root.startswith("file:"):
            return self._file_page(root, project, page_url)
        cached = self._disk_get(page_url)
        if cached is not None:
            return cached
        r = self.http.request("GET", page_url, headers={"Accept": ACCEPT}, ok=(200, 404))
        if r.status_code == 404:
            files: list[IndexFile] = []
        else:
            files = self._parse(r, root)
        self._disk_put(page_url, files)
        return files

    def _parse(self, r: httpx.Response, root: str) -> list[IndexFile]:
        ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
        url = str(r.url)
        text = r.text
        if ctype.endswith("json") or (not ctype.endswith("html") and text.lstrip()[:1] == "{"):
            try:
                return parse_simple_json(json.loads(text), url, root)
            except ValueError as e:
                raise PackagesError(f"{url}: invalid PEP 691 JSON page: {e}") from None
        return parse_simple_html(text, url, root)

    def _file_page(self, root: str, project: str, page_url: str) -> list[IndexFile]:
        rootdir = Path(urllib.request.url2pathname(urllib.parse.urlsplit(root).path))
        if not rootdir.is_dir():
            if root not in self.skipped_indexes:
                self.skipped_indexes.append(root)
            return []
        d = rootdir / project
        if (d / "index.html").is_file():
            return parse_simple_html((d / "index.html").read_text("utf-8"),
                                     (d / "index.html").as_uri(), root)
        if d.is_dir():
            return [IndexFile(p.name, p.as_uri(), index=root) for p in sorted(d.iterdir())
                    if p.is_file()]
        return []

    def _disk_path(self, url: str) -> Path | None:
        if self.cache_dir is None or self.ttl <= 0:
            return None
        return self.cache_dir / "index-pages" / (hashlib.sha256(url.encode()).hexdigest() + ".json")

    def _disk_get(self, url: str) -> list[IndexFile] | None:
        p = self._disk_path(url)
        if p is None:
            return None
        try:
            d = json.loads(p.read_text())
            if d.get("url") != url or time.time() - float(d["fetched"]) > self.ttl:
                return None
            return [IndexFile.from_json(f) for f in d["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _disk_put(self, url: str, files: list[IndexFile]) -> None:
        p = self._disk_path(url)
        if p is None:
            return
        data = json.dumps({"url": url, "fetched": time.time(),
                           "files": [f.to_json() for f in files]}, separators=(",", ":"))
        _atomic_write(p, data.encode())

    # metadata ----------------------------------------------------------------
    def metadata(self, project: str, f: IndexFile) -> bytes:
        """The core metadata (``METADATA`` file bytes) of wheel ``f`` of ``project``.

        Order: disk cache (by sha256) -> cached wheel -> PEP 658 ``.metadata`` (hash checked)
        -> range requests -> whole download. Raises :class:`NetworkError` or
        :class:`PackagesError` (bad wheel, hash mismatch of the ``.metadata`` file).
        """
        cpath = (self.cache_dir / "metadata" / f"{f.sha256}.metadata"
                 if self.cache_dir is not None and f.sha256 else None)
        if cpath is not None and cpath.is_file():
            return cpath.read_bytes()
        data = self._metadata_uncached(project, f)
        if cpath is not None:
            _atomic_write(cpath, data)
        return data

    def _metadata_uncached(self, project: str, f: IndexFile) -> bytes:
        if f.sha256 and self.wheel_lookup is not None:
            p = self.wheel_lookup(f.sha256)
            if p is not None:
                with zipfile.ZipFile(p) as zf:
                    return metadata_from_zip(zf, project)
        if f.url.startswith("file:"):
            path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(f.url).path))
            with zipfile.ZipFile(path) as zf:
                return metadata_from_zip(zf, project)
        if f.core_metadata:
            r = self.http.request("GET", f.url + ".metadata")
            want = f.core_metadata.get("sha256") if isinstance(f.core_metadata, dict) else None
            if want and hashlib.sha256(r.content).hexdigest() != want:
                raise PackagesError(f"{f.url}.metadata: sha256 differs from the index's "
                                    "(PEP 658): refusing it")
            return r.content
        try:
            return self._metadata_by_range(project, f)
        except RangeUnsupported:
            pass
        r = self.http.request("GET", f.url)
        return self._metadata_from_whole(project, f, r.content)

    def _metadata_by_range(self, project: str, f: IndexFile) -> bytes:
        r = self.http.request("GET", f.url, headers={"Range": f"bytes=-{TAIL_BYTES}"},
                              ok=(200, 206, 416))
        if r.status_code == 200:  # no range support: we have the whole file
            return self._metadata_from_whole(project, f, r.content)
        if r.status_code == 416:
            raise RangeUnsupported("416")
        m = re.match(r"bytes (\d+)-(\d+)/(\d+)", r.headers.get("content-range", ""))
        if not m:
            raise RangeUnsupported("no content-range")
        length = int(m.group(3))
        rf = RangeFile(self.http, f.url, length, r.content)
        try:
            with zipfile.ZipFile(rf) as zf:  # type: ignore[arg-type]
                return metadata_from_zip(zf, project)
        except zipfile.BadZipFile as e:
            raise PackagesError(f"{f.url}: not a valid wheel (zip): {e}") from None

    def _metadata_from_whole(self, project: str, f: IndexFile, data: bytes) -> bytes:
        sha = hashlib.sha256(data).hexdigest()
        if f.sha256 and sha != f.sha256:
            raise PackagesError(f"{f.url}: sha256 {sha} differs from the index's {f.sha256}")
        if self.wheel_store is not None:
            self.wheel_store(data, sha)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                return metadata_from_zip(zf, project)
        except zipfile.BadZipFile as e:
            raise PackagesError(f"{f.url}: not a valid wheel (zip): {e}") from None


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
