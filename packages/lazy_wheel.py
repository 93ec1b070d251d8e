"""Wheel metadata without the whole wheel: a seekable view of a remote file fetched by HTTP
range requests (:class:`RangeFile`, like pip's lazy wheel: the zip's central directory and one
member), and the ``METADATA`` member of a wheel (:func:`metadata_from_zip`)."""
from __future__ import annotations

import re
import zipfile

from packaging.utils import canonicalize_name

from .errors import PackagesError
from .http_client import Http

#: Range requests allowed per wheel before downloading it whole.
MAX_RANGE_REQUESTS = 8


class RangeFile:
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
            raise RangeUnsupported("too many range requests")
        self.fetches += 1
        fetch_end = min(self.length, max(end, start + 16 * 1024))
        r = self.http.request("GET", self.url, headers={"Range": f"bytes={start}-{fetch_end - 1}"},
                              ok=(200, 206))
        if r.status_code != 206:
            raise RangeUnsupported("server ignored Range")
        self.segments.append((start, r.content))
        if len(r.content) < end - start:
            raise RangeUnsupported("short range response")
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


class RangeUnsupported(Exception):
    """The server cannot serve this file by ranges (or too many were needed): read the
    metadata another way."""


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
