"""Resolve requirements to an exact, hash-pinned set of wheels for one runtime (``resolvelib``).

Candidates, in order of preference for each project:

1. the release lock's wheel (``pyodide-lock.json``: exact version, sha256, dependencies pinned to
   the lock's versions), when its package base URL is reachable (probed once with a ``HEAD``; on
   failure the resolver says so once and uses the index instead);
2. index wheels (PEP 691/503) that run on the target (``packaging.tags``), whose
   ``Requires-Python`` admits the runtime's Python, that are not yanked (PEP 592) and that were
   uploaded before the cut-off (PEP 700 ``upload-time``; files without one do not count while a
   cut-off is active): first the lock's version of the project, then newest first. Dependencies
   come from the wheel's core metadata (PEP 658 ``.metadata`` or the wheel itself), with
   environment markers evaluated for the target, not the host.

A required project with no usable wheel at all fails at once with
:class:`~pyworkers.packages.errors.NoCompatibleWheelError` (rather than backtracking to an old
release that avoids it); a requirement whose range has no usable wheel, and conflicts, end in
:class:`~pyworkers.packages.errors.ConflictError` with resolvelib's chain of causes.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import resolvelib
from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (InvalidWheelFilename, canonicalize_name, parse_sdist_filename,
                             parse_wheel_filename)
from packaging.version import InvalidVersion, Version

from .cache import WheelCache, cache_root
from .errors import (ConflictError, NetworkError, NoCompatibleWheelError, PackagesError)
from .index import Http, IndexConfig, IndexFile, PackageIndex, index_config, metadata_from_zip
from .progress import Progress, as_progress
from .release_lock import DEFAULT, ReleaseLock, default_package_base_url, read_release_lock
from .release_lock import wheel_url
from .requirements import InputRequirement, RequirementsInput, parse_requirements
from .target import Target
from .resolution import (IMPLICIT_REQUIREMENTS, SERVER_ONLY_TABLE, PinnedWheel,  # noqa: F401
                         Resolution, SdistRef, server_only_packages)

#: Format of the input digest stored in ``pylock.toml`` (bump when resolution rules change).
INPUTS_FORMAT = 1
#: resolvelib rounds before giving up (bounded backtracking).
MAX_ROUNDS = 20000


# --------------------------------------------------------------------------- resolver model

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
        return _ident(self.name, self.extras)


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


def _ident(name: str, extras: Iterable[str]) -> str:
    ex = sorted(extras)
    return f"{name}[{','.join(ex)}]" if ex else name


def _split_ident(ident: str) -> tuple[str, frozenset[str]]:
    if "[" in ident:
        name, _, rest = ident.partition("[")
        return name, frozenset(x for x in rest.rstrip("]").split(",") if x)
    return ident, frozenset()


@dataclasses.dataclass
class _ProjectInfo:
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


class _Provider(resolvelib.AbstractProvider):
    def __init__(self, ctx: "_Context") -> None:
        self.ctx = ctx

    def identify(self, requirement_or_candidate: Any) -> str:
        x = requirement_or_candidate
        if isinstance(x, Req):
            return x.identifier
        if isinstance(x, ExtrasCandidate):
            return _ident(x.name, x.extras)
        return x.name

    def get_preference(self, identifier, resolutions, candidates, information,
                       backtrack_causes) -> Any:
        infos = list(information[identifier])
        direct = any(i.requirement.url or i.requirement.pinned is not None for i in infos)
        pinned = any(s.operator in ("==", "===") and "*" not in s.version
                     for i in infos for s in i.requirement.specifier)
        causes = {self.identify(c.requirement) for c in backtrack_causes}
        user = any(i.parent is None for i in infos)
        return (not direct, identifier not in causes, not pinned, not user, identifier)

    def find_matches(self, identifier, requirements, incompatibilities) -> list:
        name, extras = _split_ident(identifier)
        reqs: list[Req] = list(requirements[identifier])
        if extras:
            reqs += list(requirements.get(name, ()))
        bad = {c.key for c in incompatibilities.get(identifier, ())}
        pins = [r.pinned for r in reqs if r.pinned is not None]
        urls = {r.url for r in reqs if r.url}
        if pins:
            base = [pins[0]] if all(p == pins[0] for p in pins) else []
        elif urls:
            base = [self.ctx.direct_candidate(next(r for r in reqs if r.url))] if len(urls) == 1 \
                else []
        else:
            base = self.ctx.candidates(name)
        spec = SpecifierSet()
        for r in reqs:
            spec &= r.specifier
        allowed = set(spec.filter([c.version for c in base],
                                  prereleases=True if self.ctx.pre else None))
        in_range = [c for c in base
                    if c.version in allowed or (c.source in ("path", "url") and urls)]
        if not in_range and not pins and not urls:
            # No wheel in range: a pure-Python wheel built from the newest sdist in range.
            sd = self.ctx.sdist_candidate(name, spec)
            if sd is not None:
                in_range = [sd]
        if not in_range and not pins and not urls and self.ctx.is_missing(name, spec):
            # The range exists on the index but has no wheel for this runtime (or the project
            # is unknown). Stand in a placeholder instead of backtracking to old releases that
            # avoid it: the rest of the graph still resolves and every such project is
            # reported together at the end.
            m = self.ctx.placeholder(name)
            return [ExtrasCandidate(m, extras) if extras else m]
        out = []
        for c in in_range:
            if not all(self._hash_ok(r, c) for r in reqs):
                continue
            cand = ExtrasCandidate(c, extras) if extras else c
            if cand.key not in bad:
                out.append(cand)
        return out

    @staticmethod
    def _hash_ok(r: Req, c: Candidate) -> bool:
        return not r.hashes or (c.sha256 is not None and f"sha256:{c.sha256}" in r.hashes)

    def is_satisfied_by(self, requirement: Req, candidate: Any) -> bool:
        base = candidate.base if isinstance(candidate, ExtrasCandidate) else candidate
        if base.source == "missing":
            return True
        if requirement.pinned is not None:
            return base == requirement.pinned
        if requirement.url:
            return base.url == requirement.url
        if not self._hash_ok(requirement, base):
            return False
        return requirement.specifier.contains(base.version, prereleases=True)

    def get_dependencies(self, candidate: Any) -> list[Req]:
        if isinstance(candidate, ExtrasCandidate):
            return self.ctx.extras_dependencies(candidate)
        return self.ctx.dependencies(candidate)


class _Reporter(resolvelib.BaseReporter):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def pinning(self, candidate: Any) -> None:
        self.progress.status(f"resolving: {candidate!r}")


# --------------------------------------------------------------------------- context

class _Context:
    """Everything the provider needs: target, sources, caches, messages."""

    def __init__(self, target: Target, index: PackageIndex | None, lock: ReleaseLock | None,
                 base_url: str | None, cutoff: _dt.datetime | None, pre: bool,
                 cache: WheelCache, http: Http, progress: Progress) -> None:
        self.target, self.index, self.lock = target, index, lock
        self.base_url, self.cutoff, self.pre = base_url, cutoff, pre
        self.cache, self.http, self.progress = cache, http, progress
        self.lock_downloads = bool(lock is not None and base_url)
        self.cutoff_is_default = False
        self._probed = False
        self._cands: dict[str, list[Candidate]] = {}
        self._info: dict[str, _ProjectInfo] = {}
        self._meta: dict[tuple, tuple[list[Requirement], str | None]] = {}
        self._direct: dict[str, Candidate] = {}
        self.notes: list[str] = []
        self.introduced: dict[str, list[Req]] = {}
        self.top_origin: dict[str, str] = {}
        self.builder: Any = None  # SdistBuilder when building from sdists is allowed
        self.no_build = False  # building was turned off (--no-build): said in errors
        self.server_only: dict[str, str] = {}
        self.top_names: set[str] = set()
        self.dropped: dict[tuple[str, str], str] = {}  # (name, parent name) -> left-out text

    def keep(self, r: Req) -> bool:
        """False for a server-only dependency the user did not ask for (left out, noted)."""
        if r.name not in self.server_only or r.name in self.top_names or r.parent is None:
            return True
        pname = r.parent.split(" ", 1)[0].split("[", 1)[0]
        self.dropped.setdefault((r.name, pname), f"{r.name} (required by {self.chain(r.parent)})"
                                                 f": {self.server_only[r.name]}")
        return False

    def placeholder(self, name: str) -> Candidate:
        """Stands in for a project with no usable wheel (reported after resolving)."""
        return Candidate(name, Version("0"), "missing", "", f"missing:{name}", None, lock_deps=())

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)
            self.progress.note(msg)

    # --- the lock source ----------------------------------------------------
    def _probe_lock(self, file_name: str) -> bool:
        if self._probed:
            return self.lock_downloads
        self._probed = True
        url = wheel_url(self.base_url or "", file_name)
        try:
            self.http.request("HEAD", url, retries=2)
        except NetworkError as e:
            self.lock_downloads = False
            self.note(f"the release's package base URL is unreachable ({e.message}); using the "
                      "package index instead")
        return self.lock_downloads

    def _lock_candidate(self, name: str, info: _ProjectInfo) -> Candidate | None:
        if self.lock is None or not self.lock_downloads:
            return None
        p = self.lock.get(name)
        if p is None:
            return None
        libs = [d for d in p.depends if self.lock.shared_library(d)]
        if libs:
            info.lock_reason = (f"the release lock's {name} {p.version} needs the shared "
                                f"librar{'ies' if len(libs) > 1 else 'y'} {', '.join(libs)}, "
                                "which a site-packages layer cannot carry")
            return None
        try:
            version = Version(p.version)
            _, _, _, tags = parse_wheel_filename(p.file_name.rsplit("/", 1)[-1])
        except (InvalidVersion, InvalidWheelFilename):
            return None
        rank = self.target.wheel_rank(tags)
        if rank is None or not p.sha256:
            info.lock_reason = f"the release lock's {p.file_name} does not match {self.target.name}"
            return None
        if not self._probe_lock(p.file_name):
            return None
        deps = []
        for d in p.depends:
            dv = self.lock.get(d)
            deps.append((d, f"=={dv.version}" if dv is not None else ""))
        return Candidate(name, version, "lock", p.file_name.rsplit("/", 1)[-1],
                         wheel_url(self.base_url or "", p.file_name), p.sha256,
                         lock_deps=tuple(deps), rank=rank)

    # --- candidates ---------------------------------------------------------
    def candidates(self, name: str) -> list[Candidate]:
        """Usable candidates of ``name``, preferred first (possibly none)."""
        if name not in self._cands:
            self.progress.status(f"fetching {name}")
            self._cands[name] = self._build_candidates(name)
        return self._cands[name]

    def is_missing(self, name: str, spec: SpecifierSet) -> bool:
        """True when ``spec`` matches releases of ``name`` that have no usable wheel (files
        for other platforms, sdists, too new, other Pythons), or ``name`` is unknown: a missing
        wheel to report, not a conflict to backtrack from."""
        info = self._info.get(name, _ProjectInfo())
        if info.files == 0 and not self._cands.get(name):
            return True
        return bool(list(spec.filter(sorted(info.all_versions),
                                     prereleases=True if self.pre else None)))

    def _build_candidates(self, name: str) -> list[Candidate]:
        info = self._info.setdefault(name, _ProjectInfo())
        out: list[Candidate] = []
        lc = self._lock_candidate(name, info)
        if lc is not None:
            out.append(lc)
        files = self.index.files(name) if self.index is not None else []
        info.files = len(files)
        best: dict[Version, Candidate] = {}
        for f in files:
            if not f.filename.endswith(".whl"):
                try:
                    n, v = parse_sdist_filename(f.filename)
                except Exception:  # noqa: BLE001 - not an sdist name
                    continue
                if n == name and f.yanked is False:
                    info.sdist_versions.add(v)
                    info.all_versions.add(v)
                    if self._usable(f, v, info):
                        info.sdists.append(Candidate(
                            name, v, "sdist", f.filename, f.url, f.sha256, size=f.size,
                            upload_time=f.upload_time, index=f.index, file=f, rank=1 << 20))
                continue
            try:
                n, v, build, tags = parse_wheel_filename(f.filename)
            except (InvalidWheelFilename, InvalidVersion):
                continue
            if n != name:
                continue
            if f.yanked is False:
                info.all_versions.add(v)
            rank = self.target.wheel_rank(tags)
            if rank is None:
                info.incompatible_wheels += 1
                continue
            if f.yanked is not False:
                info.yanked.add(v)
                continue
            if not self._usable(f, v, info):
                continue
            info.compatible_versions.add(v)
            c = Candidate(name, v, "index", f.filename, f.url, f.sha256, size=f.size,
                          upload_time=f.upload_time, index=f.index, file=f, rank=rank)
            old = best.get(v)
            if old is None or rank < old.rank:
                best[v] = c
        out += [best[v] for v in sorted(best, reverse=True)]
        info.sdists.sort(key=lambda c: c.version, reverse=True)
        return out

    def _usable(self, f: IndexFile, v: Version, info: _ProjectInfo) -> bool:
        """Requires-Python admits the target and the file is older than the cut-off (else the
        reason is counted in ``info``)."""
        if f.requires_python:
            try:
                ok = SpecifierSet(f.requires_python).contains(self.target.python_version,
                                                              prereleases=True)
            except InvalidSpecifier:
                ok = True
            if not ok:
                info.python_excluded[v] = f.requires_python
                return False
        if self.cutoff is not None and (f.upload_time is None or f.upload_time >= self.cutoff):
            if f.upload_time is None:
                info.no_upload_time += 1
            else:
                prev = info.too_new.get(v)
                info.too_new[v] = min(prev, f.upload_time) if prev else f.upload_time
            return False
        return True

    def sdist_candidate(self, name: str, spec: SpecifierSet) -> Candidate | None:
        """The newest usable sdist of ``name`` within ``spec`` as an ``"sdist"`` candidate, when
        building is allowed, the project is not server-only and the sdist may build a pure
        wheel (else the reason is kept for the error message)."""
        if self.builder is None or name in self.server_only:
            return None
        self.candidates(name)
        info = self._info.get(name, _ProjectInfo())
        allowed = set(spec.filter([c.version for c in info.sdists],
                                  prereleases=True if self.pre else None))
        c = next((c for c in info.sdists if c.version in allowed), None)
        if c is None:
            return None
        if c.version not in info.build_failures:
            self.progress.status(f"checking the sdist {c.filename}")
            why = self.builder.viable(name, c.filename, c.url, c.sha256)
            info.build_failures[c.version] = why
        return None if info.build_failures[c.version] else c

    def direct_candidate(self, req: Req) -> Candidate:
        """The candidate of a path or URL requirement (the wheel is read or downloaded now)."""
        url = req.url or ""
        if url in self._direct:
            return self._direct[url]
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        n, v, _, tags = parse_wheel_filename(filename)
        where = req.input.origin if req.input is not None else (req.parent or "")
        if self.target.wheel_rank(tags) is None:
            raise NoCompatibleWheelError(
                f"{filename} ({where}) does not run on {self.target.name} "
                f"({self.target.platform_tag}): its tags are "
                f"{', '.join(sorted(str(t) for t in tags))}",
                project=n, target=self.target.name, platform_tag=self.target.platform_tag)
        if url.startswith("file:"):
            path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
            from .cache import sha256_file

            sha = sha256_file(path)
            source = "path"
        else:
            want = next((h.split(":", 1)[1] for h in req.hashes), None)
            self.progress.status(f"downloading {filename}")
            path, sha = self.cache.fetch(self.http, url, want)
            source = "url"
        if req.hashes and f"sha256:{sha}" not in req.hashes:
            from .errors import HashMismatchError

            raise HashMismatchError(f"hash mismatch for {filename} ({where}): sha256 {sha} is not "
                                    "among its --hash values", url=url,
                                    expected=" ".join(sorted(req.hashes)), actual=sha)
        c = Candidate(n, v, source, filename, url, sha, size=path.stat().st_size, path=path)
        self._direct[url] = c
        return c

    # --- dependencies -------------------------------------------------------
    def _metadata(self, c: Candidate) -> tuple[list[Requirement], set[str]]:
        key = c.key
        if key in self._meta:
            return self._meta[key]
        if c.source == "sdist" and c.path is None:
            from .sdist import SdistBuildError, alternatives

            try:
                c.built = self.builder.build(c.name, str(c.version), c.filename, c.url, c.sha256)
            except SdistBuildError as e:
                info = self._info.get(c.name, _ProjectInfo())
                info.build_failures[c.version] = e.reason
                newest = str(max(info.compatible_versions)) if info.compatible_versions else None
                e.message = e.args[0] + "; " + alternatives(c.name, self.target.name, newest)
                e.args = (e.message,)
                raise
            c.sha256 = c.sha256 or c.built.sdist_sha256
            c.path = c.built.path
        if c.path is not None:
            with zipfile.ZipFile(c.path) as zf:
                raw_bytes = metadata_from_zip(zf, c.name)
        else:
            self.progress.status(f"reading metadata of {c.filename}")
            raw_bytes = self.index.metadata(c.name, c.file)  # type: ignore[union-attr]
        raw, _ = parse_email(raw_bytes)
        reqs = []
        for s in raw.get("requires_dist", []) or []:
            try:
                reqs.append(Requirement(s))
            except InvalidRequirement:
                self.note(f"{c.name} {c.version}: ignored invalid Requires-Dist {s!r}")
        meta_name = canonicalize_name(raw.get("name", c.name))
        if meta_name != c.name:
            raise PackagesError(f"{c.filename}: its metadata names {meta_name}, not {c.name}")
        extras = {canonicalize_name(e) for e in raw.get("provides_extra", []) or []}
        self._meta[key] = (reqs, extras)
        return reqs, extras

    def _env(self, extra: str) -> dict[str, str]:
        return {**self.target.environment, "extra": extra}

    def _to_req(self, r: Requirement, parent: str) -> Req:
        return Req(canonicalize_name(r.name), frozenset(canonicalize_name(e) for e in r.extras),
                   r.specifier, r.url, parent=parent)

    def dependencies(self, c: Candidate) -> list[Req]:
        parent = f"{c.name} {c.version}"
        if c.lock_deps is not None:
            out = [Req(d, specifier=SpecifierSet(spec), parent=parent) for d, spec in c.lock_deps]
        else:
            reqs, _ = self._metadata(c)
            env = self._env("")
            out = [self._to_req(r, parent) for r in reqs
                   if r.marker is None or r.marker.evaluate(env)]
        out = [r for r in out if self.keep(r)]
        for r in out:
            self.introduced.setdefault(r.name, []).append(r)
        return out

    def extras_dependencies(self, c: ExtrasCandidate) -> list[Req]:
        base = c.base
        out = [Req(base.name, pinned=base, parent=f"{base.name}[{','.join(sorted(c.extras))}]")]
        parent = f"{base.name}[{','.join(sorted(c.extras))}] {base.version}"
        if base.source == "missing":
            return out
        if base.lock_deps is not None:
            self.note(f"{base.name}: extras {sorted(c.extras)} ignored for the release lock's "
                      "wheel (the lock lists no extras)")
            return out
        reqs, provided = self._metadata(base)
        for e in sorted(c.extras - provided):
            self.note(f"{base.name} {base.version} has no extra {e!r}")
        plain = self._env("")
        for r in reqs:
            if r.marker is None or r.marker.evaluate(plain):
                continue  # already a dependency of the base
            if any(r.marker.evaluate(self._env(e)) for e in c.extras):
                req = self._to_req(r, parent)
                if not self.keep(req):
                    continue
                self.introduced.setdefault(req.name, []).append(req)
                out.append(req)
        return out

    # --- messages -----------------------------------------------------------
    def _sdist_why(self, info: _ProjectInfo, rng: Any) -> str:
        """Why no wheel was built from the sdist (one clause)."""
        if self.no_build:
            return ("the sandbox cannot build from source, and building a pure-Python wheel "
                    "from its sdist natively is turned off (--no-build)")
        if self.builder is None:
            return "the sandbox cannot build from source"
        fails = [(v, why) for v, why in info.build_failures.items() if why]
        if fails:
            v, why = max(fails)
            return f"no pure-Python wheel from the sdist of {v}: {why}"
        if not info.sdists:
            return "its sdists do not support this Python or are newer than the cut-off"
        return "no pure-Python wheel could be built from its sdist"

    def implicit_missing(self, name: str) -> str:
        """The note for an implicit requirement that could not be resolved."""
        return (f"{name} (implicit: the IANA time zone database for zoneinfo) has no usable "
                "wheel here: left out; zoneinfo will only know UTC" if name == "tzdata"
                else f"{name} (implicit) has no usable wheel here: left out")
    def chain(self, parent: str | None, depth: int = 0) -> str:
        """Who asked, as a chain: ``"pydantic 2.11.9 <- fastapi 0.116.1 (requirements.txt:1)"``."""
        if parent is None:
            return "the requirements"
        name = parent.split(" ", 1)[0].split("[", 1)[0]
        if name in self.top_origin:
            return f"{parent} ({self.top_origin[name]})"
        if depth > 6 or name not in self.introduced:
            return parent
        up = self.introduced[name][0]
        return f"{parent} <- {self.chain(up.parent, depth + 1)}"

    def no_wheel_error(self, name: str, needed_by: Sequence[Req],
                       specifier: SpecifierSet | None = None) -> NoCompatibleWheelError:
        """The error for ``name`` (within ``specifier``) having no usable wheel, with the reason
        (unknown project, only sdists, too new, other Pythons, other platforms) and the newest
        version that does have a usable wheel."""
        info = self._info.get(name, _ProjectInfo())
        t = self.target
        spec = specifier or SpecifierSet()
        pre = True if self.pre else None

        def rng(vs: Iterable[Version]) -> list[Version]:
            return sorted(spec.filter(sorted(vs), prereleases=pre))

        who = next((r.parent for r in needed_by if r.parent), None)
        origin = next((r.input.origin for r in needed_by if r.input is not None), None)
        by = f" (required by {self.chain(who)})" if who else (f" ({origin})" if origin else "")
        usable = sorted(info.compatible_versions)  # versions that passed every filter
        newest = str(usable[-1]) if usable else None
        matching = f" matching {spec}" if str(spec) else ""
        head = f"{name}: no wheel for {t.name} ({t.platform_tag}){matching}"
        tail = (f"the newest version with a compatible wheel is {newest}" if newest
                else f"{name} publishes none for this platform")
        too_new = rng(info.too_new)
        if info.files == 0 and not info.lock_reason and not self._cands.get(name):
            where = ", ".join(self.index.config.urls) if self.index is not None else "no index"
            msg = f"{name}: not found on the package index ({where}){by}"
        elif too_new or (info.no_upload_time and not rng(info.compatible_versions)):
            cut = self.cutoff.date().isoformat() if self.cutoff else ""
            when = (f"; {name} {too_new[0]} has one, uploaded "
                    f"{info.too_new[too_new[0]].date().isoformat()}" if too_new else
                    f"; {info.no_upload_time} compatible file(s) have no upload time (PEP 700)")
            what = "the package-set date" if self.cutoff_is_default else "the cut-off"
            msg = (f"{head} uploaded before {cut} ({what}){when}{by}; pass "
                   "--exclude-newer DATE or --no-exclude-newer")
        elif rng(info.python_excluded) and not rng(info.compatible_versions):
            v = rng(info.python_excluded)[-1]
            msg = (f"{head} that supports Python {t.release.python_version} ({name} {v} "
                   f"requires Python {info.python_excluded[v]}){by}; {tail}")
        elif rng(info.sdist_versions) and info.incompatible_wheels == 0:
            msg = (f"{name}: only source distributions are published (newest "
                   f"{rng(info.sdist_versions)[-1]}){by}; {self._sdist_why(info, rng)}")
        else:
            msg = f"{head}; {tail}{by}"
            if rng(info.sdist_versions):
                msg += f"; {self._sdist_why(info, rng)}"
        detail = []
        if info.lock_reason:
            detail.append(info.lock_reason)
        lp = self.lock.get(name) if self.lock is not None else None
        if lp is not None and not self.lock_downloads:
            why = "is unreachable" if self.base_url else "is not set"
            detail.append(f"the release lock pins {name} {lp.version} ({lp.file_name}), but its "
                          f"package base URL {why}: pass --package-base-url URL (a mirror of "
                          "the release's packages)")
        if info.yanked:
            detail.append(f"yanked versions skipped: {', '.join(map(str, sorted(info.yanked)))}")
        if rng(info.sdist_versions):
            from .sdist import alternatives

            detail.append(alternatives(name, t.name, newest))
        return NoCompatibleWheelError(msg, project=name, target=t.name,
                                      platform_tag=t.platform_tag, newest_compatible=newest,
                                      required_by=who, detail="\n".join(detail))


# --------------------------------------------------------------------------- resolve()

def _cutoff(exclude_newer: Any, target: Target) -> _dt.datetime | None:
    if exclude_newer is None:
        return None
    if isinstance(exclude_newer, str):
        if exclude_newer == DEFAULT:
            exclude_newer = target.package_set_date
        else:
            exclude_newer = parse_exclude_newer(exclude_newer)
    if isinstance(exclude_newer, _dt.datetime):
        return exclude_newer if exclude_newer.tzinfo else exclude_newer.replace(
            tzinfo=_dt.timezone.utc)
    if isinstance(exclude_newer, _dt.date):
        return _dt.datetime.combine(exclude_newer, _dt.time(), tzinfo=_dt.timezone.utc)
    raise TypeError(f"exclude_newer: expected a date, datetime or None, got {exclude_newer!r}")


def parse_exclude_newer(value: str) -> _dt.datetime:
    """``"YYYY-MM-DD"`` (midnight UTC) or an RFC 3339 timestamp -> aware datetime.

    Raises ``ValueError`` with the accepted forms.
    """
    try:
        if len(value) == 10:
            d = _dt.date.fromisoformat(value)
            return _dt.datetime.combine(d, _dt.time(), tzinfo=_dt.timezone.utc)
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        raise ValueError(f"invalid --exclude-newer {value!r}: use YYYY-MM-DD or an RFC 3339 "
                         "timestamp") from None


def inputs_digest(reqs: RequirementsInput, target: Target, cfg: IndexConfig | None,
                  cutoff: _dt.datetime | None, lock: ReleaseLock | None,
                  base_url: str | None, pre: bool = False, build: bool = False,
                  implicit: Sequence[str] = ()) -> str:
    """``"sha256:<hex>"`` over everything that decides a resolution (no network involved):
    requirements, target, indexes, cut-off, release lock, base URL, ``pre``, and (only when
    used, so older locks stay valid) sdist builds with the switch table and the implicit
    requirements."""
    r = target.release
    doc = {
        "format": INPUTS_FORMAT,
        "requirements": reqs.key(),
        "target": [r.pyodide_version, r.python_version, r.platform_tag,
                   target.package_set_date.isoformat()],
        "indexes": list(cfg.urls) if cfg is not None else [],
        "exclude_newer": cutoff.isoformat() if cutoff else None,
        "release_lock": lock.sha256 if lock is not None else None,
        "package_base_url": base_url if lock is not None else None,
        "pre": pre,
    }
    if build:
        from .sdist import table_digest

        doc["build"] = table_digest()
    if implicit:
        doc["implicit"] = sorted(implicit)
        doc["server_only"] = hashlib.sha256(SERVER_ONLY_TABLE.read_bytes()).hexdigest()
    return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def resolve(requirements: str | os.PathLike | Iterable[str] | RequirementsInput,
            target: Any, *,
            pyodide_lock: str | os.PathLike | ReleaseLock | None = None,
            package_base_url: str | None = DEFAULT,
            index_url: str | None = None,
            extra_index_urls: Sequence[str] | None = None,
            exclude_newer: Any = DEFAULT,
            lock_path: str | os.PathLike | None = None,
            pre: bool = False,
            cache_dir: str | os.PathLike | None = None,
            transport: Any = None,
            page_ttl: float | None = None,
            progress: Any = None,
            build: bool = False,
            implicit: Sequence[str] = (),
            server_only: bool = True,
            missing_ok: bool = False) -> Resolution:
    """Resolve ``requirements`` for ``target`` into an exact, hash-pinned set of wheels.

    Args:
        requirements: a requirements file path (``str``/``PathLike``), an iterable of lines, or
            a parsed :class:`~pyworkers.packages.requirements.RequirementsInput`.
        target: a ``RuntimeSelection`` (``pyworkers.compat.select``), a ``Release``, a
            :class:`~pyworkers.packages.target.Target` or a Pyodide version string.
        pyodide_lock: the release's ``pyodide-lock.json`` (file or directory), or ``None`` to
            resolve from the index alone.
        package_base_url: where the lock's wheels download from; default ``$PYWORKERS_PACKAGE_
            BASE_URL`` or pyodide-build's CDN for the release; ``None``/``""``: do not download
            from the lock (its versions are still preferred on the index).
        index_url, extra_index_urls: override the configured indexes (see
            :func:`~pyworkers.packages.index.index_config`); ``-i``/``--extra-index-url`` lines
            in the file apply when these are not given.
        exclude_newer: PEP 700 cut-off: a ``date`` (midnight UTC), an aware ``datetime``, a
            ``"YYYY-MM-DD"``/RFC 3339 string, ``None`` (no cut-off); default the target's
            package-set date.
        lock_path: a ``pylock.toml`` (PEP 751). If it exists and was made from the same inputs
            it is returned as is, with no network access (``reused=True``); otherwise the new
            resolution is written there.
        pre: allow pre-releases (also ``--pre`` in the file).
        cache_dir: cache root (default ``$PYWORKERS_CACHE_DIR`` or the user cache dir).
        transport: an ``httpx`` transport replacing the network (tests).
        page_ttl: seconds index pages stay cached on disk (default 600; 0 disables).
        progress: ``None``, a ``(str) -> None`` callable or a
            :class:`~pyworkers.packages.progress.Progress`.
        build: when a project has no usable wheel, build a pure-Python wheel from its newest
            sdist in range (:mod:`~pyworkers.packages.sdist`; wheels are always preferred).
            The CLI and deploy turn this on unless ``--no-build``.
        implicit: requirements added to every resolution unless the input names them
            (:data:`IMPLICIT_REQUIREMENTS`); one that cannot be resolved is left out with a
            note instead of failing.
        server_only: leave packages of ``server_only.toml`` out of the resolution
            (``Resolution.left_out`` and a note) when another package pulls them in (e.g.
            ``fastapi[standard]``), and when the user lists one that has no usable wheel;
            one the user lists that has a wheel is installed (``import uvicorn`` works).
        missing_ok: report projects without a usable wheel in ``Resolution.unavailable``
            instead of raising :class:`NoCompatibleWheelError` (``pyworkers check``); nothing is
            written to ``lock_path`` then.

    Returns a :class:`Resolution` (wheels sorted by name).

    Raises:
        RequirementsError: unreadable or refused input (VCS, editable, sdist, source tree).
        NoCompatibleWheelError: a required project has no wheel for the target.
        ConflictError: conflicting requirements (resolvelib's causes as a chain in ``detail``).
        HashMismatchError: a ``--hash`` does not match a direct wheel.
        NetworkError: the index could not be reached (after bounded retries).
        LockFileError: ``pyodide_lock`` is unreadable or for another Python.
        IndexConfigError: no index configured and pip absent.
        SdistBuildError: an sdist chosen as the fallback did not build a pure-Python wheel
            (names the project, the reason and the alternatives).
    """
    from .pylock import read_lock, write_lock

    prog = as_progress(progress)
    t = Target.of(target)
    reqs = requirements if isinstance(requirements, RequirementsInput) \
        else parse_requirements(requirements)
    for n in reqs.notes:
        prog.note(n)
    lock = pyodide_lock if isinstance(pyodide_lock, ReleaseLock) or pyodide_lock is None \
        else read_release_lock(pyodide_lock)
    if lock is not None and lock.python != t.release.python_version:
        from .errors import LockFileError

        raise LockFileError(f"{lock.path} is for Python {lock.python}, but {t.name} runs "
                            f"Python {t.release.python_version}: pass the release's own lock")
    base_url = default_package_base_url(t.release.pyodide_version) \
        if package_base_url == DEFAULT else (package_base_url or None)
    if lock is not None and base_url is None:
        prog.note("no package base URL for the release lock: its wheels come from the index")
    cfg = None
    if not reqs.no_index or index_url:
        cfg = index_config(index_url or reqs.index_url,
                           extra_index_urls if extra_index_urls is not None
                           else (list(reqs.extra_index_urls) or None))
        if reqs.extra_index_urls and extra_index_urls is None:
            cfg = dataclasses.replace(cfg, extra_index_urls=tuple(dict.fromkeys(
                (*cfg.extra_index_urls, *reqs.extra_index_urls))))
    cutoff = _cutoff(exclude_newer, t)
    top_names = {ir.name for ir in reqs.requirements}
    implicit = tuple(n for n in (canonicalize_name(x) for x in implicit) if n not in top_names)
    digest = inputs_digest(reqs, t, cfg, cutoff, lock, base_url, pre or reqs.pre, build, implicit)

    if lock_path is not None and Path(lock_path).is_file():
        try:
            old = read_lock(lock_path)
        except PackagesError:
            old = None
        if old is not None and old.inputs == digest:
            prog.note(f"{lock_path}: inputs unchanged, reusing the lock")
            return dataclasses.replace(old, reused=True)

    root = cache_root(cache_dir) / "packages"
    cache = WheelCache(root)
    http = Http(transport=transport, cert=cfg.cert if cfg is not None else None)
    try:
        index = None
        if cfg is not None:
            index = PackageIndex(cfg, http=http, cache_dir=root,
                                 ttl=600 if page_ttl is None else page_ttl,
                                 wheel_lookup=cache.lookup, wheel_store=cache.store_bytes,
                                 note=prog.note)
        ctx = _Context(t, index, lock, base_url, cutoff, pre or reqs.pre, cache, http, prog)
        ctx.cutoff_is_default = isinstance(exclude_newer, str) and exclude_newer == DEFAULT
        if build:
            from .sdist import SdistBuilder

            ctx.builder = SdistBuilder(root, http, prog, index_url=index_url or reqs.index_url)
        else:
            ctx.no_build = True
        if server_only:
            ctx.server_only = server_only_packages()
        top: list[Req] = []
        skipped: list[str] = []
        env = t.environment
        for ir in reqs.requirements:
            r = ir.requirement
            if r.marker is not None and not r.marker.evaluate({**env, "extra": ""}):
                skipped.append(f"{ir.name} ({ir.origin}): {r.marker} is false on {t.name}")
                continue
            ctx.top_origin.setdefault(ir.name, ir.origin)
            top.append(Req(ir.name, frozenset(canonicalize_name(e) for e in r.extras),
                           r.specifier, ir.url, ir.hashes, parent=None, input=ir))
        top = merge_duplicates(top)
        for s in skipped:
            prog.note(f"skipped {s}")
        for n in implicit:
            top.append(Req(n, parent=None))
        ctx.top_names = {r.name for r in top}
        resolver = resolvelib.Resolver(_Provider(ctx), _Reporter(prog))
        try:
            result = resolver.resolve(top, max_rounds=MAX_ROUNDS)
        except resolvelib.ResolutionImpossible as e:
            raise _impossible(ctx, e) from None
        except resolvelib.ResolutionTooDeep:
            raise ConflictError(f"resolution gave up after {MAX_ROUNDS} rounds of backtracking: "
                                "pin some versions in the requirements", []) from None
        if index is not None:
            for root_url in index.skipped_indexes:
                ctx.note(f"index {root_url} does not exist; skipped")
        missing = []
        left_out: list[str] = []
        for ident, c in result.mapping.items():
            if isinstance(c, ExtrasCandidate) or c.source != "missing":
                continue
            infos = list(result.criteria[ident].information)
            spec = SpecifierSet()
            for i in infos:
                spec &= i.requirement.specifier
            reqs_of = [i.requirement for i in infos]
            if c.name in implicit and all(r.parent is None and r.input is None for r in reqs_of):
                ctx.note(ctx.implicit_missing(c.name))
                continue
            if c.name in ctx.server_only:
                who = next((r.parent for r in reqs_of if r.parent), None)
                by = (f"required by {ctx.chain(who)}" if who else
                      next((r.input.origin for r in reqs_of if r.input is not None), "requested"))
                left_out.append(f"{c.name} ({by}): {ctx.server_only[c.name]}")
                continue
            missing.append(ctx.no_wheel_error(c.name, reqs_of, spec))
        final = {c.name for c in result.mapping.values()
                 if isinstance(c, Candidate) and c.source != "missing"}
        left_out = sorted({text for (n, parent), text in ctx.dropped.items()
                           if parent in final and n not in final} | set(left_out))
        if missing and not missing_ok:
            raise _missing_error(sorted(missing, key=lambda e: e.project))
        for lo in left_out:
            ctx.note(f"left out of the layer (server-only: the app runs behind pyworkers' "
                     f"server): {lo}")
        for c in result.mapping.values():
            if isinstance(c, Candidate) and not c.sha256 and c.source not in ("missing", "sdist"):
                # The index gave no hash: download the wheel (into the cache) and pin its digest.
                prog.status(f"hashing {c.filename}")
                path, c.sha256 = cache.fetch(http, c.url, None)
                c.size = path.stat().st_size
        wheels = _pins(result)
    finally:
        http.close()
    built = [f"{w.name} {w.version} ({w.sdist.filename})" for w in wheels if w.sdist is not None]
    if built:
        ctx.note("built pure-Python wheels from sdists (C extensions off): " + ", ".join(built))
    res = Resolution(tuple(wheels), t.to_json(), cfg.urls if cfg is not None else (), cutoff,
                     digest, tuple(skipped), tuple(ctx.notes), left_out=tuple(left_out),
                     unavailable=tuple(sorted(missing, key=lambda e: e.project)))
    if lock_path is not None and not missing:
        write_lock(res, lock_path)
    return res


def _pins(result: Any) -> list[PinnedWheel]:
    deps: dict[str, set[str]] = {}
    for ident in result.graph:
        if ident is None:
            continue
        n, _ = _split_ident(ident)
        for child in result.graph.iter_children(ident):
            cn, _ = _split_ident(child)
            if cn != n:
                deps.setdefault(n, set()).add(cn)
    out = []
    pinned = {c.name for c in result.mapping.values()
              if isinstance(c, Candidate) and c.source != "missing"}
    for ident, c in result.mapping.items():
        if isinstance(c, ExtrasCandidate) or c.source == "missing":
            continue
        dep_names = tuple(sorted(d for d in deps.get(c.name, ()) if d in pinned))
        if c.source == "sdist":
            b = c.built
            out.append(PinnedWheel(c.name, str(c.version), "sdist", b.filename, c.url, b.sha256,
                                   b.size, c.upload_time, c.index, dep_names,
                                   SdistRef(c.filename, c.url, b.sdist_sha256, c.size)))
            continue
        out.append(PinnedWheel(c.name, str(c.version), c.source, c.filename, c.url,
                               c.sha256 or "", c.size, c.upload_time,
                               c.index if c.source == "index" else None, dep_names))
    return sorted(out, key=lambda w: w.name)


def _impossible(ctx: _Context, e: Any) -> PackagesError:
    causes = list(e.causes)
    by_name: dict[str, list] = {}
    for c in causes:
        by_name.setdefault(c.requirement.name, []).append(c)

    def who(c: Any) -> str:
        if c.parent is None:
            return c.requirement.input.origin if c.requirement.input else "the requirements"
        return ctx.chain(f"{c.parent.name} {c.parent.version}")

    pairs = [(str(c.requirement), who(c)) for c in causes]
    detail = "\n".join(f"  {r}  <- {w}" for r, w in pairs)
    # A single project with no release in the requested range at all: say so plainly.
    if len(by_name) == 1:
        name, cs = next(iter(by_name.items()))
        spec = SpecifierSet()
        for c in cs:
            spec &= c.requirement.specifier
        cands = ctx.candidates(name)
        hashes = [h for c in cs for h in c.requirement.hashes]
        if hashes and not any(f"sha256:{c.sha256}" in hashes for c in cands):
            offered = ", ".join(f"{c.version}: sha256:{c.sha256}" for c in cands[:3])
            return ConflictError(f"{name}: no file matches the --hash values "
                                 f"({'; '.join(w for _, w in pairs)}); the index offers "
                                 f"{offered}", pairs, detail)
        if len(causes) == 1 and not cs[0].requirement.url and not list(
                spec.filter([c.version for c in cands], prereleases=True)):
            usable = sorted({c.version for c in cands})
            tail = (f"; the newest with a wheel for {ctx.target.name} is {usable[-1]}" if usable
                    else "")
            asked = "; ".join(f"{w} requires {r}" for r, w in pairs[:4])
            return ConflictError(f"{name}: no release matches {spec or 'the requirement'} "
                                 f"({asked}){tail}", pairs, detail)
    names = ", ".join(sorted(by_name))
    parts = "; ".join(f"{w} requires {r}" for r, w in pairs[:4])
    return ConflictError(f"conflicting requirements for {names}: {parts}", pairs, detail)


def _missing_error(errs: list[NoCompatibleWheelError]) -> NoCompatibleWheelError:
    if len(errs) == 1:
        return errs[0]
    first = errs[0]
    others = ", ".join(e.project for e in errs[1:])
    detail = "\n".join(e.message + (("\n  " + e.detail.replace("\n", "\n  ")) if e.detail else "")
                       for e in errs)
    err = NoCompatibleWheelError(f"{first.message} (also without a wheel: {others})",
                                 project=first.project, target=first.target,
                                 platform_tag=first.platform_tag,
                                 newest_compatible=first.newest_compatible,
                                 required_by=first.required_by, detail=detail)
    err.projects = tuple(e.project for e in errs)
    return err
