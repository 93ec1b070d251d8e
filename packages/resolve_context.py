"""The state of one resolution (:func:`pyworkers.packages.resolver.resolve`): target,
sources (the release lock, the package index, direct wheels, sdist builds), the candidates of
each project, dependencies from wheel metadata, and who asked for what (for the messages)."""
from __future__ import annotations

import datetime as _dt
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (InvalidWheelFilename, canonicalize_name, parse_sdist_filename,
                             parse_wheel_filename)
from packaging.version import InvalidVersion, Version

from .cache import WheelCache
from .candidates import Candidate, ExtrasCandidate, ProjectInfo, Req
from .errors import NetworkError, NoCompatibleWheelError, PackagesError
from .http_client import Http
from .index import PackageIndex
from .lazy_wheel import metadata_from_zip
from .simple_api import IndexFile
from .progress import Progress
from .release_lock import ReleaseLock, wheel_url
from .target import Target


class ResolveContext:
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
        self._info: dict[str, ProjectInfo] = {}
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

    def _lock_candidate(self, name: str, info: ProjectInfo) -> Candidate | None:
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
        info = self._info.get(name, ProjectInfo())
        if info.files == 0 and not self._cands.get(name):
            return True
        return bool(list(spec.filter(sorted(info.all_versions),
                                     prereleases=True if self.pre else None)))

    def _build_candidates(self, name: str) -> list[Candidate]:
        info = self._info.setdefault(name, ProjectInfo())
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

    def _usable(self, f: IndexFile, v: Version, info: ProjectInfo) -> bool:
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
        info = self._info.get(name, ProjectInfo())
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
                info = self._info.get(c.name, ProjectInfo())
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

    def project_info(self, name: str) -> ProjectInfo:
        """What is known of ``name``'s files (empty when it was never looked up)."""
        return self._info.get(name, ProjectInfo())

    def has_candidates(self, name: str) -> bool:
        """Whether ``name`` was looked up and has at least one usable candidate."""
        return bool(self._cands.get(name))
