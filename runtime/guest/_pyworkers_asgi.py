"""Guest side of ``pyworkers serve`` and ``pyworkers deploy``: loading the ASGI app.

:func:`load` imports the app (``"module:attribute"``) in the isolate, before a deployment's
snapshot is taken; :func:`configure` sets adapter options that survive into the snapshot. The
app is then served by ``_pyworkers_serve.run`` (the isolate's own event loop; see that module).

``def`` endpoints: Starlette/FastAPI run them with ``anyio.to_thread.run_sync``, which starts a
worker thread; the sandbox cannot start threads, so when ``anyio.to_thread`` is imported its
``run_sync`` is replaced by an inline call (compatibility flag ``python_inline_sync_endpoints``).
A sync endpoint therefore blocks its isolate's other requests while it runs, as a sync endpoint
blocks uvicorn's loop without a thread pool. The loop's default executor
(``asyncio.to_thread``, ``run_in_executor(None, ...)``) runs calls inline too.
"""
import sys

_app = None
#: the lifespan ``state`` dict (shallow-copied into every request's scope)
_state = {}


# ---------------------------------------------------------------------------- threads -> inline
async def _run_sync_inline(func, *args, abandon_on_cancel=False, cancellable=None, limiter=None):
    """Stand-in for ``anyio.to_thread.run_sync``: calls ``func(*args)`` on the loop's thread."""
    return func(*args)


def _patch_anyio_to_thread(mod):
    mod.run_sync = _run_sync_inline


#: Whether ``def`` endpoints and the default executor run inline (compatibility flag
#: ``python_inline_sync_endpoints``; remembered, so it survives into snapshots).
_inline_sync = True


def configure(inline_sync=None):
    """Set adapter options before :func:`load` (``inline_sync``: run ``def`` endpoints /
    ``anyio.to_thread.run_sync`` / the loop's default executor inline; ``False`` keeps thread
    pools, which cannot start threads in the sandbox). Returns the current options."""
    global _inline_sync
    if inline_sync is not None:
        _inline_sync = bool(inline_sync)
    return {"inline_sync": _inline_sync}


def _install_patches():
    """Patch ``anyio.to_thread`` now if imported, else right after its first import (through
    the guest helper's post-import hooks, so even ``from anyio.to_thread import run_sync``
    done later gets the inline version)."""
    import _pyworkers_guest

    _pyworkers_guest._PostImportPatches.PATCHES["anyio.to_thread"] = _patch_anyio_to_thread
    mod = sys.modules.get("anyio.to_thread")
    if mod is not None:
        _patch_anyio_to_thread(mod)


def inline_executor():
    """A ``ThreadPoolExecutor`` (asyncio insists on the type) whose ``submit`` runs the call
    on the spot and returns a finished future: the sandbox cannot start threads."""
    import concurrent.futures

    class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            fut = concurrent.futures.Future()
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - delivered through the future
                fut.set_exception(exc)
            return fut

    return _InlineExecutor(max_workers=1)


# ---------------------------------------------------------------------------- host API
def load(target, path=None):
    """Import the ASGI app ``target`` (``"module:attribute"``, dotted attribute allowed).
    ``path`` (e.g. ``"/app"``) goes first on ``sys.path``. Returns
    ``{"app": target, "type": <the app's type name>}``. Raises (a ``GuestError`` on the host)
    if the import fails or the attribute is not callable."""
    global _app
    import importlib

    if path and path not in sys.path:
        sys.path.insert(0, path)
    if _inline_sync:
        _install_patches()
    mod_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"app {target!r} is not module:attribute")
    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"app {target!r} is a {type(obj).__name__}, not an ASGI callable")
    _app = obj
    primed = prime()
    return {"app": target, "type": type(obj).__qualname__, "primed": primed}


_primed = []


def prime():
    """Work done once per deployment, before its snapshot, so that no isolate repeats it on
    its first request (as SnapStart users prime): import the serve loop's modules
    (``_pyworkers_serve``, ``_pyworkers_wire``, ``asyncio``: ~100 ms per isolate otherwise) and
    create the event loop, import anyio's asyncio backend when anyio is loaded, for
    Starlette/FastAPI apps build the middleware stack Starlette otherwise builds on the first
    call (it only constructs the app's middleware objects), import the modules of
    :data:`LAZY_IMPORTS`, and fill FastAPI's endpoint-context cache (it reads the endpoints'
    source files). No request runs, no lifespan runs, nothing leaves the isolate. Returns what
    was primed (a list of names); idempotent."""
    if _primed:
        return list(_primed)
    import _pyworkers_serve

    _pyworkers_serve.prepare_loop()  # asyncio + an event loop (no fds: nothing to restore)
    _primed.append("serve-loop")
    if "anyio" in sys.modules:  # Starlette's anyio imports its asyncio backend on first use
        try:
            import anyio._backends._asyncio  # noqa: F401
            _primed.append("anyio-asyncio-backend")
        except Exception:  # noqa: BLE001
            pass
    app = _app
    build = getattr(app, "build_middleware_stack", None)
    if callable(build) and getattr(app, "middleware_stack", False) is None:
        try:
            app.middleware_stack = build()
            _primed.append("middleware-stack")
        except Exception:  # noqa: BLE001 - left to the first request, as without priming
            pass
    for name in _lazy_imports():
        try:
            __import__(name)
            _primed.append(f"import:{name}")
        except Exception:  # noqa: BLE001 - left to its first use, as without priming
            pass
    n = _prime_fastapi_endpoints(app)
    if n:
        _primed.append(f"fastapi-endpoint-context:{n}")
    return list(_primed)


