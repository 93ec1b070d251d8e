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
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
import re
import ssl
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
from packaging.utils import canonicalize_name

from .errors import IndexConfigError, NetworkError, PackagesError

#: Attempts per request (connection errors, HTTP 429 and 5xx are retried).
RETRIES = 3
#: Seconds before the first retry; doubled each time.
BACKOFF = 0.5
#: ``Accept`` header for project pages: PEP 691 JSON preferred, PEP 503 HTML accepted.
ACCEPT = ("application/vnd.pypi.simple.v1+json, "
          "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01")
#: Bytes fetched from the end of a wheel in the first range request for its metadata.
TAIL_BYTES = 64 * 1024
#: Range requests allowed per wheel before downloading it whole.
MAX_RANGE_REQUESTS = 8
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


# --------------------------------------------------------------------------- records

@dataclasses.dataclass(frozen=True)
class IndexFile:
    """One file on a project page (PEP 503/691 with PEP 592, 658/714, 700 fields).

    Attributes: ``filename``; ``url`` (absolute, no fragment); ``sha256`` (hex, or ``None`` if
    the index gives none); ``requires_python`` (specifier text or ``None``); ``upload_time``
    (aware UTC datetime or ``None``); ``core_metadata`` (``False``; ``True``; or the PEP 658 hash
    dict, e.g. ``{"sha256": "..."}``); ``yanked`` (``False`` or the reason, ``""`` if none given);
    ``size`` (bytes or ``None``); ``index`` (the index URL the page came from).
    """

    filename: str
    url: str
    sha256: str | None = None
    requires_python: str | None = None
    upload_time: _dt.datetime | None = None
    core_metadata: bool | dict = False
    yanked: bool | str = False
    size: int | None = None
    index: str = ""

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["upload_time"] = self.upload_time.isoformat() if self.upload_time else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "IndexFile":
        d = dict(d)
        d["upload_time"] = _parse_time(d.get("upload_time"))
        return cls(**d)


def _parse_time(v: Any) -> _dt.datetime | None:
    if not v or not isinstance(v, str):
        return None
    try:
        t = _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _split_url(url: str) -> tuple[str, str | None]:
    base, _, frag = url.partition("#")
    sha = None
    for part in frag.split("&"):
        k, _, v = part.partition("=")
        if k == "sha256" and re.fullmatch(r"[0-9a-fA-F]{64}", v):
            sha = v.lower()
    return base, sha


def _metadata_attr(v: Any) -> bool | dict:
    if v is None or v is False:
        return False
    if v is True:
        return True
    if isinstance(v, dict):
        return {k: str(h).lower() for k, h in v.items()} or True
    s = str(v).strip()
    if not s or s.lower() == "false":
        return False
    if s.lower() == "true":
        return True
    k, _, h = s.partition("=")
    return {k: h.lower()} if h else True


def parse_simple_json(data: dict, page_url: str, index: str = "") -> list[IndexFile]:
    """Map a PEP 691 project page (parsed JSON) to :class:`IndexFile` records.

    Relative ``url`` values are resolved against ``page_url``. Raises ``PackagesError`` if the
    document is not a PEP 691 page (no ``files`` list).
    """
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise PackagesError(f"{page_url}: not a PEP 691 project page (no 'files' list)")
    out = []
    for f in files:
        if not isinstance(f, dict) or "url" not in f:
            continue
        url, frag_sha = _split_url(urllib.parse.urljoin(page_url, f["url"]))
        hashes = f.get("hashes") or {}
        filename = f.get("filename") or urllib.parse.unquote(url.rsplit("/", 1)[-1])
        meta = f.get("core-metadata", f.get("data-dist-info-metadata", f.get("dist-info-metadata")))
        y = f.get("yanked", False)
        out.append(IndexFile(
            filename=filename, url=url,
            sha256=(hashes.get("sha256") or frag_sha or None),
            requires_python=f.get("requires-python") or None,
            upload_time=_parse_time(f.get("upload-time")),
            core_metadata=_metadata_attr(meta),
            yanked=(y if isinstance(y, str) else bool(y)),
            size=f.get("size") if isinstance(f.get("size"), int) else None,
            index=index,
        ))
    return out


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "a":
            d = dict(attrs)
            if d.get("href"):
                self.links.append(d)


