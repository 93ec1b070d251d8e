"""The deploy's import stage inside the sandbox: the guest harness that imports the app and
checks it is an ASGI 3 application (:data:`GUEST_HARNESS`, :func:`load_app`) and the
attribution of import-time entropy use to modules (:func:`entropy_at_import`), and the
warm-up requests run before the snapshot (:func:`warm_up`)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyworkers.deploy_errors import DeployError, GuestOutput, with_output


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


#: Modules whose import-time entropy use is expected: pyworkers reseeds them after a restore.
RESEEDED_MODULES = frozenset({"random"})

def in_app(app_dir: Path, module: str) -> bool:
    """Whether ``module`` comes from the app's own files (its top package is in ``app_dir``)."""
    top = module.partition(".")[0]
    return (app_dir / f"{top}.py").is_file() or (app_dir / top).is_dir()


def format_calls(entries: Sequence[tuple[str, int]]) -> str:
    """``[("uuid", 2)]`` -> ``"uuid (2 calls)"`` (for the entropy warnings)."""
    return ", ".join(f"{m} ({n} call{'s' * (n != 1)})" for m, n in entries)


def entropy_at_import(iso, module: str) -> list[tuple[str, int]]:
    """Import ``module`` while attributing host entropy calls to the modules whose top level
    made them (``import_tracked`` in the guest helper); returns ``[(module, calls)]`` without
    :data:`RESEEDED_MODULES`. An import failure is left to :func:`load_app` to report."""
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


def load_app(iso, cfg, out: GuestOutput, inline_sync: bool = True, release_lock: Any = None,
             pyodide_version: str = "") -> dict:
    """Import the app in ``iso`` (its top level runs), check it is ASGI and load it into the
    guest ASGI adapter too (``_pyworkers_asgi.load``), so that a snapshot of ``iso`` is an
    isolate ready to serve. Returns the record's ``asgi`` entry,
    ``{"object": "<type>", "adapter": "guest"}``. Raises :class:`DeployError`."""
    _install_harness(iso)
    rep = iso.call("_pyworkers_deploy:load", cfg.module, cfg.attribute)
    if not rep.get("ok"):
        raise DeployError("import", _import_message(rep, release_lock, pyodide_version),
                          with_output(rep.get("traceback", ""), out))
    _remove_harness(iso)
    iso.call("_pyworkers_asgi:configure", inline_sync=inline_sync)
    iso.call("_pyworkers_asgi:load", cfg.main, "/app")
    return {"object": rep["object"], "adapter": "guest"}


#: seconds a warm-up request may take (awaits: the guest's own timeout; CPU: the isolate's)
WARMUP_TIMEOUT_S = 30.0


def warm_up(iso, cfg, out: GuestOutput, progress) -> list[dict]:
    """Send the config's ``warmup`` requests to the app loaded in ``iso`` (before the
    snapshot: see ``_pyworkers_asgi.warm``), one progress note each. Returns the record's
    ``warmup`` entry, ``[{"method", "target", "status", "bytes", "ms"}]``. A 4xx answer is a
    warning (the code path ran, up to the refusal). Raises :class:`DeployError` (stage
    ``snapshot``) naming the request for an exception, a 5xx, no response or a request past
    :data:`WARMUP_TIMEOUT_S`; the deploy then writes nothing."""
    from pyworkers.runtime.isolate_errors import GuestError, IsolateCrashed

    if not cfg.warmup:
        return []
    where = f"{cfg.origins.get('warmup', 'pyworkers.toml')}: warmup"
    iso.set_timeout(WARMUP_TIMEOUT_S * len(cfg.warmup) + 5)
    try:
        results = iso.call("_pyworkers_asgi:warm", [list(r) for r in cfg.warmup], WARMUP_TIMEOUT_S)
    except IsolateCrashed as e:
        raise DeployError("snapshot", f"{where}: the app crashed the isolate while warming up "
                                      f"({e}); remove the request or fix the endpoint",
                          with_output("", out)) from None
    except GuestError as e:
        raise DeployError("snapshot", f"{where}: warming up failed: {e.type_name}: {e.message}",
                          with_output(e.traceback, out)) from None
    finally:
        if not iso.dead:
            iso.set_timeout(None)
    record = []
    for r in results:
        what = f"{r['method']} {r['target']}"
        status = r["status"]
        if r["error"] or status is None or status >= 500:
            why = (r["error"].strip().splitlines()[-1] if r["error"] else
                   "no response" if status is None else f"status {status}")
            raise DeployError(
                "snapshot", f"{where}: {what} failed before the snapshot ({why}); no lifespan "
                "has run and no binding exists at deploy: warm up endpoints that need neither, "
                "or remove it from warmup",
                with_output(r["error"] or "", out))
        if status >= 400:
            progress.warn(f"warm-up {what} answered {status}: only the code up to the refusal "
                          "was warmed")
        else:
            progress.note(f"warm-up {what} -> {status}, {r['bytes']} bytes in {r['ms']:.1f} ms")
        if r["left_tasks"]:
            progress.warn(f"warm-up {what} left task(s) running, cancelled before the snapshot: "
                          + ", ".join(r["left_tasks"]))
        record.append({k: r[k] for k in ("method", "target", "status", "bytes", "ms")})
    return record
