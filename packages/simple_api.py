"""The package index's simple API: :class:`IndexFile` records and the parsers of project
pages, PEP 691 JSON (:func:`parse_simple_json`) and PEP 503 HTML (:func:`parse_simple_html`),
with PEP 592 ``yanked``, PEP 658/714 ``core-metadata`` and PEP 700 ``upload-time``."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import urllib.parse
from html.parser import HTMLParser
from typing import Any

from .errors import PackagesError


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

