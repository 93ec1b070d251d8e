"""The resolver's model (:mod:`pyworkers.packages.resolver`): candidates (a concrete wheel of
a project, with or without extras), requirements as the resolver sees them, resolvelib
identifiers, and what is known of a project's files for the error messages."""
from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .requirements import InputRequirement
from .simple_api import IndexFile


class Candidate:
    """A concrete wheel of one project (base candidate, no extras)."""

    __slots__ = ("name", "version", "source", "filename", "url", "sha256", "size",
                 "upload_time", "index", "file", "lock_deps", "rank", "path", "built")

    def __init__(self, name: str, version: Version, source: str, filename: str, url: str,
                 sha256: str | None, *, size: int | None = None,
                 upload_time: _dt.datetime | None = None, index: str | None = None,
                 file: IndexFile | None = None, lock_deps: tuple[tuple[str, str], ...] | None = None,
                 rank: int = 0, path: Path | None = None) -> None:
        self.name, self.version, self.source = name, version, source
        self.filename, self.url, self.sha256 = filename, url, sha256
        self.size, self.upload_time, self.index = size, upload_time, index
        self.file, self.lock_deps, self.rank, self.path = file, lock_deps, rank, path
        self.built: Any = None  # BuiltWheel of an "sdist" candidate, once built

    @property
    def key(self) -> tuple:
        return (self.name, str(self.version), self.source, self.url)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Candidate) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"{self.name} {self.version} ({self.source})"


class ExtrasCandidate:
    """A candidate with extras: depends on its base candidate plus the extras' dependencies."""

    __slots__ = ("base", "extras")

    def __init__(self, base: Candidate, extras: frozenset[str]) -> None:
        self.base, self.extras = base, extras

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def version(self) -> Version:
        return self.base.version

    @property
    def key(self) -> tuple:
        return (*self.base.key, tuple(sorted(self.extras)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExtrasCandidate) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"{self.name}[{','.join(sorted(self.extras))}] {self.version}"


@dataclasses.dataclass(frozen=True)
class Req:
    """A requirement inside the resolver: ``parent`` says who asked (for messages)."""

    name: str
    extras: frozenset[str] = frozenset()
    specifier: SpecifierSet = SpecifierSet()
    url: str | None = None
    hashes: frozenset[str] = frozenset()
    parent: str | None = None
    pinned: Any = None  # a Candidate that must be used (extras -> base)
    input: InputRequirement | None = None

    def __str__(self) -> str:
        ex = f"[{','.join(sorted(self.extras))}]" if self.extras else ""
        if self.url:
            return f"{self.name}{ex} @ {self.url}"
        return f"{self.name}{ex}{self.specifier}"

    @property
    def identifier(self) -> str:
        return ident(self.name, self.extras)


def merge_duplicates(reqs: Sequence[Req]) -> list[Req]:
    """Merge top-level requirements that differ only in their specifier: one :class:`Req` per
    (project, extras, URL, hashes) carrying the intersection of the specifiers (the resolver
    intersects them anyway), in first-seen order, keeping the first line's origin.

    resolvelib adds the top-level requirements one by one and re-filters candidates against
    every requirement merged so far, so ``n`` duplicate lines cost O(n²); merged they cost one.
    Lines with different ``--hash`` sets are kept apart (each set must hold on its own).
    """
    merged: dict[tuple, Req] = {}
    for r in reqs:
        key = (r.name, r.extras, r.url, r.hashes)
        first = merged.get(key)
        if first is None:
            merged[key] = r
        elif str(r.specifier) and r.specifier != first.specifier:
            merged[key] = dataclasses.replace(first, specifier=first.specifier & r.specifier)
    return list(merged.values())


def ident(name: str, extras: Iterable[str]) -> str:
    """resolvelib identifier of project ``name`` with ``extras``: ``"name[a,b]"`` or ``"name"``."""
    ex = sorted(extras)
    return f"{name}[{','.join(ex)}]" if ex else name


def split_ident(identifier: str) -> tuple[str, frozenset[str]]:
    """``"name[a,b]"`` -> ``("name", frozenset({"a", "b"}))`` (inverse of :func:`ident`)."""
    if "[" in identifier:
        name, _, rest = identifier.partition("[")
        return name, frozenset(x for x in rest.rstrip("]").split(",") if x)
    return identifier, frozenset()


@dataclasses.dataclass
class ProjectInfo:
    """Why files of a project were not candidates (for error messages)."""

    files: int = 0
    sdist_versions: set = dataclasses.field(default_factory=set)
    incompatible_wheels: int = 0
    compatible_versions: set = dataclasses.field(default_factory=set)
    too_new: dict = dataclasses.field(default_factory=dict)  # version -> upload time or None
    no_upload_time: int = 0
    python_excluded: dict = dataclasses.field(default_factory=dict)  # version -> specifier
    yanked: set = dataclasses.field(default_factory=set)
    all_versions: set = dataclasses.field(default_factory=set)  # any file, any platform
    lock_reason: str | None = None
    sdists: list = dataclasses.field(default_factory=list)  # usable sdist candidates, newest first
    build_failures: dict = dataclasses.field(default_factory=dict)  # version -> reason

