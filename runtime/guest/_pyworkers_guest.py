"""Guest side of pyworkers: runs *inside* the sandbox (Pyodide's CPython), imported at boot.

The host calls :func:`dispatch` through the C API with one request (``marshal`` bytes: the guest
trusts its host) and gets one reply (the ``repr`` of a dict of literals, which the host parses
with ``ast.literal_eval``: safe even if guest code tampered with it). Nothing here imports more
than ``marshal``/``sys`` at boot, so the helper costs nothing on a cold start. Every guest
exception is caught and returned as data (type, message, traceback text), so a failing user
program never leaves a pending C-level error behind.

At import it also replaces ``time.sleep`` with a host-side wait (:func:`_install_host_sleep`).

Requests (``op``):
- ``run``: ``{"code", "filename"}`` -> exec in ``__main__``; reply ``{"ok": true}``.
- ``eval``: ``{"code"}`` -> ``{"ok": true, "value": repr(result)}``.
- ``import``: ``{"name"}`` -> import a module.
- ``prepare_snapshot``: ``gc.collect()`` then ``gc.freeze()`` (copy-on-write friendly image).
- ``import_tracked``: ``{"target": "module:attribute"}`` -> import it (kept as
  ``__main__.__pyworkers_app__``) and report the modules whose top level used entropy.
- ``reseed``: reseed ``random`` from the host's entropy (after a snapshot restore); any request
  with ``"reseed": True`` does that first (a restored isolate's first request carries it).
- ``call``: ``{"target": "module:function", "args": [...], "kwargs": {...}}`` -> the result
  (literals only: str, bytes, int, float, bool, None, list, tuple, dict).
Errors: ``{"ok": false, "type", "message", "traceback"}``; ``SystemExit``: ``{"exit": code}``.
"""
import marshal
import sys

_JS_MESSAGE = (
    "the {name!r} module is not available in pyworkers: there is no JavaScript engine in the "
    "sandbox (use the Python standard library and Python packages instead)"
)


class _NoJavaScript:
    """Meta path finder that refuses the JavaScript-bridge modules with a clear message."""

    NAMES = {"js", "pyodide_js", "pyodide.ffi", "pyodide.http", "pyodide.webloop", "pyodide.console"}

    def find_spec(self, name, path=None, target=None):
        if name in self.NAMES:
            raise ImportError(_JS_MESSAGE.format(name=name), name=name)
        return None


class _LoaderProxy:
    """Wraps one module's loader so ``after(module)`` runs after its top level; everything else
    is forwarded. A proxy per spec, because loaders are shared (one ``zipimporter`` for the
    whole stdlib zip, the ``BuiltinImporter`` class for every builtin module)."""

    def __init__(self, inner, around):
        self._inner = inner
        self._around = around

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._around(self._inner.exec_module, module)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _find_spec_elsewhere(skip, name, path, target):
    for finder in sys.meta_path:
        if finder is skip or isinstance(finder, (_NoJavaScript, _PostImportPatches, _EntropyTracker)):
            continue
        find = getattr(finder, "find_spec", None)
        spec = find(name, path, target) if find else None
        if spec is not None:
            return spec
    return None


