"""Deploy: turn an app directory into an immutable, snapshotted deployment in the store.

:func:`deploy` runs these stages in order, timing each (milliseconds, ``timings_ms``):

=========  ===================================================================================
config     read ``pyworkers.toml`` / ``[tool.pyworkers]`` (:mod:`pyworkers.config`); the
           caller's overrides (CLI flags) win
runtime    select the runtime release (:mod:`pyworkers.compat`) and install it if needed
resolve    ``requirements.txt`` -> hash-pinned wheels (:func:`pyworkers.packages.resolve`);
           the lock is reused without the network when its inputs are unchanged (seeded from
           the app's ``pylock.toml``, else from the worker's current deployment)
download   the wheels into the shared, content-addressed wheel cache (verified)
layer      the site-packages layer (:func:`build_layer`), content-addressed by
           :func:`layer_hash`; reused from the store when a deployment already published it
app        copy the app's files into the deployment (hashed, streamed, modification times kept;
           VCS/cache/venv dirs skipped; size, file-count and symbolic-link checks: app_files)
boot       a fresh isolate: the layer as site-packages, the app copy read-only at ``/app``,
           the worker's vars as environment, ``/app`` on ``sys.path``
import     import ``main``'s module (runs its top level), check the attribute is an ASGI 3
           application (an ``async`` callable taking ``scope, receive, send``) and load it
           into the guest ASGI adapter (``runtime/guest/_pyworkers_asgi.py``)
snapshot   the dedicated snapshot (:func:`pyworkers.snapshot.take_snapshot`), or a package
           snapshot with ``no_python_dedicated_snapshot``
smoke      restore the snapshot into a fresh isolate and, through the guest ASGI adapter of
           ``pyworkers serve``, run the ASGI ``lifespan`` startup and a ``GET /`` (its status is
           only reported)
publish    write the record and publish the deployment atomically (:mod:`pyworkers.store`)
=========  ===================================================================================

Everything is built in a private staging directory inside the store and published by renames
at the end, so a failing or killed deploy leaves the store as it was.

Errors: :class:`DeployError` (``stage``, one-line ``message``, multi-line ``detail``: the app's
traceback from the sandbox, or the resolver's explanation). A failing top level, an import
error, a ``main`` that is not ASGI, an unresolvable requirement, a lifespan startup that fails,
all fail the deploy and write nothing.

Deployment record (``deployment.json``; paths relative to the store root)::

    {"format": 1, "id": "<name>-<YYYYMMDDTHHMMSSZ>-<6 hex>", "name": str,
     "created": "<UTC ISO 8601>Z", "pyworkers_version": str,
     "config": {"name", "main", "compatibility_date": "YYYY-MM-DD",
                "compatibility_flags": [str], "vars": {str: str},
                "bindings": {"kv"|"sql"|"objects": [{"binding", "url"?}]},
                "crons": [{"schedule", "path"}],
                "volumes": [{"mount", "max_size": int | null}],
                "source": "<config file>" | null, "app_dir": "<absolute source dir>"},
     "selection": RuntimeSelection.to_json(),
     "app": {"path": "deployments/<id>/app", "hash": "sha256:<hex>", "files": int,
             "bytes": int},
     "lock": null | {"path": "deployments/<id>/pylock.toml", "reused": bool,
                     "seed": "app" | "previous" | null, "inputs": "sha256:<hex>",
                     "packages": [{"name", "version", "source", "wheel", "sha256", "url"}],
                     "skipped": [str], "notes": [str],
                     "source": "requirements.txt" | "pyproject.toml [project] dependencies"
                               | "pylock.toml",
                     "built_from_sdist": [name], "left_out": [str]},
     "wheels": null | {"count": int, "bytes": int, "cached": int, "downloaded": int},
     "layer": null | {"hash": "sha256:<hex>", "path": "layers/<hex>", "reused": bool,
                      "files": int, "bytes": int, "unresolved_libraries": {so: [lib]},
                      "package_snapshot": {"path": "package-snapshots/<key>.pyws",
                                           "reused": bool}},
     "entropy_at_import": [[module, calls], ...],  # top-level entropy use (not `random`)
     "snapshot": {"path": "deployments/<id>/snapshot.bin", "type": "dedicated" | "package",
                  "bytes": int, "sha256": "sha256:<hex>", "metadata": {...}},
     "asgi": {"object": "<module.qualname of the app's type>", "adapter": "guest"},
     "smoke": {"restored_from_snapshot": true, "adapter": "guest",
               "lifespan": "complete" | "unsupported", "lifespan_message": str | null,
               "status": int | null, "body_bytes": int, "error": str | null,
               "prepare_ms": float, "ready_ms": float, "requests_ms": float},
     "timings_ms": {"config", "runtime", "resolve", "download", "layer", "app", "boot",
                    "import", "snapshot", "smoke", "total": float}}

(``timings_ms``: milliseconds per stage; ``total`` runs from the start to the publish step,
whose own time, a few milliseconds of renames, is only shown in the progress output.
``smoke.prepare_ms``: the first-use preparation of the snapshot's image module (a full
compile, cached per machine by ``pyworkers.snapshot``, so ``pyworkers serve`` restores the
published snapshot without it). ``smoke.ready_ms``: restoring the snapshot into a fresh
isolate (and, for a package snapshot, importing the app). ``smoke.requests_ms``: lifespan
startup, ``GET /`` and lifespan shutdown.) ``asgi.adapter``/``smoke.adapter``: always
``"guest"``: the guest ASGI adapter of ``pyworkers serve`` (``runtime/guest/_pyworkers_asgi.py``)
is loaded before the snapshot (a restored isolate is ready to serve) and drives the smoke test.

``lock``, ``wheels`` and ``layer`` are ``null`` for an app without ``requirements.txt``
(``wheels`` and ``layer`` also when the requirements resolve to no wheels). ``wheels.cached``
counts the wheels that were already in the shared cache before this deploy.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pyworkers import app_files as _app_files
from pyworkers.app_files import IGNORED_DIRS, IGNORED_FILES, IGNORED_SUFFIXES, AppDirError, AppLimits
from pyworkers.packages.progress import Progress
from pyworkers.store import RECORD_FORMAT, Deployment, Store, StoreError, utc_now

__all__ = ["DeployError", "DeployProgress", "RichDeployProgress", "deploy", "layer_hash",
           "Layer", "build_layer", "copy_app", "STAGES", "SNAPSHOT_FILE"]

#: The stages, in order (keys of ``timings_ms`` besides ``"total"``).
STAGES = ("config", "runtime", "resolve", "download", "layer", "app", "boot", "import",
          "snapshot", "smoke", "publish")
#: Name of the snapshot file inside a deployment.
SNAPSHOT_FILE = "snapshot.bin"
#: Version of the layer key (bump when the layer's layout changes).
LAYER_FORMAT = 2  # 2: layers carry the guest's bytecode (__pycache__)
#: Bytes of guest output kept for an error report.
_OUTPUT_CAP = 64 << 10


class DeployError(Exception):
    """The deploy failed in ``stage`` (one of :data:`STAGES`); nothing was written.

    ``message`` is one line naming what failed and the fix; ``detail`` holds the app's
    traceback from the sandbox, the resolver's explanation or the guest's output ('' if none).
    """

    def __init__(self, stage: str, message: str, detail: str = ""):
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.detail = detail


# --------------------------------------------------------------------------- progress

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


def _as_progress(p: DeployProgress | Callable[[str], None] | None) -> DeployProgress:
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
        self._print(f"  ok  {stage:<9}{_fmt_s(seconds):>9}  {summary}".rstrip(), "green"
                    if self._live else None)

    def stage_failed(self, stage: str, seconds: float) -> None:
        self._print(f"  FAIL {stage:<8}{_fmt_s(seconds):>9}", "red" if self._live else None)


def _fmt_s(seconds: float) -> str:
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


class _Renamed(Progress):
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


class _Stages:
    """Times stages and turns their exceptions into :class:`DeployError`."""

    def __init__(self, progress: DeployProgress):
        self.progress = progress
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[dict]:
        info = {"summary": ""}
        self.progress.stage_start(stage)
        t0 = time.perf_counter()
        try:
            yield info
        except BaseException as e:
            dt = time.perf_counter() - t0
            self.timings[stage] = round(dt * 1000, 1)
            self.progress.stage_failed(stage, dt)
            err = _as_deploy_error(stage, e)
            if err is e:
                raise
            raise err from e
        dt = time.perf_counter() - t0
        self.timings[stage] = round(dt * 1000, 1)
        self.progress.stage_done(stage, dt, info["summary"])


def _as_deploy_error(stage: str, e: BaseException) -> BaseException:
    from pyworkers.compat import CompatError
    from pyworkers.config import ConfigError
    from pyworkers.packages import PackagesError

    if isinstance(e, DeployError):
        return e
    if isinstance(e, (ConfigError, CompatError, StoreError)):
        return DeployError(stage, str(e))
    if isinstance(e, PackagesError):
        return DeployError(stage, e.message, e.detail)
    from pyworkers.runtime import GuestError, IsolateError
    from pyworkers.runtime.install import RuntimeInstallError

    if isinstance(e, RuntimeInstallError):
        return DeployError(stage, f"cannot install the runtime: {e}")
    if isinstance(e, GuestError):
        return DeployError(stage, f"the sandbox raised {e.type_name} during the {stage} stage: "
                                  f"{e.message}", e.traceback)
    if isinstance(e, IsolateError):
        return DeployError(stage, f"the sandbox failed during the {stage} stage: {e}")
    if isinstance(e, OSError):
        return DeployError(stage, f"{e} (during the {stage} stage)")
    if isinstance(e, Exception):  # a bug: keep the host traceback for the report
        import traceback

        return DeployError(stage, f"unexpected {type(e).__name__} during the {stage} stage: "
                                  f"{e} (a pyworkers bug: please report it with the traceback "
                                  "above)", "".join(traceback.format_exception(e)))
    return e


# --------------------------------------------------------------------------- helpers

def layer_hash(wheels: Sequence[Any]) -> str:
    """Content address of a site-packages layer: ``"sha256:<hex>"`` over :data:`LAYER_FORMAT`
    and the sorted ``(name, version, sha256)`` of its wheels (``PinnedWheel`` objects). The
    layer's files depend on nothing else, so equal hashes mean interchangeable layers."""
    doc = {"format": LAYER_FORMAT,
           "wheels": sorted([w.name, w.version, w.sha256] for w in wheels)}
    return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Layer:
    """A site-packages layer made by :func:`build_layer`."""

    hash: str  #: :func:`layer_hash` of its wheels
    path: Path  #: where it is now (to mount as site-packages)
    reused: bool  #: it already existed in ``layers_dir``
    unresolved_libraries: dict  #: ``{so: [lib]}`` of a new layer; ``{}`` when reused


