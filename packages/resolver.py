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

The parts, next to this module: :mod:`~pyworkers.packages.candidates` (the resolver's model),
:mod:`~pyworkers.packages.resolve_context` (sources, candidates and dependencies of one
resolution), :mod:`~pyworkers.packages.provider` (the ``resolvelib`` provider) and
:mod:`~pyworkers.packages.explain` (error messages and explanations); the lock is written by
:mod:`~pyworkers.packages.pylock`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import resolvelib
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from .cache import WheelCache, cache_root
from .candidates import Candidate, ExtrasCandidate, Req, merge_duplicates, split_ident
from .errors import ConflictError, PackagesError
from .explain import implicit_missing, impossible, missing_error, no_wheel_error
from .http_client import Http
from .index import IndexConfig, PackageIndex, index_config
from .progress import as_progress
from .provider import Provider, Reporter
from .release_lock import DEFAULT, ReleaseLock, default_package_base_url, read_release_lock
from .requirements import RequirementsInput, parse_requirements
from .resolve_context import ResolveContext
from .target import Target
from .resolution import (IMPLICIT_REQUIREMENTS, SERVER_ONLY_TABLE, PinnedWheel,  # noqa: F401
                         Resolution, SdistRef, server_only_packages)


#: Format of the input digest stored in ``pylock.toml`` (bump when resolution rules change).
INPUTS_FORMAT = 1
#: resolvelib rounds before giving up (bounded backtracking).
MAX_ROUNDS = 20000


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
        ctx = ResolveContext(t, index, lock, base_url, cutoff, pre or reqs.pre, cache, http, prog)
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
        resolver = resolvelib.Resolver(Provider(ctx), Reporter(prog))
        try:
            result = resolver.resolve(top, max_rounds=MAX_ROUNDS)
        except resolvelib.ResolutionImpossible as e:
            raise impossible(ctx, e) from None
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
                ctx.note(implicit_missing(c.name))
                continue
            if c.name in ctx.server_only:
                who = next((r.parent for r in reqs_of if r.parent), None)
                by = (f"required by {ctx.chain(who)}" if who else
                      next((r.input.origin for r in reqs_of if r.input is not None), "requested"))
                left_out.append(f"{c.name} ({by}): {ctx.server_only[c.name]}")
                continue
            missing.append(no_wheel_error(ctx, c.name, reqs_of, spec))
        final = {c.name for c in result.mapping.values()
                 if isinstance(c, Candidate) and c.source != "missing"}
        left_out = sorted({text for (n, parent), text in ctx.dropped.items()
                           if parent in final and n not in final} | set(left_out))
        if missing and not missing_ok:
            raise missing_error(sorted(missing, key=lambda e: e.project))
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
        n, _ = split_ident(ident)
        for child in result.graph.iter_children(ident):
            cn, _ = split_ident(child)
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