#: Modules imported on first use by the serve loop or a framework, as ``(imported parent or
#: None, module)``: each import costs a restored isolate milliseconds on its lifespan or first
#: request (reading and unmarshalling in wasm). Importing them runs only their top level, which
#: their first use would run anyway.
LAZY_IMPORTS = (
    (None, "pyworkers_env"),                        # every request's scope["env"]
    ("fastapi", "fastapi.telemetry._runtime"),      # FastAPI.__call__ on "lifespan"
)


def _lazy_imports():
    for parent, name in LAZY_IMPORTS:
        if parent is None or parent in sys.modules:
            yield name


def _routes(app, depth=0):
    """Every route object reachable from ``app`` (routers, mounts; bounded depth)."""
    router = getattr(app, "router", app)
    for r in getattr(router, "routes", None) or ():
        yield r
        sub = getattr(r, "app", None)
        if depth < 8 and sub is not None and sub is not app and getattr(sub, "routes", None):
            yield from _routes(sub, depth + 1)


def _prime_fastapi_endpoints(app):
    """FastAPI (>= 0.120) reads each endpoint's source file on its first request
    (``fastapi.routing._extract_endpoint_context``: ``inspect.getsourcelines``, cached by the
    function's id) to name the endpoint in error messages: ~3 ms per endpoint on a restored
    isolate. Fill that cache for every route now (it only reads the app's files). Returns the
    number of endpoints primed."""
    fr = sys.modules.get("fastapi.routing")
    extract = getattr(fr, "_extract_endpoint_context", None)
    if not callable(extract):
        return 0
    n = 0
    for route in _routes(app):
        dependant = getattr(route, "dependant", None)
        call = getattr(dependant, "call", None)
        if call is None:
            continue
        try:
            extract(call)
            n += 1
        except Exception:  # noqa: BLE001 - left to the first request, as without priming
            pass
    return n


# ---------------------------------------------------------------------------- warm-up
#: the ASGI version of an HTTP scope (the serve loop's and the warm-up's; copy it per scope)
HTTP_ASGI = {"version": "3.0", "spec_version": "2.3"}


def warm(requests, timeout=30.0):
    """Warm-up requests before the snapshot (``warmup`` in pyworkers.toml).

    Each ``[method, target]`` (``GET``/``HEAD``; ``target`` = path, optionally ``?query``) is
    sent to the loaded app on the isolate's event loop as the serve loop would send it
    (``user-agent: pyworkers-warmup``), except that no lifespan has run (``scope["state"]`` is
    empty) and there are no bindings (``scope["env"]`` holds vars only). What the calls leave
    in memory (caches, specialised bytecode, lazily built objects) every restored isolate
    starts with: the point of warming up, and the reason only safe methods are allowed.
    ``timeout``: seconds per request (awaits; a CPU loop is stopped by the host's deadline).
    Tasks the app leaves running are cancelled (named in ``left_tasks``). Returns one dict
    per request: ``{"method", "target", "status" (None: no response), "bytes", "ms",
    "error" (traceback text, "timeout after N s", or None), "left_tasks"}``."""
    import asyncio
    import time
    import traceback

    import _pyworkers_serve
    import pyworkers_env

    if _app is None:
        raise RuntimeError("no ASGI app loaded: call _pyworkers_asgi.load first")
    loop = _pyworkers_serve.prepare_loop()
    env = pyworkers_env.env  # scope["env"] as served; no bindings outside pyworkers serve
    results = []
    for method, target in requests:
        path, _, query = target.partition("?")
        scope = {"type": "http", "asgi": dict(HTTP_ASGI), "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path,
                 "raw_path": path.encode("latin-1", "replace"),
                 "query_string": query.encode("latin-1", "replace"), "root_path": "",
                 "headers": [(b"host", b"localhost"), (b"user-agent", b"pyworkers-warmup")],
                 "client": ("127.0.0.1", 0), "server": ("localhost", 80), "state": {},
                 "env": env}
        res = {"method": method, "target": target, "status": None, "bytes": 0, "ms": 0.0,
               "error": None, "left_tasks": []}
        done = loop.create_future()
        asked = []

        async def receive(done=done, asked=asked):
            if not asked:
                asked.append(True)
                return {"type": "http.request", "body": b"", "more_body": False}
            await done  # the response is complete: the client goes away
            return {"type": "http.disconnect"}

        async def send(message, res=res, done=done):
            if message["type"] == "http.response.start":
                res["status"] = message["status"]
            elif message["type"] == "http.response.body":
                res["bytes"] += len(message.get("body", b""))
                if not message.get("more_body", False) and not done.done():
                    done.set_result(None)

        t0 = time.perf_counter()
        try:
            loop.run_until_complete(asyncio.wait_for(_app(scope, receive, send), timeout))
        except asyncio.TimeoutError:
            res["error"] = f"timeout after {timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - reported to the deploy, which fails on it
            res["error"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        res["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        if not done.done():
            done.set_result(None)
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        if left:
            res["left_tasks"] = sorted(t.get_name() for t in left)
            for t in left:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        results.append(res)
    return results
