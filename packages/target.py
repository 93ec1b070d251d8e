"""The runtime a resolution is made for: wheel tags, marker environment, package-set date.

A :class:`Target` is built from a :class:`pyworkers.compat.RuntimeSelection` (what
``compat.select`` returns) or from a bare :class:`pyworkers.compat.releases.Release` plus a
package-set date. Everything that depends on the runtime and not on the host comes from here:

* wheel tags (``packaging.tags``): ``cp314-cp314-<platform>``, ``cp314-abi3-<platform>`` down to
  ``cp32-abi3``, ``cp314-none-<platform>``, ``py3*-none-<platform>`` and ``py3*-none-any``, most
  specific first, with the release's platform tag (e.g. ``pyemscripten_2026_0_wasm32``);
* the PEP 508 marker environment of the sandbox (``sys_platform == "emscripten"``,
  ``platform_machine == "wasm32"``, the release's Python version ...), never the host's.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
from typing import Any

from packaging import tags as _tags
from packaging.version import Version

from pyworkers.compat.releases import Release


@dataclasses.dataclass(frozen=True)
class Target:
    """One runtime to resolve for.

    Attributes:
        release: the runtime release (Pyodide build).
        package_set_date: the date its package set is pinned to (PEP 700 cut-off default).
        selection: the ``RuntimeSelection`` it came from, or ``None`` for a bare release.
    """

    release: Release
    package_set_date: _dt.date
    selection: Any = None

    @classmethod
    def of(cls, obj: Any, package_set_date: _dt.date | None = None) -> "Target":
        """Build a target from a ``RuntimeSelection``, a ``Release``, a ``Target`` or a Pyodide
        version string (``"314.0.7"``). ``package_set_date`` overrides the release's.

        Raises ``TypeError`` for anything else and ``UnknownReleaseError`` for an unknown version.
        """
        if isinstance(obj, Target):
            return obj if package_set_date is None else dataclasses.replace(
                obj, package_set_date=package_set_date)
        if isinstance(obj, str):
            from pyworkers.compat.releases import get_release

            obj = get_release(obj)
        if isinstance(obj, Release):
            return cls(obj, package_set_date or obj.package_set_date, None)
        rel = getattr(obj, "release", None)
        if isinstance(rel, Release):  # a RuntimeSelection (duck-typed: no import cycle)
            return cls(rel, package_set_date or obj.package_set_date, obj)
        raise TypeError(f"expected a RuntimeSelection or Release, got {type(obj).__name__}")

    @property
    def name(self) -> str:
        """``"Pyodide 314.0.7"``."""
        return f"Pyodide {self.release.pyodide_version}"

    @property
    def platform_tag(self) -> str:
        """The wheel platform tag, e.g. ``pyemscripten_2026_0_wasm32``."""
        return self.release.platform_tag

    @property
    def python_version(self) -> Version:
        """The CPython version inside the runtime (``3.14.2``)."""
        return Version(self.release.python_version)

    @functools.cached_property
    def tags(self) -> tuple[_tags.Tag, ...]:
        """Supported wheel tags, most preferred first (``packaging.tags``)."""
        v = self.python_version
        pyver = (v.major, v.minor)
        interp = f"cp{v.major}{v.minor}"
        plats = [self.platform_tag]
        out = list(_tags.cpython_tags(pyver, abis=[interp], platforms=plats))
        out += list(_tags.compatible_tags(pyver, interpreter=interp, platforms=plats))
        return tuple(dict.fromkeys(out))

    @functools.cached_property
    def tag_rank(self) -> dict[_tags.Tag, int]:
        """Tag -> preference rank (0 = best)."""
        return {t: i for i, t in enumerate(self.tags)}

    def wheel_rank(self, wheel_tags) -> int | None:
        """Best rank among a wheel's tags (from ``parse_wheel_filename``), ``None`` if the wheel
        does not run on this target."""
        ranks = [self.tag_rank[t] for t in wheel_tags if t in self.tag_rank]
        return min(ranks) if ranks else None

    @functools.cached_property
    def environment(self) -> dict[str, str]:
        """The PEP 508 marker environment inside the sandbox (as Pyodide reports it)."""
        v = self.python_version
        full = self.release.python_version
        return {
            "implementation_name": "cpython",
            "implementation_version": full,
            "os_name": "posix",
            "platform_machine": "wasm32",
            "platform_release": self.release.emscripten_version,
            "platform_system": "Emscripten",
            "platform_version": "#1",
            "python_full_version": full,
            "platform_python_implementation": "CPython",
            "python_version": f"{v.major}.{v.minor}",
            "sys_platform": "emscripten",
        }

    def to_json(self) -> dict:
        """What the resolution was made for (stored in ``pylock.toml``): the selection's
        ``to_json()`` when there is one, else the release's identifying fields."""
        if self.selection is not None and hasattr(self.selection, "to_json"):
            return dict(self.selection.to_json())
        return {**self.release.to_json(), "package_set_date": self.package_set_date.isoformat()}