def build_layer(wheels: Sequence[Any], layers_dir: Path, *, release: Any,
                staging_dir: Path | None = None, progress: Any = None) -> Layer:
    """The site-packages layer of ``wheels`` (downloaded ``CachedWheel`` objects), kept in
    ``layers_dir`` under the hex of its :func:`layer_hash`.

    An existing ``layers_dir/<hex>`` is reused. Otherwise the wheels are installed
    (:func:`pyworkers.packages.install_layer`) into ``staging_dir`` when given (a store's
    staging area, published later), else into ``layers_dir/<hex>`` itself, under a file lock
    (processes building the same layer wait for each other). A new layer then gets the
    bytecode of its modules, compiled by ``release``'s own CPython
    (:func:`pyworkers.runtime.bytecode.precompile_layer`: sandbox imports do not compile).
    Raises ``pyworkers.packages.PackagesError``.
    """
    from pyworkers.packages import install_layer

    lh = layer_hash([c.wheel for c in wheels])
    dest = Path(layers_dir) / lh.partition(":")[2]
    if dest.is_dir():
        return Layer(lh, dest, True, {})
    from pyworkers.runtime.bytecode import precompile_layer

    note = getattr(progress, "note", None)
    if staging_dir is not None:
        inst = install_layer(wheels, staging_dir, progress=progress)
        precompile_layer(staging_dir, release, progress=note)
        return Layer(lh, Path(staging_dir), False, inst.unresolved_libraries)
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{dest}.lock"):
        if dest.is_dir():  # built meanwhile by another process
            return Layer(lh, dest, True, {})
        tmp = dest.with_name(dest.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        inst = install_layer(wheels, tmp, progress=progress)
        precompile_layer(tmp, release, progress=note)
        os.replace(tmp, dest)
    return Layer(lh, dest, False, inst.unresolved_libraries)


def _tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, n)).st_size
    return files, size


