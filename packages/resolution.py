"""What a resolution produces (:class:`Resolution`, :class:`PinnedWheel`, :class:`SdistRef`)
and the data tables every resolution consults (implicit requirements, server-only packages).

Split from :mod:`pyworkers.packages.resolver`, which re-exports everything here.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path

from packaging.utils import canonicalize_name

from .errors import NoCompatibleWheelError

#: Requirements every layer gets (``pyworkers resolve``/``deploy`` pass them as ``implicit``):
#: ``tzdata`` is the IANA time zone database ``zoneinfo`` reads (the sandbox has no
#: ``/usr/share/zoneinfo``). Left out with a note when unavailable.
IMPLICIT_REQUIREMENTS = ("tzdata",)
#: The server-only table (see ``server_only.toml``).
SERVER_ONLY_TABLE = Path(__file__).with_name("server_only.toml")


def server_only_packages() -> dict[str, str]:
    """``{canonical name: what it is}`` from ``server_only.toml``: packages left out of the
    layer (with a note) when they have no usable wheel, instead of failing the resolve."""
    import tomllib

    with open(SERVER_ONLY_TABLE, "rb") as f:
        doc = tomllib.load(f)
    return {canonicalize_name(k): str(v) for k, v in (doc.get("packages") or {}).items()}


@dataclasses.dataclass(frozen=True)
class SdistRef:
    """The sdist a ``"sdist"`` pin was built from: ``filename``, ``url``, ``sha256`` (hex),
    ``size`` (bytes or ``None``)."""

    filename: str
    url: str
    sha256: str
    size: int | None = None

    def to_json(self) -> dict:
        return {"name": self.filename, "url": self.url, "sha256": self.sha256}


# --------------------------------------------------------------------------- results

@dataclasses.dataclass(frozen=True)
class PinnedWheel:
    """One pinned wheel of a resolution.

    Attributes: ``name`` (canonical), ``version``, ``source`` (``"lock"`` release lock,
    ``"index"`` package index, ``"path"`` local wheel, ``"url"`` direct URL, ``"sdist"`` a
    pure-Python wheel pyworkers built from the index's sdist), ``filename``, ``url`` (download
    URL; ``file://`` for local wheels; the sdist's URL for ``"sdist"`` pins), ``sha256`` (hex, of
    the wheel), ``size`` (bytes or ``None``), ``upload_time`` (aware datetime or ``None``),
    ``index`` (index URL for ``"index"``/``"sdist"`` pins), ``dependencies`` (canonical names it
    needs on this target), ``sdist`` (:class:`SdistRef` for ``"sdist"`` pins, else ``None``).
    """

    name: str
    version: str
    source: str
    filename: str
    url: str
    sha256: str
    size: int | None = None
    upload_time: _dt.datetime | None = None
    index: str | None = None
    dependencies: tuple[str, ...] = ()
    sdist: SdistRef | None = None

    def to_json(self) -> dict:
        """``{"name", "version", "source", "wheel", "sha256", "url"}`` (+ ``"sdist": {"name",
        "url", "sha256"}`` for a wheel built from an sdist)."""
        d = {"name": self.name, "version": self.version, "source": self.source,
             "wheel": self.filename, "sha256": self.sha256, "url": self.url}
        if self.sdist is not None:
            d["sdist"] = self.sdist.to_json()
        return d


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The result of :func:`resolve` (also what :func:`~pyworkers.packages.read_lock` returns).

    Attributes:
        wheels: pinned wheels sorted by name.
        target: what it was made for (``RuntimeSelection.to_json()`` or the release's fields).
        index_urls: the indexes searched.
        exclude_newer: the PEP 700 cut-off used (aware datetime), ``None`` if disabled.
        inputs: digest of every input (``"sha256:<hex>"``); an unchanged digest lets a lock be
            reused without the network.
        skipped: requirements whose markers are false on the target (``"foo (file:3): <marker>"``).
        notes: notices collected while resolving (fallbacks taken, options ignored).
        reused: ``True`` when read back from an unchanged lock file.
        left_out: server-only packages left out of the layer (no usable wheel), as
            ``"uvloop (required by uvicorn 0.38.0): event loop for uvicorn"``.
        unavailable: with ``resolve(..., missing_ok=True)``, one error per project that has
            no usable wheel (instead of raising); such a resolution is a report, not a lock.
    """

    wheels: tuple[PinnedWheel, ...]
    target: dict
    index_urls: tuple[str, ...] = ()
    exclude_newer: _dt.datetime | None = None
    inputs: str = ""
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    reused: bool = False
    left_out: tuple[str, ...] = ()
    unavailable: tuple[NoCompatibleWheelError, ...] = ()

    def built_from_sdist(self) -> tuple[PinnedWheel, ...]:
        """The pins pyworkers built from sdists (pure-Python wheels)."""
        return tuple(w for w in self.wheels if w.source == "sdist")

    def to_json(self) -> list[dict]:
        """The CLI's ``--json``: a list of :meth:`PinnedWheel.to_json` dicts."""
        return [w.to_json() for w in self.wheels]

    def runtime_selection(self):
        """The ``RuntimeSelection`` this was made for (``RuntimeSelection.from_json`` of
        ``target``), or ``None`` when it was made for a bare release. Raises
        ``pyworkers.compat.CompatError`` if the record does not match this pyworkers' table."""
        from pyworkers.compat import RuntimeSelection

        if "compatibility_date" not in self.target:
            return None
        return RuntimeSelection.from_json(dict(self.target))

    def get(self, name: str) -> PinnedWheel | None:
        """The pin for project ``name`` (any spelling), or ``None``."""
        n = canonicalize_name(name)
        return next((w for w in self.wheels if w.name == n), None)
