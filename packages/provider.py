"""The ``resolvelib`` provider and reporter of :func:`pyworkers.packages.resolver.resolve`:
preference order, candidate matching (wheels, then a wheel built from an sdist, else a
placeholder for a project without a usable wheel) and dependencies, all through a
:class:`~pyworkers.packages.resolve_context.ResolveContext`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import resolvelib
from packaging.specifiers import SpecifierSet

from .candidates import Candidate, ExtrasCandidate, Req, ident, split_ident
from .progress import Progress

if TYPE_CHECKING:
    from .resolve_context import ResolveContext


class Provider(resolvelib.AbstractProvider):
    """resolvelib's view of the candidates and dependencies of ``ctx`` (preference: direct
    and pinned requirements, backtrack causes and the user's own requirements first)."""

    def __init__(self, ctx: "ResolveContext") -> None:
        self.ctx = ctx

    def identify(self, requirement_or_candidate: Any) -> str:
        x = requirement_or_candidate
        if isinstance(x, Req):
            return x.identifier
        if isinstance(x, ExtrasCandidate):
            return ident(x.name, x.extras)
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
        name, extras = split_ident(identifier)
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


class Reporter(resolvelib.BaseReporter):
    """Shows the project being pinned as the progress status."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def pinning(self, candidate: Any) -> None:
        self.progress.status(f"resolving: {candidate!r}")

