"""Errors raised by :mod:`pyworkers.packages`.

Every error's ``str()`` is one line that names what failed and, where there is one, the fix;
``detail`` holds optional further lines (the conflict chain, the files that were considered).
The CLI prints the line as ``error: ...`` and the detail below it.
"""
from __future__ import annotations


class PackagesError(Exception):
    """Base class. ``str(e)`` is one line; ``e.detail`` is extra text ('' if none)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class RequirementsError(PackagesError):
    """A requirements file cannot be read or asks for something the sandbox cannot run
    (VCS URLs, editables, source trees, sdists, unknown options)."""


class IndexConfigError(PackagesError):
    """No usable package index is configured (e.g. pip is absent and no ``--index-url``)."""


class NetworkError(PackagesError):
    """An HTTP request failed after the bounded retries. ``url`` is the address that failed."""

    def __init__(self, message: str, url: str, detail: str = "") -> None:
        super().__init__(message, detail)
        self.url = url


class NoCompatibleWheelError(PackagesError):
    """A required project has no wheel that runs on the target runtime.

    Attributes: ``project`` (canonical name), ``target`` (e.g. ``"Pyodide 0.29.3"``),
    ``platform_tag``, ``newest_compatible`` (newest version with a compatible wheel, ``None`` if
    there is none), ``required_by`` (who asked for it, e.g. ``"pydantic 2.12.5"``),
    ``projects`` (every project without a wheel: a resolution reports all of them at once; the
    message names the first, sorted by name, and ``detail`` has one paragraph per project).
    """

    def __init__(self, message: str, *, project: str, target: str, platform_tag: str,
                 newest_compatible: str | None = None, required_by: str | None = None,
                 detail: str = "") -> None:
        super().__init__(message, detail)
        self.project = project
        self.target = target
        self.platform_tag = platform_tag
        self.newest_compatible = newest_compatible
        self.required_by = required_by
        #: every project without a wheel (several when the resolution found more than one)
        self.projects: tuple[str, ...] = (project,)


class ConflictError(PackagesError):
    """The requirements conflict. ``causes`` lists ``(requirement, required_by)`` strings
    (resolvelib's ``ResolutionImpossible.causes``); ``detail`` shows them as a chain."""

    def __init__(self, message: str, causes: list[tuple[str, str]], detail: str = "") -> None:
        super().__init__(message, detail)
        self.causes = causes


class HashMismatchError(PackagesError):
    """A download's sha256 differs from the pinned one; the download was deleted."""

    def __init__(self, message: str, *, url: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.url = url
        self.expected = expected
        self.actual = actual


class LockFileError(PackagesError):
    """A ``pylock.toml`` (PEP 751) or ``pyodide-lock.json`` cannot be read or is not ours."""


class LayerError(PackagesError):
    """A wheel cannot be installed into the site-packages layer (bad RECORD, unsafe path,
    two wheels writing the same file)."""