def parse_simple_html(text: str, page_url: str, index: str = "") -> list[IndexFile]:
    """Map a PEP 503 project page (HTML) to :class:`IndexFile` records.

    Reads ``href`` (with its ``#sha256=`` fragment), ``data-requires-python``, ``data-yanked``
    (PEP 592), ``data-core-metadata``/``data-dist-info-metadata`` (PEP 658/714) and
    ``data-upload-time`` (the PEP 700 field, which some indexes also put in HTML). Uses the
    standard library's ``html.parser``; honours ``<base href>``.
    """
    p = _LinkParser()
    p.feed(text)
    p.close()
    base = urllib.parse.urljoin(page_url, p.base) if p.base else page_url
    out = []
    for a in p.links:
        url, sha = _split_url(urllib.parse.urljoin(base, a["href"] or ""))
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        if not filename:
            continue
        meta = a.get("data-core-metadata", a.get("data-dist-info-metadata"))
        y = a.get("data-yanked")
        out.append(IndexFile(
            filename=filename, url=url, sha256=sha,
            requires_python=a.get("data-requires-python") or None,
            upload_time=_parse_time(a.get("data-upload-time")),
            core_metadata=_metadata_attr(meta) if "data-core-metadata" in a
            or "data-dist-info-metadata" in a else False,
            yanked=False if y is None else (y or ""),
            index=index,
        ))
    return out


# --------------------------------------------------------------------------- HTTP

def _verify(cert: str | None) -> Any:
    if cert and os.path.exists(cert):
        return ssl.create_default_context(cafile=cert)
    return True