def copy_app(src: Path, dest: Path, *, exclude: Sequence[Path] = (),
             note: Callable[[str], None] | None = None, limits: AppLimits | None = None) -> dict:
    """:func:`pyworkers.app_files.copy_app` (limits, streaming, kept modification times,
    symbolic links) with its :class:`~pyworkers.app_files.AppDirError` raised as a
    :class:`DeployError` of the ``app`` stage."""
    try:
        return _app_files.copy_app(src, dest, exclude=exclude, note=note, limits=limits)
    except AppDirError as e:
        raise DeployError("app", str(e)) from None


# --------------------------------------------------------------------------- guest harness

#: Code run inside the sandbox (as the module ``_pyworkers_deploy``): loads the app and checks
#: it is ASGI. Removed from ``sys.modules`` before the snapshot.
GUEST_HARNESS = r'''
import sys

HARNESS_FILE = "<pyworkers deploy>"


def _app_traceback(exc):
    """The exception's traceback without this harness's and importlib's frames."""
    import traceback

    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    seen = set()
    todo = [te]
    while todo:
        t = todo.pop()
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        frames = [f for f in t.stack if f.filename != HARNESS_FILE
                  and not f.filename.startswith("<frozen importlib")
                  and not f.filename.replace("\\", "/").endswith("/importlib/__init__.py")]
        t.stack = traceback.StackSummary.from_list(frames)
        todo += [t.__cause__, t.__context__]
    return "".join(te.format())


def _describe(obj):
    import inspect

    if inspect.ismodule(obj):
        return f"the module {obj.__name__!r}"
    if inspect.isclass(obj):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if inspect.isroutine(obj):
        return f"the function {getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__} object"


def asgi_problem(obj, target):
    """None if ``obj`` is an ASGI 3 application, else a one-line explanation with the fix."""
    import inspect

    what = _describe(obj)
    if inspect.isclass(obj):
        return (f"{target} is {what}, not an application: create one at top level, e.g. "
                f"app = {obj.__qualname__}()")
    if inspect.ismodule(obj) or not callable(obj):
        return (f"{target} is {what}, not an ASGI application: point main at the object "
                "made by FastAPI()/Starlette() (module:attribute)")
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            sig.bind(None, None, None)
        except TypeError:
            n = len([p for p in sig.parameters.values()
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
            hint = ""
            if n == 2:
                hint = (" (it looks like a WSGI app, environ and start_response: pyworkers runs "
                        "ASGI apps such as FastAPI and Starlette)")
            elif n == 0:
                hint = (" (an app factory? call it at top level: app = "
                        f"{getattr(obj, '__name__', 'create_app')}())")
            return (f"{target} is {what} with signature {sig}: an ASGI application is "
                    f"called with 3 arguments (scope, receive, send){hint}")
    call = getattr(obj, "__call__", None)
    if not (inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(call)):
        return (f"{target} is {what} that is not a coroutine function: an ASGI 3 application "
                "is `async def app(scope, receive, send)` or an object whose `__call__` is "
                "(ASGI 2 double-callables are not supported)")
    return None


def load(module, attribute):
    """Import ``module`` (running its top level) and check ``attribute``. Returns a dict:
    ``{"ok": True, "object": "<type>"}`` or ``{"ok": False, "kind": "import" | "asgi",
    "message": str, "traceback": str}``."""
    import importlib

    target = f"{module}:{attribute}"
    try:
        mod = importlib.import_module(module)
    except BaseException as exc:
        tb = _app_traceback(exc)
        if isinstance(exc, ModuleNotFoundError) and exc.name == module.split(".")[0]:
            path = module.replace(".", "/")
            return {"ok": False, "kind": "import", "traceback": "",
                    "message": f"cannot import {module!r}: the app directory has no "
                               f"{path}.py or {path}/ package: set main = \"module:attribute\" "
                               "in pyworkers.toml (or pass --main)"}
        msg = f"importing {module!r} (the app's top level) raised {type(exc).__name__}: {exc}"
        missing = None
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            missing = exc.name.split('.')[0]
            msg += (f": add the package that provides {missing!r} to "
                    "requirements.txt")
        if isinstance(exc, SystemExit):
            msg = f"the app's top level called sys.exit({exc.code!r})"
        return {"ok": False, "kind": "import", "message": msg, "traceback": tb,
                "missing": missing}
    obj = mod
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = getattr(mod, "__file__", None) or module
            cands = sorted(n for n, v in vars(mod).items()
                           if not n.startswith("_") and asgi_problem(v, n) is None)
            hint = (f"did you mean main = \"{module}:{cands[0]}\"?" if cands else
                    "create it at top level, e.g. app = FastAPI(), or set main in "
                    "pyworkers.toml")
            return {"ok": False, "kind": "asgi", "traceback": "",
                    "message": f"{target}: module {module!r} ({where}) has no attribute "
                               f"{attribute!r}: {hint}"}
        except BaseException as exc:
            return {"ok": False, "kind": "import", "traceback": _app_traceback(exc),
                    "message": f"reading {target} raised {type(exc).__name__}: {exc}"}
    problem = asgi_problem(obj, target)
    if problem:
        return {"ok": False, "kind": "asgi", "message": problem, "traceback": ""}
    t = type(obj)
    return {"ok": True, "object": f"{t.__module__}.{t.__qualname__}"}

'''


