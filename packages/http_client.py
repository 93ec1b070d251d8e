"""The HTTP client of the package code (:class:`Http`): an ``httpx.Client`` with bounded
retries (connection errors, 429 and 5xx), ``file://`` URLs read from disk, and streamed,
hashed downloads. Every failure ends in :class:`~pyworkers.packages.errors.NetworkError`
naming the URL."""
from __future__ import annotations

import hashlib
import io
import os
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .errors import NetworkError

#: Attempts per request (connection errors, HTTP 429 and 5xx are retried).
RETRIES = 3
#: Seconds before the first retry; doubled each time.
BACKOFF = 0.5


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