class Http:
    """An ``httpx.Client`` with bounded retries. ``transport`` replaces the network (tests pass
    ``httpx.MockTransport``); ``file://`` URLs are read from disk without it."""

    def __init__(self, transport: httpx.BaseTransport | None = None, cert: str | None = None,
                 timeout: float = 60.0) -> None:
        self.client = httpx.Client(transport=transport, follow_redirects=True,
                                   timeout=httpx.Timeout(timeout, connect=15.0),
                                   verify=_verify(cert),
                                   headers={"User-Agent": "pyworkers"})
        self.requests = 0  # counted for tests and timings

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, url: str, *, headers: dict | None = None,
                ok: tuple[int, ...] = (200,), retries: int | None = None) -> httpx.Response:
        """Send one request, retrying connection errors, 429 and 5xx up to ``RETRIES`` times.

        Returns the response when its status is in ``ok`` (404 is returned too if listed).
        Raises :class:`NetworkError` otherwise, naming ``url``.
        """
        if url.startswith("file:"):
            path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
            req = httpx.Request(method, url)
            if path.is_file():
                return httpx.Response(200, content=b"" if method == "HEAD" else path.read_bytes(),
                                      request=req)
            if 404 in ok:
                return httpx.Response(404, request=req)
            raise NetworkError(f"cannot fetch {url}: no such file", url)
        attempts = RETRIES if retries is None else retries
        last = ""
        for i in range(attempts):
            if i:
                time.sleep(BACKOFF * (2 ** (i - 1)))
            self.requests += 1
            try:
                r = self.client.request(method, url, headers=headers)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            if r.status_code in ok:
                return r
            last = f"HTTP {r.status_code}"
            if r.status_code != 429 and r.status_code < 500:
                break
        raise NetworkError(f"cannot fetch {url}: {last} (after {i + 1} attempt"
                           f"{'s' if i else ''})", url)

    def stream_to(self, url: str, out: io.BufferedWriter, *,
                  on_bytes: Callable[[int], None] | None = None,
                  on_total: Callable[[int | None], None] | None = None) -> tuple[str, int]:
        """Download ``url`` into ``out`` (truncated and rewritten on each retry).

        Returns ``(sha256 hex, size in bytes)``. Raises :class:`NetworkError` after ``RETRIES``.
        """
        if url.startswith("file:"):
            h = hashlib.sha256()
            n = 0
            path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
            try:
                with open(path, "rb") as f:
                    if on_total:
                        on_total(os.fstat(f.fileno()).st_size)
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
                        n += len(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
            except OSError as e:
                raise NetworkError(f"cannot read {url}: {e}", url) from None
            return h.hexdigest(), n
        last = ""
        for i in range(RETRIES):
            if i:
                time.sleep(BACKOFF * (2 ** (i - 1)))
            out.seek(0)
            out.truncate()
            h = hashlib.sha256()
            n = 0
            self.requests += 1
            try:
                with self.client.stream("GET", url) as r:
                    if r.status_code != 200:
                        last = f"HTTP {r.status_code}"
                        if r.status_code != 429 and r.status_code < 500:
                            break
                        continue
                    if on_total:
                        cl = r.headers.get("content-length")
                        on_total(int(cl) if cl and cl.isdigit() else None)
                    for chunk in r.iter_bytes(1 << 16):
                        h.update(chunk)
                        out.write(chunk)
                        n += len(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
                return h.hexdigest(), n
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise NetworkError(f"cannot download {url}: {last} (after {i + 1} attempt"
                           f"{'s' if i else ''})", url)


# --------------------------------------------------------------------------- lazy wheel

class _RangeFile:
    """A read-only, seekable view of a remote file that fetches byte ranges on demand."""

    def __init__(self, http: Http, url: str, length: int, tail: bytes) -> None:
        self.http, self.url, self.length = http, url, length
        self.pos = 0
        self.segments: list[tuple[int, bytes]] = [(length - len(tail), tail)]
        self.fetches = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, off: int, whence: int = 0) -> int:
        self.pos = {0: off, 1: self.pos + off, 2: self.length + off}[whence]
        return self.pos

    def _get(self, start: int, end: int) -> bytes:
        for s, data in self.segments:
            if s <= start and end <= s + len(data):
                return data[start - s:end - s]
        if self.fetches >= MAX_RANGE_REQUESTS:
            raise _RangeUnsupported("too many range requests")
        self.fetches += 1
        fetch_end = min(self.length, max(end, start + 16 * 1024))
        r = self.http.request("GET", self.url, headers={"Range": f"bytes={start}-{fetch_end - 1}"},
                              ok=(200, 206))
        if r.status_code != 206:
            raise _RangeUnsupported("server ignored Range")
        self.segments.append((start, r.content))
        if len(r.content) < end - start:
            raise _RangeUnsupported("short range response")
        return r.content[:end - start]

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.length - self.pos
        end = min(self.pos + n, self.length)
        if end <= self.pos:
            return b""
        data = self._get(self.pos, end)
        self.pos = end
        return data


class _RangeUnsupported(Exception):
    pass


def metadata_from_zip(zf: zipfile.ZipFile, project: str) -> bytes:
    """The ``<name>.dist-info/METADATA`` member of a wheel (PEP 427) for ``project``.

    Raises ``PackagesError`` if there is none.
    """
    cands = [n for n in zf.namelist()
             if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
    for n in cands:
        dist = n.split("/", 1)[0][:-len(".dist-info")]
        if canonicalize_name(dist.rsplit("-", 1)[0]) == project:
            return zf.read(n)
    if len(cands) == 1:
        return zf.read(cands[0])
    raise PackagesError(f"{project}: wheel has no {project}-*.dist-info/METADATA")


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
        except _RangeUnsupported:
            pass
        r = self.http.request("GET", f.url)
        return self._metadata_from_whole(project, f, r.content)

    def _metadata_by_range(self, project: str, f: IndexFile) -> bytes:
        r = self.http.request("GET", f.url, headers={"Range": f"bytes=-{TAIL_BYTES}"},
                              ok=(200, 206, 416))
        if r.status_code == 200:  # no range support: we have the whole file
            return self._metadata_from_whole(project, f, r.content)
        if r.status_code == 416:
            raise _RangeUnsupported("416")
        m = re.match(r"bytes (\d+)-(\d+)/(\d+)", r.headers.get("content-range", ""))
        if not m:
            raise _RangeUnsupported("no content-range")
        length = int(m.group(3))
        rf = _RangeFile(self.http, f.url, length, r.content)
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