def _install_harness(iso) -> None:
    iso.run(f"exec(compile({GUEST_HARNESS!r}, '<pyworkers deploy>', 'exec'), "
            "__import__('sys').modules.setdefault('_pyworkers_deploy', "
            "type(__import__('sys'))('_pyworkers_deploy')).__dict__)", "<pyworkers deploy>")


def _remove_harness(iso) -> None:
    iso.run("__import__('sys').modules.pop('_pyworkers_deploy', None)", "<pyworkers deploy>")


_SETUP = "import sys\nif '/app' not in sys.path:\n    sys.path.insert(0, '/app')\n"


# --------------------------------------------------------------------------- snapshot

#: Version of the package-snapshot key (bump when what goes into one changes).
PACKAGE_SNAPSHOT_FORMAT = 1


def package_isolate(st: Store, iso_kwargs: dict, layer_hash: str | None, layer: Path | None,
                    progress: DeployProgress) -> tuple[Any, str, dict | None]:
    """An isolate with the layer's packages imported but not the app, ``/app`` on ``sys.path``.

    The store keeps one *package snapshot* per (layer, runtime build, stdlib archive,
    environment) in ``package-snapshots/``: when it exists the isolate is restored from it in
    copy mode (no per-snapshot compile; ~0.1 s) instead of booting and importing every package
    again; otherwise the isolate is booted, the packages imported, and the package snapshot
    written (atomically) for the next deploy. Returns ``(isolate, summary, info)`` where
    ``info`` is ``{"path", "reused"}`` (``None`` without a layer).
    """
    from pyworkers.runtime import Isolate, Runtime
    from pyworkers.snapshot import Restorer, SnapshotError, take_snapshot
    from pyworkers.snapshot.create import top_level_modules

    t0 = time.perf_counter()
    if layer is None:
        iso = Isolate(**iso_kwargs)
        iso.run(_SETUP, "<pyworkers deploy>")
        return iso, f"isolate up in {iso.timings.get('boot_ms', 0):.0f} ms", None
    rt = Runtime.get(iso_kwargs["release"], cache_dir=iso_kwargs.get("cache_dir"))
    key = hashlib.sha256(json.dumps({
        "format": PACKAGE_SNAPSHOT_FORMAT, "layer": layer_hash, "build": rt.installed.wasm_sha256,
        "stdlib": rt.stdlib_sha256, "env": iso_kwargs.get("env") or {}}, sort_keys=True).encode()).hexdigest()
    path = st.root / "package-snapshots" / f"{key[:40]}.pyws"
    info = {"path": st.rel(path), "reused": False}
    if path.is_file():
        try:
            r = Restorer(path, site_packages=layer, mounts=iso_kwargs.get("mounts"), expect_type="package",
                         layer_hash=layer_hash, cache_dir=iso_kwargs.get("cache_dir"), copy=True)
            iso = r.new_isolate(stdout=iso_kwargs.get("stdout"), stderr=iso_kwargs.get("stderr"),
                                egress=iso_kwargs.get("egress"))
            iso.run(_SETUP + "import importlib\nimportlib.invalidate_caches()\n", "<pyworkers deploy>")
            info["reused"] = True
            return iso, (f"restored the layer's package snapshot in "
                         f"{(time.perf_counter() - t0) * 1000:.0f} ms"), info
        except SnapshotError as e:
            progress.note(f"package snapshot {path} is not usable ({e}); taking it again")
    iso = Isolate(**iso_kwargs)
    try:
        for m in top_level_modules(layer):
            iso.request({"op": "import", "name": m})  # a package that does not import alone is skipped
        path.parent.mkdir(parents=True, exist_ok=True)
        take_snapshot(iso, path, snapshot_type="package", layer_hash=layer_hash)
        iso.run(_SETUP, "<pyworkers deploy>")
    except BaseException:
        iso.close()
        raise
    return iso, (f"booted and imported the layer's packages in {time.perf_counter() - t0:.1f} s "
                 "(package snapshot taken for the next deploy)"), info


def _no_open_connections(iso, app_copy: Path) -> None:
    """Fail the snapshot stage when the app's import left network connections open (they
    cannot be captured): name each destination and the module that opened it."""
    from pyworkers.runtime import net

    socks = net.open_sockets(iso.host)
    if not socks:
        return
    try:
        origins = iso.call("_pyworkers_guest:socket_origins")
    except Exception:  # noqa: BLE001 - the report is best effort
        origins = {}
    fd_of = {id(of): fd for fd, of in iso.host.fds.items()}
    parts = []
    for s in socks:
        mods = origins.get(fd_of.get(id(s), -1)) or []  # outermost caller first
        ours = [m for m in mods if _in_app(app_copy, m)]
        if ours:
            last = max(i for i, m in enumerate(mods) if m == ours[-1])
            lib = next((m for m in mods[last + 1:] if m not in ours), None)
            who = (f"opened in app module {ours[-1]!r}, import chain {' -> '.join(ours)}"
                   + (f", through {lib}" if lib else ""))
        else:
            who = f"opened by {mods[-1]!r}" if mods else "opened at import time"
        parts.append(f"{s.destination or 'an unconnected socket'} ({who})")
    raise DeployError(
        "snapshot", f"the app's import left {len(socks)} network connection(s) open: "
        f"{'; '.join(parts)}. Connections cannot be captured in a snapshot: open them per "
        "request or in lifespan startup, and close them before the import ends")


