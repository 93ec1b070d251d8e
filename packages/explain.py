"""The resolver's error messages and explanations: why a project has no usable wheel
(:func:`no_wheel_error`), why requirements conflict (:func:`impossible`, from resolvelib's
causes), several projects without a wheel in one error (:func:`missing_error`), and the note
for an implicit requirement left out (:func:`implicit_missing`)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .candidates import ProjectInfo, Req
from .errors import ConflictError, NoCompatibleWheelError, PackagesError
from .resolve_context import ResolveContext


def sdist_why(ctx: ResolveContext, info: ProjectInfo) -> str:
    """Why no wheel was built from the sdist (one clause)."""
    if ctx.no_build:
        return ("the sandbox cannot build from source, and building a pure-Python wheel "
                "from its sdist natively is turned off (--no-build)")
    if ctx.builder is None:
        return "the sandbox cannot build from source"
    fails = [(v, why) for v, why in info.build_failures.items() if why]
    if fails:
        v, why = max(fails)
        return f"no pure-Python wheel from the sdist of {v}: {why}"
    if not info.sdists:
        return "its sdists do not support this Python or are newer than the cut-off"
    return "no pure-Python wheel could be built from its sdist"


def implicit_missing(name: str) -> str:
    """The note for an implicit requirement that could not be resolved."""
    return (f"{name} (implicit: the IANA time zone database for zoneinfo) has no usable "
            "wheel here: left out; zoneinfo will only know UTC" if name == "tzdata"
            else f"{name} (implicit) has no usable wheel here: left out")


def no_wheel_error(ctx: ResolveContext, name: str, needed_by: Sequence[Req],
                   specifier: SpecifierSet | None = None) -> NoCompatibleWheelError:
    """The error for ``name`` (within ``specifier``) having no usable wheel, with the reason
    (unknown project, only sdists, too new, other Pythons, other platforms) and the newest
    version that does have a usable wheel."""
    info = ctx.project_info(name)
    t = ctx.target
    spec = specifier or SpecifierSet()
    pre = True if ctx.pre else None

    def rng(vs: Iterable[Version]) -> list[Version]:
        return sorted(spec.filter(sorted(vs), prereleases=pre))

    who = next((r.parent for r in needed_by if r.parent), None)
    origin = next((r.input.origin for r in needed_by if r.input is not None), None)
    by = f" (required by {ctx.chain(who)})" if who else (f" ({origin})" if origin else "")
    usable = sorted(info.compatible_versions)  # versions that passed every filter
    newest = str(usable[-1]) if usable else None
    matching = f" matching {spec}" if str(spec) else ""
    head = f"{name}: no wheel for {t.name} ({t.platform_tag}){matching}"
    tail = (f"the newest version with a compatible wheel is {newest}" if newest
            else f"{name} publishes none for this platform")
    too_new = rng(info.too_new)
    if info.files == 0 and not info.lock_reason and not ctx.has_candidates(name):
        where = ", ".join(ctx.index.config.urls) if ctx.index is not None else "no index"
        msg = f"{name}: not found on the package index ({where}){by}"
    elif too_new or (info.no_upload_time and not rng(info.compatible_versions)):
        cut = ctx.cutoff.date().isoformat() if ctx.cutoff else ""
        when = (f"; {name} {too_new[0]} has one, uploaded "
                f"{info.too_new[too_new[0]].date().isoformat()}" if too_new else
                f"; {info.no_upload_time} compatible file(s) have no upload time (PEP 700)")
        what = "the package-set date" if ctx.cutoff_is_default else "the cut-off"
        msg = (f"{head} uploaded before {cut} ({what}){when}{by}; pass "
               "--exclude-newer DATE or --no-exclude-newer")
    elif rng(info.python_excluded) and not rng(info.compatible_versions):
        v = rng(info.python_excluded)[-1]
        msg = (f"{head} that supports Python {t.release.python_version} ({name} {v} "
               f"requires Python {info.python_excluded[v]}){by}; {tail}")
    elif rng(info.sdist_versions) and info.incompatible_wheels == 0:
        msg = (f"{name}: only source distributions are published (newest "
               f"{rng(info.sdist_versions)[-1]}){by}; {sdist_why(ctx, info)}")
    else:
        msg = f"{head}; {tail}{by}"
        if rng(info.sdist_versions):
            msg += f"; {sdist_why(ctx, info)}"
    detail = []
    if info.lock_reason:
        detail.append(info.lock_reason)
    lp = ctx.lock.get(name) if ctx.lock is not None else None
    if lp is not None and not ctx.lock_downloads:
        why = "is unreachable" if ctx.base_url else "is not set"
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


def impossible(ctx: ResolveContext, e: Any) -> PackagesError:
    """The error for resolvelib's ``ResolutionImpossible`` ``e``: no file matching the
    ``--hash`` values, no release in the requested range, or a conflict between the
    requirements (each cause with who asked, as a chain, in ``detail``)."""
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


def missing_error(errs: list[NoCompatibleWheelError]) -> NoCompatibleWheelError:
    """One error for the projects without a usable wheel ``errs`` (sorted): the first
    one's message naming the others, every message in ``detail``, ``projects`` set."""
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
