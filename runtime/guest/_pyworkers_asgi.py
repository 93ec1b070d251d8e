"""Guest side of ``pyworkers serve``: an ASGI 3 server that runs *inside* the sandbox.

The host (``pyworkers.runtime.pool.Worker``) drives this module through
``Isolate.call("_pyworkers_asgi:<function>", ...)``; every argument is marshal-able and every
result is made of literals. The guest has no threads and no sockets, so there is no server loop
here: the host owns the connection and *steps* the guest's event loop.

One event loop per isolate (a ``SelectorEventLoop`` over :class:`_HostSelector`, which watches no
file descriptors and never blocks). Each ASGI call (the lifespan, each HTTP request) is a
*conversation* (:class:`_Conversation`, id ``cid``) holding the app's task, the messages queued
for ``receive`` and the messages produced by ``send``. :func:`step` runs the loop until one of:

- ``send`` produced a message (returned at once, so a ``StreamingResponse`` reaches the client
  chunk by chunk; a body message with ``more_body=True`` also *blocks* the sender until the
  host's next ``step``, which gives back-pressure);
- the app awaits ``receive`` while the request body is not complete and nothing is queued
  (``"input": True``: the host reads the next body chunk from its client);
- the app's task finished (``"done": True``; ``"error"`` holds the exception if it raised);
- the loop has nothing ready to run (``"idle": True``; ``"wait"`` is the number of seconds until
  its next timer, or ``None`` when only the host can wake it, e.g. the app awaits a disconnect).
  The host sleeps (without holding a thread) and steps again.

Step result (a dict of literals)::

    {"cid": int, "messages": [ASGI send messages], "done": bool, "input": bool,
     "idle": bool, "wait": float | None,
     "error": None | {"type", "message", "traceback"},  # only when done
     "started": bool, "complete": bool}                  # HTTP response state

HTTP scope (ASGI 3, HTTP spec 2.3 as uvicorn reports it; see
https://asgi.readthedocs.io/en/latest/specs/www.html): the host passes ``type``,
``http_version``, ``method``, ``scheme``, ``path`` (percent-decoded, including ``root_path``),
``raw_path``, ``query_string``, ``root_path``, ``headers`` (list of ``(bytes, bytes)``, names
lower-case), ``client`` and ``server`` (``(host, port)``); this module adds ``asgi``
(``{"version": "3.0", "spec_version": "2.3"}``) and ``state`` (a shallow copy of the lifespan
state, like uvicorn). Message validation mirrors uvicorn's (``RuntimeError`` in the app on a
message out of order). After the response is complete, or after ``http.disconnect`` was
delivered, ``receive`` returns ``{"type": "http.disconnect"}`` and ``send`` is a no-op.

Lifespan (https://asgi.readthedocs.io/en/latest/specs/lifespan.html): :func:`open_lifespan`
starts the app with a ``lifespan`` scope whose ``state`` dict then seeds every request's state;
the host steps it until ``lifespan.startup.complete``/``failed`` (or the app raises: lifespan
unsupported), and later delivers ``lifespan.shutdown`` with :func:`step`.

``def`` endpoints: Starlette/FastAPI run them with ``anyio.to_thread.run_sync``, which starts a
worker thread; the sandbox cannot start threads, so when ``anyio.to_thread`` is imported its
``run_sync`` is replaced by an inline call (one request per isolate: blocking the loop is fine).
The loop's default executor (``asyncio.to_thread``, ``run_in_executor(None, ...)``) runs calls
inline too.
"""
import sys

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
LIFESPAN_VERSION = {"version": "3.0", "spec_version": "2.0"}

_app = None
_driver = None
_state = {}
_convs = {}
_next_cid = [0]
_NOT_IDLE = object()


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


# ---------------------------------------------------------------------------- event loop driver
def _make_selector_class():
    import selectors

    class _HostSelector(selectors.BaseSelector):
        """A selector with no file descriptors (the sandbox has none worth watching). ``select``
        never blocks: a non-zero timeout means the loop has nothing ready, which it reports to
        the driver so that the host does the waiting."""

        def __init__(self, driver):
            self._driver = driver
            self._map = {}

        def register(self, fileobj, events, data=None):
            raise OSError(95, "pyworkers: the sandbox cannot watch file descriptors "
                              "(no sockets or pipes)")

        def unregister(self, fileobj):
            raise KeyError(fileobj)

        def select(self, timeout=None):
            if timeout is None or timeout > 0:
                self._driver.went_idle(timeout)
            return []

        def get_map(self):
            return self._map

        def close(self):
            self._map = {}

    return _HostSelector