def egress_policy(dep: Any, *, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> Any:
    """The egress :class:`pyworkers.runtime.egress.Policy` of deployment ``dep`` (its
    ``[outbound]`` table, CA file read from the deployment's app copy), extended with a
    server's overrides (``--outbound-allow``/``--outbound-deny`` patterns). Give it to the
    isolates that serve ``dep`` (``Isolate(egress=...)``, ``Restorer.new_isolate(egress=...)``
    or ``isolate.host.egress``). Raises :class:`pyworkers.config.ConfigError` for a bad
    CA file and :class:`pyworkers.runtime.egress.EgressError` for a bad override pattern."""
    from pyworkers.config import outbound_policy

    outbound = dep.record.get("config", {}).get("outbound") or {}
    where = f"deployment {dep.id} [outbound]"
    return outbound_policy(outbound, dep.app_dir, where).extended(allow, deny)


def take_deploy_snapshot(iso, out_path: Path, *, selection, layer_hash: str | None,
                         app_hash: str, progress: DeployProgress,
                         snapshot_type: str = "dedicated") -> dict:
    """The snapshot step: write the snapshot of ``iso`` (for a dedicated one, the app's top
    level has run) to ``out_path`` and return its record (``{"path": <absolute>, "type":
    snapshot_type, "bytes", "sha256", "metadata"}``)."""
    from pyworkers.snapshot import take_snapshot

    layers = {"/app": f"app {app_hash}"}
    if layer_hash:
        layers[iso.runtime.site_packages_guest_path] = f"layer {layer_hash}"
    meta = take_snapshot(iso, out_path, snapshot_type=snapshot_type, selection=selection,
                layer_hash=layer_hash, app_hash=app_hash, layers=layers,
                progress=progress.status)
    if not out_path.is_file():
        raise DeployError("snapshot", f"take_snapshot returned but wrote no file at {out_path}")
    h = hashlib.sha256()
    with open(out_path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return {"path": out_path, "type": snapshot_type, "bytes": out_path.stat().st_size,
            "sha256": "sha256:" + h.hexdigest(), "metadata": _jsonable(meta or {})}


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, Path):
        return str(v)
    return repr(v)


# --------------------------------------------------------------------------- the pipeline

@dataclasses.dataclass
class _Out:
    """Guest output sink with a cap (for error reports)."""

    data: bytearray = dataclasses.field(default_factory=bytearray)

    def __call__(self, b: bytes) -> None:
        if len(self.data) < _OUTPUT_CAP:
            self.data += b[: _OUTPUT_CAP - len(self.data)]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _with_output(detail: str, out: _Out) -> str:
    text = out.text().strip()
    if not text:
        return detail
    return (detail.rstrip() + "\n\n" if detail else "") + "output of the app:\n" + text


def deploy(app_dir: str | os.PathLike, *,
           store: Store | str | os.PathLike | None = None,
           name: str | None = None,
           main: str | None = None,
           compatibility_date: str | None = None,
           flags: Sequence[str] | None = None,
           vars: Mapping[str, str] | None = None,
           cache_dir: str | os.PathLike | None = None,
           index_url: str | None = None,
           extra_index_urls: Sequence[str] | None = None,
           progress: DeployProgress | Callable[[str], None] | None = None,
           today: Any = None,
           build: bool = True) -> Deployment:
    """Deploy the app in ``app_dir`` into ``store``; returns the published, current
    :class:`~pyworkers.store.Deployment` (its ``record`` has the shape in the module docstring).

    Args:
        app_dir: the app directory (``pyworkers.toml`` or ``pyproject.toml``, the module named
            by ``main``, optionally ``requirements.txt``).
        store: a :class:`~pyworkers.store.Store` or its directory; default
            ``$PYWORKERS_STORE`` or the user data directory (``pyworkers/deployments``).
        name, main, compatibility_date: override the config file (``None``: not given).
        flags: compatibility flags; replace the file's ``compatibility_flags`` when given.
        vars: environment variables, merged over the file's ``[vars]``.
        cache_dir: cache root for runtimes and wheels (default ``$PYWORKERS_CACHE_DIR`` or the
            user cache dir).
        index_url, extra_index_urls: package indexes (default: pip's configuration).
        progress: a :class:`DeployProgress`, a ``(str) -> None`` callable, or ``None``.
        today: the current date for the compatibility check (tests).
        build: build pure-Python wheels from sdists for packages without a wheel for the
            runtime (``--no-build`` turns it off).

    Raises :class:`DeployError` (the store is then unchanged); ``KeyboardInterrupt`` likewise
    leaves the store unchanged.
    """
    prog = _as_progress(progress)
    stages = _Stages(prog)
    st = store if isinstance(store, Store) else Store(store)
    app_dir = Path(app_dir)
    t_start = time.perf_counter()

    with stages("config") as info:
        from pyworkers.config import load_worker_config

        cfg = load_worker_config(app_dir, {
            "name": name, "main": main, "compatibility_date": compatibility_date,
            "compatibility_flags": list(flags) if flags else None,
            "vars": dict(vars) if vars else None})
        sel = cfg.runtime_selection(today=today)
        egress = cfg.egress_policy()  # checks the CA file now, before any work
        info["summary"] = (f"{cfg.name} ({cfg.main}), compatibility date "
                           f"{cfg.compatibility_date}"
                           + (f", from {cfg.source.name}" if cfg.source else ""))
        app_dir = app_dir.resolve()
        _check_platform(cfg, st)
        try:  # the store: the worker's current deployment (lock seed), leftovers, staging
            previous = st.current(cfg.name) if st.root.is_dir() else None
            if st.root.is_dir():
                st.collect_garbage()
            staging = st.staging()
        except OSError as e:
            raise DeployError("config", f"cannot use the deployment store {st.root}: {e}: pass "
                                        "another --store") from None

    with staging:
        with stages("runtime") as info:
            from pyworkers.runtime.install import ensure_release

            installed = ensure_release(sel.release, cache_dir=cache_dir, progress=prog.status)
            r = sel.release
            info["summary"] = (f"Pyodide {r.pyodide_version} (Python {r.python_version}, "
                               f"{r.flag}{', experimental' if r.experimental else ''})")

        dep_id = st.new_id(cfg.name)
        dep_rel = f"deployments/{dep_id}"
        ddir = staging.deployment_dir
        record: dict[str, Any] = {
            "format": RECORD_FORMAT, "id": dep_id, "name": cfg.name, "created": None,
            "pyworkers_version": _version(),
            "config": {
                "name": cfg.name, "main": cfg.main,
                "compatibility_date": cfg.compatibility_date.isoformat(),
                "compatibility_flags": list(cfg.compatibility_flags),
                "vars": dict(cfg.vars),
                "max_concurrency": cfg.max_concurrency,
                "outbound": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in cfg.outbound.items()},
                "bindings": {k: [dict(b) for b in v] for k, v in cfg.bindings.items()},
                "crons": [dict(c) for c in cfg.crons],
                "volumes": [dict(v) for v in cfg.volumes],
                "source": str(cfg.source.resolve()) if cfg.source else None,
                "app_dir": str(app_dir),
            },
            "selection": sel.to_json(),
        }

        # ---------------------------------------------------------------- packages
        from pyworkers.packages.inputs import app_inputs

        res = None
        cached: list = []
        lock_path = ddir / "pylock.toml"
        with stages("resolve") as info:
            inputs = app_inputs(app_dir, cfg.dependency_groups)
            if inputs.kind is None:
                record["lock"] = None
                info["summary"] = "no requirements.txt or pyproject.toml dependencies"
            elif inputs.kind == "pylock":
                from pyworkers.packages import read_lock

                shutil.copyfile(inputs.path, lock_path)
                os.chmod(lock_path, 0o644)
                res = dataclasses.replace(read_lock(lock_path), reused=True)
                info["summary"] = f"{len(res.wheels)} package(s) from the app's pylock.toml as given"
                record["lock"] = {
                    "path": f"{dep_rel}/pylock.toml", "reused": True, "seed": "app",
                    "inputs": res.inputs, "packages": res.to_json(), "skipped": list(res.skipped),
                    "notes": [], "source": "pylock.toml", "built_from_sdist": [
                        w.name for w in res.built_from_sdist()], "left_out": []}
            else:
                from pyworkers.packages import IMPLICIT_REQUIREMENTS, resolve

                seed = None
                if (app_dir / "pylock.toml").is_file():
                    seed, src = app_dir / "pylock.toml", "app"
                elif previous is not None and previous.lock_path and previous.lock_path.is_file():
                    seed, src = previous.lock_path, "previous"
                if seed is not None:
                    shutil.copyfile(seed, lock_path)
                    os.chmod(lock_path, 0o644)
                shown = (f"pylock.toml (from {'the app' if src == 'app' else 'the current deployment'})"
                         if seed is not None else "pylock.toml")
                res = resolve(inputs.requirements, sel,
                              pyodide_lock=getattr(installed, "lock_json", None),
                              index_url=index_url, extra_index_urls=extra_index_urls,
                              lock_path=lock_path, cache_dir=cache_dir,
                              progress=_Renamed(prog, str(lock_path), shown), build=build,
                              implicit=IMPLICIT_REQUIREMENTS)
                built = res.built_from_sdist()
                info["summary"] = (f"{len(res.wheels)} package(s) from {inputs.shown}, "
                                   + ("lock reused (inputs unchanged)" if res.reused
                                      else "resolved")
                                   + (f"; built from sdists: "
                                      f"{', '.join(f'{w.name} {w.version}' for w in built)}"
                                      if built else ""))
                record["lock"] = {
                    "path": f"{dep_rel}/pylock.toml", "reused": res.reused,
                    "seed": src if seed is not None else None, "inputs": res.inputs,
                    "packages": res.to_json(), "skipped": list(res.skipped),
                    "notes": list(res.notes), "source": inputs.shown,
                    "built_from_sdist": [w.name for w in built], "left_out": list(res.left_out)}

        with stages("download") as info:
            if res is None or not res.wheels:
                record["wheels"] = None
                info["summary"] = "nothing to download"
            else:
                from pyworkers.packages import WheelCache, cache_root, download, write_lock

                wc = WheelCache(cache_root(cache_dir) / "packages")
                had = sum(1 for w in res.wheels if wc.path(w.sha256).is_file())
                cached = download(res, cache_dir, progress=prog, index_url=index_url)
                got = tuple(c.wheel for c in cached)
                if got != res.wheels:  # lock pins fetched from the index instead
                    res = dataclasses.replace(res, wheels=got)
                    write_lock(res, lock_path)
                    record["lock"]["packages"] = res.to_json()
                size = sum(c.path.stat().st_size for c in cached)
                record["wheels"] = {"count": len(cached), "bytes": size, "cached": had,
                                    "downloaded": len(cached) - had}
                info["summary"] = (f"{len(cached)} wheel(s), {fmt_bytes(size)} "
                                   f"({had} cached, {len(cached) - had} downloaded)")

        with stages("layer") as info:
            layer_mount = None
            lh = None
            if not cached:
                record["layer"] = None
                info["summary"] = "no packages: no layer"
            else:
                layer = build_layer(cached, st.layers_dir, release=sel.release.pyodide_version,
                                    staging_dir=staging.layer_dir, progress=prog)
                lh, layer_mount = layer.hash, layer.path
                files, size = _tree_size(layer_mount)
                record["layer"] = {"hash": lh, "path": st.rel(st.layer_path(lh)),
                                   "reused": layer.reused, "files": files, "bytes": size,
                                   "unresolved_libraries": layer.unresolved_libraries}
                info["summary"] = (f"{lh[:19]}..., {files} files, {fmt_bytes(size)}"
                                   + (" (reused)" if layer.reused else ""))

        with stages("app") as info:
            app_copy = ddir / "app"
            a = copy_app(app_dir, app_copy, exclude=[st.root], note=prog.note)
            record["app"] = {"path": f"{dep_rel}/app", **a}
            info["summary"] = f"{a['files']} file(s), {fmt_bytes(a['bytes'])}, {a['hash'][:19]}..."

        # ---------------------------------------------------------------- sandbox
        out = _Out()
        iso_kwargs = {"release": sel.release.pyodide_version, "site_packages": layer_mount,
                      "mounts": {"/app": app_copy}, "env": dict(cfg.vars), "cwd": "/app",
                      "cache_dir": cache_dir, "stdout": out, "stderr": out, "egress": egress}
        with stages("boot") as info:
            iso, info["summary"], pkg_info = package_isolate(st, iso_kwargs, lh, layer_mount, prog)
            if record["layer"] is not None:
                record["layer"]["package_snapshot"] = pkg_info

        try:
            with stages("import") as info:
                entropy = _entropy_at_import(iso, cfg.module)
                record["asgi"] = _load_app(iso, cfg, out, sel.enabled("python_inline_sync_endpoints"),
                                           getattr(installed, "lock_json", None),
                                           sel.release.pyodide_version)
                record["entropy_at_import"] = entropy
                info["summary"] = f"{cfg.main} is an ASGI app ({record['asgi']['object']})"
                ours = [(m, n) for m, n in entropy if _in_app(app_copy, m)]
                libs = [(m, n) for m, n in entropy if not _in_app(app_copy, m)]
                if ours:
                    msg = (f"the app's top level used entropy before the snapshot: {_calls(ours)}; every "
                           "isolate restored from it starts with the same values (e.g. keys or tokens "
                           "made at import time): create them per request or in lifespan startup instead")
                    if sel.enabled("python_entropy_at_import_error"):
                        raise DeployError("import", msg, "")
                    prog.warn(msg)
                if libs:
                    prog.note(f"library modules drew entropy at import (usually internal identifiers; "
                              f"shared by every restored isolate): {_calls(libs)}")

            with stages("snapshot") as info:
                if sel.enabled("python_dedicated_snapshot"):
                    _no_open_connections(iso, app_copy)
                    snap = take_deploy_snapshot(
                        iso, ddir / SNAPSHOT_FILE, selection=sel, layer_hash=lh,
                        app_hash=record["app"]["hash"], progress=prog)
                else:  # no_python_dedicated_snapshot: packages imported, the app is not
                    iso.close()
                    iso, _summary, _info = package_isolate(st, iso_kwargs, lh, layer_mount, prog)
                    iso.call("_pyworkers_asgi:configure",
                             inline_sync=sel.enabled("python_inline_sync_endpoints"))
                    snap = take_deploy_snapshot(
                        iso, ddir / SNAPSHOT_FILE, selection=sel, layer_hash=lh,
                        app_hash=record["app"]["hash"], progress=prog, snapshot_type="package")
                snap["path"] = f"{dep_rel}/{SNAPSHOT_FILE}"
                record["snapshot"] = snap
                info["summary"] = f"{snap['type']}, {fmt_bytes(snap['bytes'])}"
        finally:
            iso.close()

        with stages("smoke") as info:
            restore_kwargs = {"site_packages": layer_mount, "mounts": {"/app": app_copy},
                              "expect_type": record["snapshot"]["type"], "layer_hash": lh,
                              "app_hash": record["app"]["hash"], "cache_dir": cache_dir}
            from pyworkers.bindings.secrets import SecretStore

            secrets = SecretStore(st.root).values(cfg.name) if st.root.is_dir() else {}
            record["smoke"] = _smoke(restore_kwargs, ddir / SNAPSHOT_FILE, cfg, out,
                                     sel.enabled("python_inline_sync_endpoints"), egress,
                                     env={**cfg.vars, **secrets})
            s = record["smoke"]
            status = f"GET / -> {s['status']}" if s["status"] is not None else "GET / -> no response"
            if s["error"]:
                status += f" ({s['error'].strip().splitlines()[-1]})"
                prog.warn(f"GET / raised in the smoke test:\n{s['error'].rstrip()}")
            how = (f"restored snapshot in {s['ready_ms']:.0f} ms"
                   + (f" (image module prepared in {_fmt_s(s['prepare_ms'] / 1000)}, cached "
                      "for serve)" if s.get("prepare_ms") else ""))
            info["summary"] = f"{how}, lifespan {s['lifespan']}, {status}"

        with stages("publish") as info:
            record["created"] = utc_now()
            # The record is written by the publish step itself: it holds the time of every
            # stage before it and the total up to it; the publish time is only reported.
            record["timings_ms"] = dict(stages.timings)
            record["timings_ms"]["total"] = round((time.perf_counter() - t_start) * 1000, 1)
            dep = st.publish(staging, record)
            info["summary"] = f"{dep.id} is now current for {cfg.name}"
        return dep


