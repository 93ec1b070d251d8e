"""Progress reporting for resolving and downloading.

Public functions take ``progress=``: ``None`` (silent), a callable ``(message: str) -> None``
(receives notes and status lines, like the runtime installer's ``Progress``), or a
:class:`Progress` object. :class:`RichProgress` draws a status line and download bars on stderr
with ``rich`` (the CLI uses it).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Progress:
    """Receives progress events; every method is a no-op here. Thread-safe subclasses only:
    downloads report from worker threads."""

    def note(self, message: str) -> None:
        """A one-line notice worth keeping (a fallback taken, a requirement skipped)."""

    def status(self, message: str) -> None:
        """A transient status line (``"resolving fastapi"``)."""

    def download_start(self, filename: str, total: int | None) -> None:
        """A download of ``total`` bytes (``None``: unknown) begins."""

    def download_advance(self, filename: str, nbytes: int) -> None:
        """``nbytes`` more bytes of ``filename`` arrived."""

    def download_end(self, filename: str) -> None:
        """The download of ``filename`` finished (or failed)."""


class _CallableProgress(Progress):
    def __init__(self, fn: Callable[[str], None]) -> None:
        self.fn = fn
        self._lock = threading.Lock()

    def note(self, message: str) -> None:
        with self._lock:
            self.fn(message)

    def status(self, message: str) -> None:
        with self._lock:
            self.fn(message)


def as_progress(p: Progress | Callable[[str], None] | None) -> Progress:
    """Normalise a ``progress=`` argument (see the module docstring)."""
    if p is None:
        return Progress()
    if isinstance(p, Progress):
        return p
    if callable(p):
        return _CallableProgress(p)
    raise TypeError(f"progress must be a callable or a Progress, not {type(p).__name__}")


class RichProgress(Progress):
    """``rich`` progress on stderr: notes printed as ``note: ...``, a spinner with the current
    status, one bar per download. Use as a context manager."""

    def __init__(self, console: Any = None, *, transient: bool = True) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress as _P, SpinnerColumn,
                                   TextColumn, TransferSpeedColumn)

        self.console = console or Console(stderr=True)
        self._p = _P(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                     DownloadColumn(), TransferSpeedColumn(), console=self.console,
                     transient=transient)
        self._status = None
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "RichProgress":
        self._p.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._p.stop()

    def note(self, message: str) -> None:
        self._p.console.print(f"note: {message}", markup=False, highlight=False, soft_wrap=True)

    def status(self, message: str) -> None:
        with self._lock:
            if self._status is None:
                self._status = self._p.add_task(message, total=None)
            else:
                self._p.update(self._status, description=message)

    def download_start(self, filename: str, total: int | None) -> None:
        with self._lock:
            self._tasks[filename] = self._p.add_task(filename, total=total)

    def download_advance(self, filename: str, nbytes: int) -> None:
        t = self._tasks.get(filename)
        if t is not None:
            self._p.advance(t, nbytes)

    def download_end(self, filename: str) -> None:
        with self._lock:
            t = self._tasks.pop(filename, None)
        if t is not None:
            self._p.remove_task(t)