def _inline_executor():
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


class _Driver:
    """Owns the isolate's event loop and runs it one *step* at a time (see module docstring)."""

    def __init__(self):
        import asyncio
        import warnings

        self.asyncio = asyncio
        self.loop = asyncio.SelectorEventLoop(_make_selector_class()(self))
        # asyncio.to_thread / run_in_executor(None, ...) would start a thread: run inline
        if _inline_sync:
            self.loop.set_default_executor(_inline_executor())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop(self.loop)
        self.wake = None
        self.idle_for = _NOT_IDLE

    def poke(self):
        """Something happened that the host must see: end the current step."""
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def went_idle(self, timeout):
        self.idle_for = timeout
        self.poke()

    def run(self):
        """Run the loop until :meth:`poke` is called (or it goes idle)."""
        self.idle_for = _NOT_IDLE
        self.wake = self.loop.create_future()
        try:
            self.loop.run_until_complete(self.wake)
        finally:
            self.wake = None


# ---------------------------------------------------------------------------- conversations
def _error(exc):
    import traceback

    return {"type": type(exc).__qualname__, "module": type(exc).__module__,
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def _as_bytes(v, what):
    if isinstance(v, bytes):
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("latin-1")
    raise TypeError(f"{what} must be bytes, got {type(v).__name__}")


def _headers(raw):
    out = []
    for item in raw or ():
        name, value = item
        out.append((_as_bytes(name, "header name").lower(), _as_bytes(value, "header value")))
    return out


class _Conversation:
    """One ASGI call: ``kind`` is ``"http"`` or ``"lifespan"``."""

    def __init__(self, kind, scope):
        self.cid = _next_cid[0] = _next_cid[0] + 1
        self.kind = kind
        self.inbox = []
        self.outbox = []
        self.waiter = None          # future the app's receive() awaits
        self.resume = None          # future a streaming send() awaits until the next step
        self.wants_input = False
        self.body_complete = kind != "http"
        self.started = False
        self.complete = False
        self.disconnected = False
        self.error = None
        loop = _driver.loop
        self.task = loop.create_task(self._run(scope))
        self.task.add_done_callback(lambda t: _driver.poke())
        _convs[self.cid] = self

    async def _run(self, scope):
        try:
            result = await _app(scope, self.receive, self.send)
            if result is not None:
                raise RuntimeError(f"ASGI callable should return None, but returned {result!r}")
        except _driver.asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported to the host as data
            self.error = _error(exc)

    # -------------------------------------------------------------- from the host
    def deliver(self, event):
        t = event.get("type")
        if t == "http.request":
            event = {"type": t, "body": _as_bytes(event.get("body", b""), "body"),
                     "more_body": bool(event.get("more_body", False))}
            if not event["more_body"]:
                self.body_complete = True
        elif t == "http.disconnect":
            self.disconnected = True
            self.body_complete = True
        self.wants_input = False
        self.inbox.append(event)
        self._wake_receiver()
        if t == "http.disconnect":
            self._resume_sender()

    def _wake_receiver(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _resume_sender(self):
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)

    # -------------------------------------------------------------- ASGI callables
    async def receive(self):
        while not self.inbox:
            if self.kind == "http" and (self.complete or self.disconnected):
                return {"type": "http.disconnect"}
            self.waiter = _driver.loop.create_future()
            if not self.body_complete:
                self.wants_input = True
                _driver.poke()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.inbox.pop(0)

    async def send(self, message):
        if self.kind == "lifespan":
            t = message.get("type")
            if t not in ("lifespan.startup.complete", "lifespan.startup.failed",
                         "lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                raise RuntimeError(f"Expected ASGI message 'lifespan.*', but got '{t}'.")
            out = {"type": t}
            if "message" in message:
                out["message"] = str(message["message"])
            self.outbox.append(out)
            _driver.poke()
            return
        if self.disconnected:
            return
        t = message.get("type")
        if not self.started:
            if t != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{t}'.")
            out = {"type": t, "status": int(message["status"]),
                   "headers": _headers(message.get("headers")),
                   "trailers": bool(message.get("trailers", False))}
            self.started = True
            self.outbox.append(out)
            _driver.poke()
            return
        if self.complete:
            raise RuntimeError(f"Unexpected ASGI message '{t}' sent, after response already "
                               "completed.")
        if t != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{t}'.")
        more = bool(message.get("more_body", False))
        self.outbox.append({"type": t, "body": _as_bytes(message.get("body", b""), "body"),
                            "more_body": more})
        _driver.poke()
        if not more:
            self.complete = True
            self._wake_receiver()
            return
        # stream: wait until the host has taken this chunk (its next step)
        self.resume = _driver.loop.create_future()
        try:
            await self.resume
        finally:
            self.resume = None

    # -------------------------------------------------------------- host view
    def result(self):
        done = self.task.done()
        idle = _driver.idle_for is not _NOT_IDLE
        r = {"cid": self.cid, "messages": self.outbox, "done": done,
             "input": self.wants_input and not done, "idle": idle and not done,
             "wait": _driver.idle_for if idle and not done else None,
             "error": None, "started": self.started, "complete": self.complete}
        self.outbox = []
        if done:
            if self.error is None and self.task.cancelled():
                self.error = {"type": "CancelledError", "module": "asyncio",
                              "message": "the ASGI task was cancelled", "traceback": ""}
            r["error"] = self.error
            _convs.pop(self.cid, None)
        return r


# ---------------------------------------------------------------------------- host API
def load(target, path=None):
    """Import the ASGI app ``target`` (``"module:attribute"``, dotted attribute allowed) and
    create the event loop. ``path`` (e.g. ``"/app"``) goes first on ``sys.path``. Returns
    ``{"app": target, "type": <the app's type name>}``. Raises (a ``GuestError`` on the host)
    if the import fails or the attribute is not callable."""
    global _app, _driver
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
    if _driver is None:
        _driver = _Driver()
    return {"app": target, "type": type(obj).__qualname__}


def open_lifespan():
    """Start the lifespan conversation and deliver ``lifespan.startup``; one step's result."""
    scope = {"type": "lifespan", "asgi": dict(LIFESPAN_VERSION), "state": _state}
    conv = _Conversation("lifespan", scope)
    conv.deliver({"type": "lifespan.startup"})
    _driver.run()
    return conv.result()


def start_http(fields, body=b"", more_body=False):
    """Start one HTTP request: ``fields`` are the scope keys listed in the module docstring;
    ``body``/``more_body`` the first ``http.request`` message. Returns one step's result."""
    scope = dict(fields)
    scope["type"] = "http"
    scope["asgi"] = dict(ASGI_VERSION)
    scope["headers"] = [(bytes(k), bytes(v)) for k, v in scope.get("headers", ())]
    for key in ("client", "server"):
        if scope.get(key) is not None:
            scope[key] = tuple(scope[key])
    scope["state"] = dict(_state)
    conv = _Conversation("http", scope)
    conv.deliver({"type": "http.request", "body": body, "more_body": more_body})
    _driver.run()
    return conv.result()


def step(cid, events=()):
    """Deliver ``events`` (``http.request``/``http.disconnect``/``lifespan.shutdown``
    messages) to conversation ``cid``, resume a sender blocked on a streamed chunk, run the
    loop and return its result. Raises ``KeyError`` for an unknown (finished) ``cid``."""
    conv = _convs[cid]
    conv._resume_sender()
    for ev in events:
        conv.deliver(ev)
    _driver.run()
    return conv.result()


def cancel(cid):
    """Cancel conversation ``cid``'s task (e.g. after a host-side timeout) and run the loop
    until it is gone; returns its last result or ``None`` if it was already finished."""
    conv = _convs.get(cid)
    if conv is None:
        return None
    conv.task.cancel()
    for _ in range(100):
        _driver.run()
        if conv.task.done():
            break
    return conv.result()


def status():
    """``{"conversations": n, "tasks": pending asyncio tasks}`` (for tests and debugging)."""
    import asyncio

    return {"conversations": len(_convs),
            "tasks": len(asyncio.all_tasks(_driver.loop)) if _driver else 0}