class _PostImportPatches:
    """Meta path finder that patches stdlib modules right after they are first imported.

    ``hashlib``: without ``_hashlib`` it lacks ``pbkdf2_hmac`` and ``scrypt``; they are added
    from ``_pyworkers_hashlib`` (computed on the host's OpenSSL).

    ``asyncio.selector_events``: the selector event loop wakes itself through a self-pipe made
    with ``socket.socketpair()``, which needs sockets the sandbox does not have. pyworkers
    drives one loop per isolate from the host, so the self-pipe is not needed: creating,
    closing and writing to it become no-ops (the role Pyodide's WebLoop plays in a browser).

    ``socket``: a connect the host's egress policy refuses fails with ``EACCES``; the patched
    ``socket.connect`` raises ``PermissionError`` with the host's explanation (destination and
    rule, read from ``/dev/pyworkers/net-error``).

    ``REPLACED`` modules are loaded from another file instead: ``_ssl`` (Pyodide's stub) by the
    host-backed ``_pyworkers_ssl``, ``ssl`` (Pyodide's stub) by CPython's real ``Lib/ssl.py``
    (the host interpreter's copy, served at ``/dev/pyworkers/ssl.py``), and
    ``urllib3.contrib.emscripten`` (urllib3 2.x's browser ``fetch`` backend, which needs
    ``js``) by a module whose ``inject_into_urllib3`` does nothing, so urllib3 keeps its
    socket path.
    """

    PATCHES = {}
    REPLACED = {
        "_ssl": "/lib/pyworkers/_pyworkers_ssl.py",
        "ssl": "/dev/pyworkers/ssl.py",
        "urllib3.contrib.emscripten": "/lib/pyworkers/_pyworkers_no_emscripten.py",
    }

    def find_spec(self, name, path=None, target=None):
        where = self.REPLACED.get(name)
        if where is not None:
            from importlib.util import spec_from_file_location

            return spec_from_file_location(name, where)
        patch = self.PATCHES.get(name)
        if patch is None:
            return None
        spec = _find_spec_elsewhere(self, name, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec

        def around(exec_module, module):
            exec_module(module)
            patch(module)

        spec.loader = _LoaderProxy(spec.loader, around)
        return spec


def _patch_selector_events(mod):
    cls = mod.BaseSelectorEventLoop
    cls._make_self_pipe = lambda self: None
    cls._close_self_pipe = lambda self: None
    cls._write_to_self = lambda self: None


_PostImportPatches.PATCHES["asyncio.selector_events"] = _patch_selector_events


def _patch_hashlib(mod):
    # no _hashlib in the sandbox: pbkdf2_hmac/scrypt run on the host (_pyworkers_hashlib)
    if not (hasattr(mod, "pbkdf2_hmac") and hasattr(mod, "scrypt")):
        import _pyworkers_hashlib

        _pyworkers_hashlib.install(mod)


_PostImportPatches.PATCHES["hashlib"] = _patch_hashlib


def _patch_base_events(mod):
    """``loop.getaddrinfo``/``getnameinfo`` run the resolver in a thread pool; the sandbox has
    no threads, and its resolver is the host's (one host call): call it inline."""
    import socket

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        return socket.getaddrinfo(host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr, flags=0):
        return socket.getnameinfo(sockaddr, flags)

    mod.BaseEventLoop.getaddrinfo = getaddrinfo
    mod.BaseEventLoop.getnameinfo = getnameinfo


_PostImportPatches.PATCHES["asyncio.base_events"] = _patch_base_events


def _net_error():
    try:
        with open("/dev/pyworkers/net-error", "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


#: guest fd -> names of the modules on the stack of the connect that opened it (deploy names
#: them when a connection is still open at snapshot time)
_SOCKET_ORIGINS = {}


def socket_origins():
    """``{fd: [module, ...]}`` (outermost caller first) for connects made in this isolate."""
    return {fd: list(mods) for fd, mods in _SOCKET_ORIGINS.items()}


def _note_origin(sock):
    try:
        f = sys._getframe(2)
        mods = []
        while f is not None:
            name = f.f_globals.get("__name__")
            if name and (not mods or mods[-1] != name):
                mods.append(name)
            f = f.f_back
        mods.reverse()
        if len(_SOCKET_ORIGINS) > 512:
            _SOCKET_ORIGINS.clear()
        _SOCKET_ORIGINS[sock.fileno()] = [m for m in mods if m not in ("__main__",)] or mods
    except Exception:  # noqa: BLE001 - diagnostics only
        pass


def _patch_socket(mod):
    cls = mod.socket
    connect = cls.connect

    def patched_connect(self, address):
        _note_origin(self)
        try:
            return connect(self, address)
        except PermissionError as exc:
            detail = _net_error()
            if not detail:
                raise
            raise PermissionError(exc.errno, detail) from None

    patched_connect.__doc__ = connect.__doc__
    patched_connect.__name__ = "connect"
    patched_connect.__qualname__ = "socket.connect"
    cls.connect = patched_connect


_PostImportPatches.PATCHES["socket"] = _patch_socket

sys.meta_path.insert(0, _NoJavaScript())
sys.meta_path.insert(1, _PostImportPatches())
if "hashlib" in sys.modules:  # imported before the helper
    _patch_hashlib(sys.modules["hashlib"])


def _install_host_sleep():
    """Make ``time.sleep`` wait on the host instead of spinning.

    libc's ``nanosleep`` in this build busy-waits on ``emscripten_get_now`` (thousands of host
    calls and a whole core for the duration). ``poll()`` with no descriptors and a timeout is a
    host-side wait (``__syscall_poll`` in ``runtime/host.py``: no CPU, interrupted by the
    request deadline and by ``Isolate.interrupt``), so sleeping becomes a loop of such polls
    until the monotonic clock reaches the end. Installed when this helper is imported at boot,
    so snapshots carry it. Same errors as ``time.sleep`` (``TypeError``, ``ValueError`` for a
    negative or NaN length).
    """
    import time as _time

    monotonic = _time.monotonic
    poller = []

    def sleep(secs):
        if not isinstance(secs, float):  # like time.sleep: float, or an integer (__index__)
            index = getattr(type(secs), "__index__", None)
            if index is None:
                raise TypeError("'%s' object cannot be interpreted as an integer" % type(secs).__name__)
            secs = index(secs)
        if not secs >= 0.0:
            raise ValueError("sleep length must be non-negative")
        end = monotonic() + secs
        while True:
            left = end - monotonic()
            if left <= 0:
                return None
            if not poller:
                import select

                poller.append(select.poll())
            # whole milliseconds, rounded up; the host caps one wait at 60 s
            poller[0].poll(min(60_000, int(left * 1000) + 1))

    sleep.__doc__ = _time.sleep.__doc__
    sleep.__name__ = sleep.__qualname__ = "sleep"
    sleep.__module__ = "time"
    _time.sleep = sleep


_install_host_sleep()


def _flush():
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass


def _error(exc):
    import traceback

    # drop this module's own frames (dispatch/_handle) from the top of the traceback
    tb_obj = exc.__traceback__
    while tb_obj is not None and tb_obj.tb_frame.f_code.co_filename == __file__:
        tb_obj = tb_obj.tb_next
    tb = "".join(traceback.format_exception(type(exc), exc, tb_obj))
    return {"ok": False, "type": type(exc).__qualname__, "module": type(exc).__module__,
            "message": str(exc), "traceback": tb}


def _exit_code(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _resolve(target):
    import importlib

    mod, _, attr = target.partition(":")
    obj = importlib.import_module(mod)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def _entropy_calls():
    with open("/dev/pyworkers/entropy", "rb") as f:
        return int(f.read())


class _EntropyTracker:
    """Meta path finder wrapping each module's ``exec_module`` to count the host's entropy
    calls (``random_get``) its top level makes, excluding nested imports."""

    def __init__(self):
        self.per_module = {}
        self.stack = []

    def find_spec(self, name, path=None, target=None):
        spec = _PostImportPatches().find_spec(name, path, target)
        if spec is None:
            spec = _find_spec_elsewhere(self, name, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        tracker = self

        def around(exec_module, module):
            tracker.stack.append(0)
            before = _entropy_calls()
            try:
                exec_module(module)
            finally:
                nested = tracker.stack.pop()
                own = _entropy_calls() - before - nested
                if tracker.stack:
                    tracker.stack[-1] += own + nested
                if own > 0:
                    tracker.per_module[name] = tracker.per_module.get(name, 0) + own

        spec.loader = _LoaderProxy(spec.loader, around)
        return spec


def _import_tracked(target):
    """Import ``module:attribute`` and report which modules used entropy at top level."""
    import time

    tracker = _EntropyTracker()
    sys.meta_path.insert(0, tracker)
    t0 = time.perf_counter()
    try:
        before = _entropy_calls()
        obj = _resolve(target)
        total = _entropy_calls() - before
    finally:
        sys.meta_path.remove(tracker)
    main = sys.modules["__main__"].__dict__
    main["__pyworkers_app__"] = obj
    return {"ok": True, "seconds": time.perf_counter() - t0, "entropy_calls": total,
            "entropy_modules": sorted(tracker.per_module.items()), "type": type(obj).__name__,
            "callable": callable(obj)}


def _reseed():
    # after a snapshot restore: no two isolates may share the Mersenne Twister state
    rnd = sys.modules.get("random")
    if rnd is not None:
        rnd.seed()


def app_loaded(target, path=None):
    """Whether the guest ASGI adapter has ``target`` (``"module:attribute"``) loaded, i.e. its
    app is the object ``target`` names and ``path`` is on ``sys.path`` (checked before a
    snapshot records the app as loaded: a restore can then skip ``_pyworkers_asgi.load``)."""
    adapter = sys.modules.get("_pyworkers_asgi")
    app = getattr(adapter, "_app", None)
    if app is None or (path and path not in sys.path):
        return False
    mod_name, _, attr = target.partition(":")
    obj = sys.modules.get(mod_name)
    if obj is None or not attr:
        return False
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    return obj is app


def _handle(req):
    if req.get("reseed"):  # the first request of a restored isolate (see Isolate.request)
        _reseed()
    op = req["op"]
    if op == "run":
        main = sys.modules["__main__"].__dict__
        code = compile(req["code"], req.get("filename", "<string>"), "exec")
        exec(code, main)
        return {"ok": True}
    if op == "eval":
        main = sys.modules["__main__"].__dict__
        return {"ok": True, "value": repr(eval(compile(req["code"], "<eval>", "eval"), main))}
    if op == "import":
        __import__(req["name"])
        return {"ok": True}
    if op == "call":
        fn = _resolve(req["target"])
        return {"ok": True, "value": fn(*req.get("args", ()), **req.get("kwargs", {}))}
    if op == "import_tracked":
        return _import_tracked(req["target"])
    if op == "prepare_snapshot":
        # Collect, then move every surviving object to the permanent generation: restored
        # isolates map the image copy-on-write, and a collection that walks the whole heap
        # would fault in (and dirty) every page on the first request.
        import gc

        gc.collect()
        gc.freeze()
        return {"ok": True, "frozen": gc.get_freeze_count()}
    if op == "reseed":
        _reseed()
        return {"ok": True}
    raise ValueError(f"unknown request {op!r}")


def dispatch(raw):
    """Handle one request (marshal bytes) and return the reply (repr bytes). Never raises."""
    try:
        reply = _handle(marshal.loads(raw))
    except SystemExit as exc:
        reply = {"exit": _exit_code(exc)}
    except MemoryError as exc:
        # The traceback keeps the failing frames (and what they allocated) alive: note where it
        # happened, drop the frames so their memory is freed, then report.
        where = ""
        try:
            tb = exc.__traceback__
            while tb.tb_next is not None:
                tb = tb.tb_next
            where = 'File "%s", line %d' % (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
            del tb
        except BaseException:  # noqa: BLE001
            pass
        exc.__traceback__ = None
        del exc
        reply = {"ok": False, "type": "MemoryError", "module": "builtins", "message": "out of memory",
                 "traceback": "Traceback (frames dropped to free memory):\n  %s\nMemoryError: out of memory\n" % where}
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the host as data
        reply = _error(exc)
    _flush()
    try:
        return repr(reply).encode("utf-8", "surrogatepass")
    except BaseException as exc:  # noqa: BLE001 - e.g. a value whose repr fails
        return repr(_error(exc)).encode("utf-8", "surrogatepass")
