"""What makes a worker's isolates: :data:`IsolateFactory` (a snapshot restore, or boot +
import), :func:`with_app` (loads the ASGI app into an isolate unless its snapshot has it
loaded), :class:`AppFactory` (an app directory, development mode), and the
:class:`BindingHost` protocol a worker uses for its bindings."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol

from pyworkers.runtime.isolate import Isolate

#: the guest module that loads the ASGI app (``runtime/guest/_pyworkers_asgi.py``)
ADAPTER = "_pyworkers_asgi"


class IsolateFactory(Protocol):
    """Makes one isolate ready to serve: ``factory(*, stdout, stderr) -> Isolate``.

    The isolate must have run ``_pyworkers_asgi.load(<app>)`` (see :func:`with_app`);
    ``stdout``/``stderr`` are ``bytes -> None`` sinks for the guest's fd 1/2. Lifespan startup
    is the worker's job. Raises anything on failure (``GuestError`` with the traceback, ...).
    A factory may carry ``max_concurrency`` (the app's own setting, which wins over the
    server's ``--max-concurrency``).
    """

    def __call__(self, *, stdout: Callable[[bytes], None],
                 stderr: Callable[[bytes], None]) -> Isolate: ...


def with_app(make: Callable[..., Isolate], main: str, path: str | None = "/app", *,
             max_concurrency: int | None = None) -> IsolateFactory:
    """An :data:`IsolateFactory` from any isolate maker ``make(*, stdout, stderr) -> Isolate``
    (e.g. a snapshot ``Restorer.new_isolate``): after ``make`` it runs
    ``_pyworkers_asgi.load(main, path)``, unless the isolate says it has that app loaded
    already (``Isolate.loaded_app``: a dedicated snapshot taken after ``load``; the call would
    only cross into the guest and back, ~0.5 ms of a cold start). The isolate is closed if
    ``load`` raises."""

    def factory(*, stdout: Callable[[bytes], None], stderr: Callable[[bytes], None]) -> Isolate:
        iso = make(stdout=stdout, stderr=stderr)
        if getattr(iso, "loaded_app", None) == (main, path):
            return iso
        try:
            iso.call(f"{ADAPTER}:load", main, path)
        except BaseException:
            iso.close()
            raise
        return iso

    factory.max_concurrency = max_concurrency  # type: ignore[attr-defined]
    return factory


@dataclasses.dataclass(frozen=True)
class AppFactory:
    """:data:`IsolateFactory` for an app directory: boot a fresh isolate, import the app.

    ``release`` (``"314.0.7"``, a ``Release`` or ``Runtime``), ``app_dir`` (mounted read-only
    at ``/app``, the cwd), ``main`` (``"module:attribute"``), ``site_packages`` (layer or
    ``None``), ``env`` (guest environment), ``memory_limit`` (bytes), ``cache_dir``,
    ``max_concurrency`` (the app's own), ``egress`` (its outbound policy)."""

    release: Any
    app_dir: Any
    main: str
    site_packages: Any = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    memory_limit: int | None = None
    cache_dir: Any = None
    max_concurrency: int | None = None
    egress: Any = None

    def __call__(self, *, stdout: Callable[[bytes], None],
                 stderr: Callable[[bytes], None]) -> Isolate:
        def make(*, stdout, stderr) -> Isolate:
            return Isolate(self.release, site_packages=self.site_packages,
                           mounts={"/app": self.app_dir}, env=dict(self.env), stdout=stdout,
                           stderr=stderr, memory_limit=self.memory_limit, cwd="/app",
                           cache_dir=self.cache_dir, egress=self.egress)

        return with_app(make, self.main)(stdout=stdout, stderr=stderr)


class BindingHost(Protocol):
    """Performs binding operations for the guest (KV, SQL, objects: ``pyworkers.serve``'s
    bindings layer). ``declared()`` lists ``[{"name", "kind"}]`` given to the guest at start;
    ``call(binding, op, args, body)`` returns ``(JSON-able result, bytes)`` and raises
    ``KeyError``/``ValueError``/``PermissionError`` for errors the app should see as such."""

    def declared(self) -> list[dict]: ...

    async def call(self, binding: str, op: str, args: dict, body: bytes) -> tuple[Any, bytes]: ...


__all__ = ["ADAPTER", "AppFactory", "BindingHost", "IsolateFactory", "with_app"]