#: Modules whose import-time entropy use is expected: pyworkers reseeds them after a restore.
RESEEDED_MODULES = frozenset({"random"})


def _check_platform(cfg, st: Store) -> None:
    """Deploy-time checks of secrets and bindings: no ``[vars]`` key may share a name with a
    secret of the worker or a binding; every backend ``url`` must answer. Raises
    :class:`DeployError` (stage ``config``) naming the file and key."""
    from pyworkers.bindings import BindingsError
    from pyworkers.bindings.host import check_reachable
    from pyworkers.bindings.secrets import SecretStore

    where = str(cfg.source or cfg.app_dir / "pyworkers.toml")
    try:
        secrets = set(SecretStore(st.root).names(cfg.name)) if st.root.is_dir() else set()
        both = sorted(secrets & set(cfg.vars))
        if both:
            raise BindingsError(
                f"{where}: vars.{both[0]}: worker {cfg.name!r} also has a secret named "
                f"{both[0]}: rename the var, or `pyworkers secret delete {both[0]} --name "
                f"{cfg.name}`")
        clash = sorted(secrets & {b["binding"] for v in cfg.bindings.values() for b in v})
        if clash:
            raise BindingsError(f"{where}: binding {clash[0]}: worker {cfg.name!r} also has a "
                                f"secret named {clash[0]}: rename one of them")
        check_reachable(cfg.bindings, where,
                        secrets=SecretStore(st.root).values(cfg.name) if secrets else {})
    except BindingsError as e:
        raise DeployError("config", str(e)) from None


