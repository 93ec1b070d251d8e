"""Deploy progress: the :class:`DeployProgress` interface the pipeline reports to, its
callable and ``rich`` (:class:`RichDeployProgress`) forms, and the size/time formatting used in
the stage summaries."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from pyworkers.packages.progress import Progress


class DeployProgress(Progress):
    """Receives the deploy's progress; every method is a no-op here. It is also a
    :class:`pyworkers.packages.Progress` (notes, status, download bars) for the package stages.
    """

    def stage_start(self, stage: str) -> None:
        """Stage ``stage`` begins."""

    def stage_done(self, stage: str, seconds: float, summary: str) -> None:
        """Stage ``stage`` finished after ``seconds``; ``summary`` is one line ('' if none)."""

    def stage_failed(self, stage: str, seconds: float) -> None:
        """Stage ``stage`` failed after ``seconds`` (the error follows as an exception)."""

    def warn(self, message: str) -> None:
        """A warning (e.g. the app's top level used entropy before the snapshot)."""


class _CallableDeployProgress(DeployProgress):
    def __init__(self, fn: Callable[[str], None]):
        self.fn = fn

    def note(self, message: str) -> None:
        self.fn(f"note: {message}")

    def warn(self, message: str) -> None:
        self.fn(f"warning: {message}")

    def stage_start(self, stage: str) -> None:
        self.fn(f"stage {stage}")

    def stage_done(self, stage: str, seconds: float, summary: str) -> None:
        self.fn(f"done {stage} {seconds * 1000:.0f} ms {summary}".rstrip())

    def stage_failed(self, stage: str, seconds: float) -> None:
        self.fn(f"failed {stage} {seconds * 1000:.0f} ms")


def as_progress(p: DeployProgress | Callable[[str], None] | None) -> DeployProgress:
    """``p`` as a :class:`DeployProgress` (``None``: a silent one; a callable gets one line per
    event). Raises ``TypeError`` for anything else."""
    if p is None:
        return DeployProgress()
    if isinstance(p, DeployProgress):
        return p
    if callable(p):
        return _CallableDeployProgress(p)
    raise TypeError(f"progress must be a DeployProgress or a callable, not {type(p).__name__}")


class RichDeployProgress(DeployProgress):
    """Progress on stderr with ``rich``: one line per finished stage (name, time, summary), a
    spinner for the running stage, download bars, notes and warnings. A context manager.

    When stderr is not a terminal the lines are plain text; a line ``-> <stage>`` is printed as
    each stage starts, so a script (or a test) can follow the deploy."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        from pyworkers.packages import RichProgress

        self.console = console or Console(stderr=True, highlight=False)
        self._rich = RichProgress(self.console)
        self._live = self.console.is_terminal

    def __enter__(self) -> "RichDeployProgress":
        self._rich.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._rich.__exit__(*exc)

    def _print(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        self._print(f"note: {message}", "dim")

    def warn(self, message: str) -> None:
        self._print(f"warning: {message}", "yellow")

    def status(self, message: str) -> None:
        self._rich.status(message)

    def download_start(self, filename: str, total: int | None) -> None:
        self._rich.download_start(filename, total)

    def download_advance(self, filename: str, nbytes: int) -> None:
        self._rich.download_advance(filename, nbytes)

    def download_end(self, filename: str) -> None:
        self._rich.download_end(filename)

    def stage_start(self, stage: str) -> None:
        if self._live:
            self._rich.status(f"{stage} ...")
        else:
            self._print(f"-> {stage}")
        if hasattr(self.console, "file"):
            with contextlib.suppress(Exception):
                self.console.file.flush()

    def stage_done(self, stage: str, seconds: float, summary: str) -> None:
        self._print(f"  ok  {stage:<9}{fmt_seconds(seconds):>9}  {summary}".rstrip(), "green"
                    if self._live else None)

    def stage_failed(self, stage: str, seconds: float) -> None:
        self._print(f"  FAIL {stage:<8}{fmt_seconds(seconds):>9}", "red" if self._live else None)


def fmt_seconds(seconds: float) -> str:
    """``0.25`` -> ``"250 ms"``, ``2.5`` -> ``"2.50 s"``."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_bytes(n: int | None) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class RenamedProgress(Progress):
    """Forwards to ``inner``, showing ``path`` (a staging path) as ``shown`` in messages."""

    def __init__(self, inner: Progress, path: str, shown: str):
        self.inner, self.path, self.shown = inner, path, shown

    def note(self, message: str) -> None:
        self.inner.note(message.replace(self.path, self.shown))

    def status(self, message: str) -> None:
        self.inner.status(message.replace(self.path, self.shown))

    def download_start(self, filename: str, total: int | None) -> None:
        self.inner.download_start(filename, total)

    def download_advance(self, filename: str, nbytes: int) -> None:
        self.inner.download_advance(filename, nbytes)

    def download_end(self, filename: str) -> None:
        self.inner.download_end(filename)
