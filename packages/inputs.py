"""Where an app's requirements come from (first match wins):

1. ``requirements.txt`` (pip's format, :func:`~pyworkers.packages.requirements.parse_requirements`);
2. ``pyproject.toml`` ``[project] dependencies``, plus the optional-dependency groups the worker
   configuration names (``dependency_groups = ["templates"]`` in ``pyworkers.toml``): each name is
   looked up in ``[project.optional-dependencies]``, then in PEP 735 ``[dependency-groups]``
   (``{include-group = "..."}`` entries followed);
3. ``pylock.toml`` as given (a PEP 751 lock written by pyworkers), installed without resolving.

Raises :class:`~pyworkers.packages.errors.RequirementsError` naming the file and key for an
unreadable ``pyproject.toml``, a dependency list that is not an array of strings, or a group name
that neither table has.
"""
from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Sequence
from pathlib import Path

from .errors import RequirementsError
from .requirements import RequirementsInput, parse_requirements


@dataclasses.dataclass(frozen=True)
class AppInputs:
    """``kind``: ``"requirements"`` | ``"pyproject"`` | ``"pylock"`` | ``None`` (no
    dependencies); ``path``: the file read; ``requirements``: the parsed input (``None`` for
    ``"pylock"`` and ``None`` kinds); ``groups``: the optional groups included."""

    kind: str | None
    path: Path | None
    requirements: RequirementsInput | None = None
    groups: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        """How the source is named in messages (``"pyproject.toml [project] dependencies"``)."""
        if self.kind == "pyproject":
            g = f" + {', '.join(self.groups)}" if self.groups else ""
            return f"pyproject.toml [project] dependencies{g}"
        return self.path.name if self.path is not None else "no requirements"


def _strings(v: object, where: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, (str, dict)) for x in v):
        raise RequirementsError(f"{where}: must be an array of requirement strings")
    return v  # type: ignore[return-value]


def _group(doc: dict, name: str, where: Path, seen: tuple[str, ...] = ()) -> list[str]:
    opt = (doc.get("project") or {}).get("optional-dependencies") or {}
    groups = doc.get("dependency-groups") or {}
    if name in opt:
        return [x for x in _strings(opt[name], f"{where}: [project.optional-dependencies] {name}")
                if isinstance(x, str)]
    if name in groups:
        out: list[str] = []
        for x in _strings(groups[name], f"{where}: [dependency-groups] {name}"):
            if isinstance(x, dict):
                inc = x.get("include-group")
                if not isinstance(inc, str) or inc in seen:
                    raise RequirementsError(f"{where}: [dependency-groups] {name}: bad or "
                                            f"cyclic include-group {x!r}")
                out += _group(doc, inc, where, (*seen, name))
            else:
                out.append(x)
        return out
    known = sorted({*opt, *groups})
    raise RequirementsError(
        f"{where}: dependency group {name!r} (dependency_groups in the worker configuration) is "
        f"in neither [project.optional-dependencies] nor [dependency-groups]"
        + (f"; it has {', '.join(known)}" if known else ""))


def app_inputs(app_dir: str | Path, groups: Sequence[str] = ()) -> AppInputs:
    """The app's requirements (see the module docstring for the order). ``groups`` are the
    worker configuration's ``dependency_groups`` (only used with ``pyproject.toml``)."""
    app = Path(app_dir)
    req = app / "requirements.txt"
    if req.is_file():
        return AppInputs("requirements", req, parse_requirements(req))
    pp = app / "pyproject.toml"
    if pp.is_file():
        try:
            doc = tomllib.loads(pp.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise RequirementsError(f"{pp}: cannot read it ({e})") from None
        project = doc.get("project")
        if isinstance(project, dict) and ("dependencies" in project or groups):
            lines = [x for x in _strings(project.get("dependencies", []),
                                         f"{pp}: [project] dependencies") if isinstance(x, str)]
            for g in groups:
                lines += _group(doc, g, pp)
            return AppInputs("pyproject", pp, parse_requirements(
                lines, base_dir=app, label="pyproject.toml"), tuple(groups))
    lock = app / "pylock.toml"
    if lock.is_file():
        return AppInputs("pylock", lock)
    return AppInputs(None, None)