def _in_app(app_dir: Path, module: str) -> bool:
    """Whether ``module`` comes from the app's own files (its top package is in ``app_dir``)."""
    top = module.partition(".")[0]
    return (app_dir / f"{top}.py").is_file() or (app_dir / top).is_dir()


def _calls(entries: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"{m} ({n} call{'s' * (n != 1)})" for m, n in entries)


def _entropy_at_import(iso, module: str) -> list[tuple[str, int]]:
    """Import ``module`` while attributing host entropy calls to the modules whose top level
    made them (``import_tracked`` in the guest helper); returns ``[(module, calls)]`` without
    :data:`RESEEDED_MODULES`. An import failure is left to :func:`_load_app` to report."""
    reply, _out, _err = iso.request({"op": "import_tracked", "target": module})
    if not reply.get("ok"):
        return []
    return [(m, n) for m, n in reply.get("entropy_modules", []) if m not in RESEEDED_MODULES]


def _import_message(rep: dict, release_lock: Any, pyodide_version: str) -> str:
    """The guest's import failure message; a missing standard-library module that the release
    ships separately (:func:`pyworkers.packages.release_lock.unvendored_hint`) gets that hint
    instead of "add the package that provides it"."""
    msg = rep["message"]
    if rep.get("missing") and release_lock is not None:
        from pyworkers.packages.release_lock import read_release_lock, unvendored_hint

        try:
            hint = unvendored_hint(rep["missing"], read_release_lock(release_lock), pyodide_version)
        except Exception:  # noqa: BLE001 - an unreadable lock: keep the generic message
            hint = None
        if hint:
            msg = msg.split(": add the package that provides", 1)[0] + ": " + hint
    return msg


def _load_app(iso, cfg, out: _Out, inline_sync: bool = True, release_lock: Any = None,
              pyodide_version: str = "") -> dict:
    """Import the app in ``iso`` (its top level runs), check it is ASGI and load it into the
    guest ASGI adapter too (``_pyworkers_asgi.load``), so that a snapshot of ``iso`` is an
    isolate ready to serve. Returns the record's ``asgi`` entry,
    ``{"object": "<type>", "adapter": "guest"}``. Raises :class:`DeployError`."""
    _install_harness(iso)
    rep = iso.call("_pyworkers_deploy:load", cfg.module, cfg.attribute)
    if not rep.get("ok"):
        raise DeployError("import", _import_message(rep, release_lock, pyodide_version),
                          _with_output(rep.get("traceback", ""), out))
    _remove_harness(iso)
    iso.call("_pyworkers_asgi:configure", inline_sync=inline_sync)
    iso.call("_pyworkers_asgi:load", cfg.main, "/app")
    return {"object": rep["object"], "adapter": "guest"}


#: Seconds the smoke test allows the lifespan startup, and ``GET /``.
SMOKE_STARTUP_TIMEOUT = 120.0
SMOKE_REQUEST_TIMEOUT = 60.0


def _smoke(restore_kwargs: dict, snapshot: Path, cfg, out: _Out,
           inline_sync: bool = True, egress: Any = None, env: dict | None = None) -> dict:
    """Restore the snapshot into a fresh isolate (for a package snapshot, importing the app
    there), then lifespan startup + ``GET /`` in it through the guest ASGI adapter that
    ``pyworkers serve`` uses. ``env`` (vars and secrets) is given as when served; the bindings
    and volumes are scratch ones (embedded backends in a temporary directory, removed after):
    a smoke test never writes the worker's data."""
    import tempfile

    from pyworkers.bindings.host import prepare_isolate, scratch_platform
    from pyworkers.snapshot import Restorer

    timing = {}
    scratch = tempfile.TemporaryDirectory(prefix="pyworkers-smoke-")
    bindings = scratch_platform(scratch.name, cfg.name, cfg.bindings)

    def make_isolate(**_sinks) -> Any:
        # copy mode: no per-snapshot compile at deploy; the copy-on-write image module is
        # compiled by the first `pyworkers serve` (in the background, serving meanwhile) or
        # `pyworkers pull` that needs it
        r = Restorer(snapshot, copy=True, **restore_kwargs)
        timing["prepare_ms"] = round(r.timings.get("prepare_ms", 0.0), 1)
        t0 = time.perf_counter()
        iso = r.new_isolate(stdout=out, stderr=out, egress=egress)
        prepare_isolate(iso, scratch.name, cfg.name, list(cfg.volumes), out)
        if restore_kwargs.get("expect_type") == "package":  # the app is not in it: load it
            _load_app(iso, cfg, out, inline_sync)
        timing["ready_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return iso

    t1 = time.perf_counter()
    with scratch:
        res = _smoke_adapter(make_isolate, out, env=env, bindings=bindings)
    res["requests_ms"] = round((time.perf_counter() - t1) * 1000
                               - (timing.get("ready_ms", 0) + timing.get("prepare_ms", 0)), 1)
    return {"restored_from_snapshot": True, "adapter": "guest", **res,
            "prepare_ms": timing.get("prepare_ms"), "ready_ms": timing.get("ready_ms")}


def _smoke_adapter(make_isolate: Callable[..., Any], out: _Out, *, env: dict | None = None,
                   bindings: Any = None) -> dict:
    """Lifespan startup, ``GET /`` and lifespan shutdown through ``pyworkers serve``'s own
    isolate driver and request path (:func:`pyworkers.serve.oneshot.smoke`)."""
    from pyworkers.serve import StartupFailed
    from pyworkers.serve.oneshot import smoke

    try:
        res = asyncio.run(smoke(make_isolate, startup_timeout=SMOKE_STARTUP_TIMEOUT,
                                request_timeout=SMOKE_REQUEST_TIMEOUT, env=env,
                                bindings=bindings))
    except StartupFailed as e:
        msg = str(e).split("lifespan.startup.failed: ", 1)[-1]
        raise DeployError("smoke", f"the app's lifespan startup failed: {msg or '(no message)'}",
                          _with_output("", out)) from None
    res["lifespan_message"] = None
    return res


def _version() -> str:
    from pyworkers import __version__

    return __version__
