"""Guest side of ``pyworkers serve``: the isolate's own asyncio event loop, serving ASGI.

The host (``pyworkers.serve.worker.Worker``) calls :func:`run` once on the isolate's thread;
it returns only when the host asks it to stop (or the isolate dies). Meanwhile the guest's loop
runs continuously: it waits for host events and its own timers in one place, its selector's
``poll`` on the channel fd ``/dev/pyworkers/channel`` (the host blocks that ``poll`` until an
event arrives or the next timer is due). Events and replies are frames (``_pyworkers_wire``).

Each HTTP request or WebSocket is a *conversation* (``cid`` chosen by the host) with its own
task, so one isolate runs many requests at once: a request that awaits lets the others run.
Messages mirror uvicorn's ASGI implementation (https://asgi.readthedocs.io/en/latest/specs/):

- HTTP: ``receive`` yields the ``http.request`` chunks the host forwards (asked for with
  ``G_NEED_BODY`` when the app waits and none is queued), then ``http.disconnect`` once the
  response is complete or the client left. ``send`` validates the order like uvicorn
  (``RuntimeError`` in the app otherwise) and writes each message to the host at once, so a
  response reaches the client when the app sends it; a streamed chunk (``more_body=True``)
  waits for the host's ``H_ACK`` (back-pressure: one chunk in flight per request).
- WebSocket: ``websocket.connect`` first, then ``websocket.receive`` / ``websocket.disconnect``;
  ``send`` takes ``websocket.accept`` / ``websocket.send`` / ``websocket.close``. Sending after
  the client disconnected raises ``OSError`` (as uvicorn's ``ClientDisconnected``), which
  Starlette turns into ``WebSocketDisconnect``.
- Lifespan (cid 0): started by ``H_LIFESPAN_STARTUP``; its ``state`` dict seeds every request's
  ``scope["state"]`` (a shallow copy, like uvicorn). A lifespan app that raises before startup
  completes means "lifespan unsupported" (reported as ``G_DONE`` with the error).
- Work that outlives a response (Starlette ``BackgroundTasks``, ``asyncio.create_task``) keeps
  running; ``H_STOP`` drains: the loop waits up to ``drain`` seconds for every task, cancels
  what is left (names reported in ``G_STOPPED``), runs lifespan shutdown, then returns.
- ``H_CANCEL`` cancels one conversation's task (the host answered 504 already).
"""
import os
import sys

import _pyworkers_wire as W

CHANNEL = "/dev/pyworkers/channel"
#: largest response body piece per frame (bytes)
CHUNK = 1 << 20
#: frames that may wait for the next frame or the loop's next select (see _Server.emit)
_DEFERRED = (W.G_START, W.G_DONE)
#: a loop with ready callbacks asks the host for events (a poll with timeout 0) only every
#: this many iterations: each poll is two host calls; host events wait at most that long
ZERO_POLL_EVERY = 4

_server = None


class BindingError(Exception):
    """A binding operation failed on the host (the message says which and why)."""


_ERRORS = {"KeyError": KeyError, "ValueError": ValueError, "TimeoutError": TimeoutError,
           "PermissionError": PermissionError}


def current():
    """The running serve loop's server (``None`` outside ``pyworkers serve``): bindings use
    ``current().call(...)``."""
    return _server


class _Conversation:
    __slots__ = ("server", "cid", "kind", "task", "inbox", "waiter", "ack", "started",
                 "complete", "disconnected", "body_complete", "asked", "accepted", "closed")

    def __init__(self, server, cid, kind):
        self.server = server
        self.cid = cid
        self.kind = kind
        self.task = None
        self.inbox = []
        self.waiter = None
        self.ack = None
        self.started = self.complete = self.disconnected = False
        self.body_complete = kind != "http"
        self.asked = False
        self.accepted = self.closed = False

    # ------------------------------------------------------------------ host events
    def deliver(self, event):
        t = event["type"]
        if t == "http.request":
            if not event["more_body"]:
                self.body_complete = True
            self.asked = False
        elif t in ("http.disconnect", "websocket.disconnect"):
            self.disconnected = True
            self.body_complete = True
            self._release_sender()
        self.inbox.append(event)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _release_sender(self):
        a = self.ack
        if a is not None and not a.done():
            a.set_result(None)

    def _wake_receiver(self):
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # ------------------------------------------------------------------ ASGI receive
    async def receive(self):
        while not self.inbox:
            if self.kind == "http" and (self.complete or self.disconnected):
                return {"type": "http.disconnect"}
            if not self.body_complete and not self.asked:
                self.asked = True
                self.server.emit(W.G_NEED_BODY, self.cid)
            self.waiter = self.server.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.inbox.pop(0)

    # ------------------------------------------------------------------ ASGI send
    async def send(self, message):
        t = message.get("type")
        if self.kind == "http":
            await self._send_http(t, message)
        elif self.kind == "websocket":
            self._send_ws(t, message)
        else:
            self._send_lifespan(t, message)

    async def _send_http(self, t, message):
        if self.disconnected:
            return
        if not self.started:
            if t != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{t}'.")
            status = message["status"]
            if not isinstance(status, int) or not 100 <= status <= 999:
                raise RuntimeError(f"Invalid HTTP status code {status!r} in response.")
            headers = []
            for name, value in message.get("headers") or ():
                name, value = _as_bytes(name, "header name").lower(), _as_bytes(value, "header value")
                if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value \
                        or b"\0" in value or b":" in name:
                    raise RuntimeError(f"Invalid HTTP header {name!r}: {value!r}")
                headers.append((name, value))
            self.started = True
            self.server.emit(W.G_START, self.cid, {
                "status": status, "headers": W.headers_out(headers),
                "trailers": bool(message.get("trailers", False))})
            return
        if self.complete:
            raise RuntimeError(f"Unexpected ASGI message '{t}' sent, after response already "
                               "completed.")
        if t != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{t}'.")
        body = _as_bytes(message.get("body", b""), "body")
        more = bool(message.get("more_body", False))
        view = memoryview(body)
        # a large body crosses in CHUNK-sized frames, each acknowledged: the host never holds
        # more than about one chunk of it
        while len(view) > CHUNK:
            await self._emit_body(view[:CHUNK], True)
            view = view[CHUNK:]
            if self.disconnected:
                return
        if not more:
            self.complete = True
            self._wake_receiver()
        await self._emit_body(view, more)

    async def _emit_body(self, body, more):
        self.server.emit(W.G_BODY, self.cid, {"more_body": more} if more else None, body)
        if more:
            self.ack = self.server.loop.create_future()
            try:
                await self.ack
            finally:
                self.ack = None

    def _send_ws(self, t, message):
        if self.disconnected or self.closed:
            raise OSError(f"Unexpected ASGI message '{t}': the WebSocket is "
                          + ("disconnected" if self.disconnected else "closed"))
        if t == "websocket.accept":
            if self.accepted:
                raise RuntimeError("Expected ASGI message 'websocket.send' or 'websocket.close'"
                                   ", but got 'websocket.accept'.")
            self.accepted = True
            self.server.emit(W.G_WS_ACCEPT, self.cid, {
                "subprotocol": message.get("subprotocol"),
                "headers": W.headers_out(message.get("headers"))})
        elif t == "websocket.send":
            if not self.accepted:
                raise RuntimeError("Expected ASGI message 'websocket.accept' or "
                                   "'websocket.close', but got 'websocket.send'.")
            text = message.get("text")
            if text is not None:
                self.server.emit(W.G_WS_SEND, self.cid, {"text": True}, text.encode("utf-8"))
            else:
                self.server.emit(W.G_WS_SEND, self.cid, None,
                                 _as_bytes(message.get("bytes") or b"", "bytes"))
        elif t == "websocket.close":
            self.closed = True
            self.server.emit(W.G_WS_CLOSE, self.cid, {
                "code": int(message.get("code", 1000) or 1000),
                "reason": str(message.get("reason") or "")})
        else:
            raise RuntimeError(f"Expected ASGI message 'websocket.accept', 'websocket.send' or "
                               f"'websocket.close', but got '{t}'.")

    def _send_lifespan(self, t, message):
        if t not in ("lifespan.startup.complete", "lifespan.startup.failed",
                     "lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            raise RuntimeError(f"Expected ASGI message 'lifespan.*', but got '{t}'.")
        self.server.emit(W.G_LIFESPAN, 0, {"type": t, "message": str(message.get("message", ""))})
        self.server.lifespan_said = t

    # ------------------------------------------------------------------ the app's task
    async def run(self, scope, trace=None):
        error = None
        if trace is not None:
            trace.append(_now_ns())  # the app is called
        try:
            result = await self.server.app(scope, self.receive, self.send)
            if result is not None:
                raise RuntimeError(f"ASGI callable should return None, but returned {result!r}")
        except BaseException as exc:  # noqa: BLE001 - reported to the host as data
            error = _error(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.server.convs.pop(self.cid, None)
            done = {"error": error}
            if trace is not None:
                trace.append(_now_ns())  # the app returned
                done["trace"] = trace
            self.server.emit(W.G_DONE, self.cid, done)


def _now_ns():
    """The guest's monotonic clock (ns): the host's ``time.monotonic_ns()`` plus the isolate's
    ``mono_offset_ns`` (one host call; only for traced requests)."""
    import time

    return time.monotonic_ns()


def _env():
    """``pyworkers_env.env``: bindings, vars and secrets (``scope["env"]``)."""
    import pyworkers_env

    return pyworkers_env.env


def _as_bytes(v, what):
    if isinstance(v, bytes):
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("latin-1")
    raise TypeError(f"{what} must be bytes, got {type(v).__name__}")


def _error(exc):
    import traceback

    return {"type": type(exc).__qualname__, "module": type(exc).__module__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


class _Server:
    """The isolate's ASGI server state (one per :func:`run`)."""

    def __init__(self, app, state, loop):
        self.app = app
        self.state = state
        self.loop = loop
        self.convs = {}
        self.fd = os.open(CHANNEL, os.O_RDWR)
        os.set_blocking(self.fd, False)
        self.decoder = W.Decoder()
        self.stop = None
        self.lifespan = None
        self.lifespan_said = None
        import _pyworkers_asgi as A

        self.versions = (A.HTTP_ASGI, {"version": "3.0", "spec_version": "2.4"})
        self.pending = []         # frames not written yet (see emit)
        self.calls = {}           # call id -> future of (meta, body)
        self.next_call = 0
        self.bindings = []        # [{"name", "kind", ...}] declared by the deployment
        self.environ = {}         # vars and secrets given by the host at start

    async def call(self, binding, op, args=None, body=b""):
        """Ask the host to perform ``op`` on ``binding`` (``args``: JSON-able dict,
        ``body``: bytes); returns ``(result, body)``. Raises the host's error as
        ``BindingError`` (or ``KeyError``/``ValueError``/``TimeoutError`` when the host says
        so)."""
        import asyncio

        self.next_call = (self.next_call + 1) & 0xFFFFFFFF
        call_id = self.next_call
        fut = self.loop.create_future()
        self.calls[call_id] = fut
        # the request this call belongs to (its task): the host bounds the call by its deadline
        task = asyncio.current_task(self.loop)
        conv = next((c.cid for c in self.convs.values() if c.task is task and c.cid), 0)
        try:
            self.emit(W.G_CALL, call_id, {"binding": binding, "op": op, "args": args or {},
                                          "conv": conv}, body)
            meta, data = await fut
        finally:
            self.calls.pop(call_id, None)
        if not meta.get("ok"):
            err = meta.get("error") or {}
            raise _ERRORS.get(err.get("type"), BindingError)(err.get("message", "binding error"))
        return meta.get("result"), data

    def emit(self, kind, cid, meta=None, body=b""):
        """Send a frame to the host. ``G_START`` and ``G_DONE`` wait in a buffer for the next
        frame or the loop's next ``select`` (one host call instead of three for a simple
        response); everything else, a response body chunk above all, leaves at once."""
        if len(body) > 65536:
            self.pending.append(W.header(kind, cid, meta, len(body)))
            self.pending.append(body)
        else:
            self.pending.append(W.encode(kind, cid, meta, body))
        if kind not in _DEFERRED:
            self.flush()

    def flush(self):
        pending = self.pending
        if pending:
            self.pending = []
            if len(pending) == 1:
                os.write(self.fd, pending[0])
            else:
                os.writev(self.fd, pending)

    def on_readable(self):
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return
        if not data:  # the host closed its side: stop now
            if self.stop is not None and not self.stop.done():
                self.stop.set_result({"drain": 0, "shutdown": 0})
            return
        for kind, cid, meta, body in self.decoder.feed(data):
            self.dispatch(kind, cid, meta, body)

    def dispatch(self, kind, cid, meta, body):
        if kind == W.H_HTTP:
            # a traced request (``pyworkers serve --trace-phases``): guest clock readings
            # [dispatched, app called, app returned] come back in G_DONE's "trace"
            trace = [_now_ns()] if meta.pop("trace", None) else None
            conv = _Conversation(self, cid, "http")
            scope = W.scope_in(meta)
            more = bool(scope.pop("more_body", False))
            scope["type"] = "http"
            scope["asgi"] = dict(self.versions[0])
            scope["state"] = dict(self.state)
            scope["env"] = _env()
            self.convs[cid] = conv
            conv.deliver({"type": "http.request", "body": body, "more_body": more})
            conv.task = self.loop.create_task(conv.run(scope, trace), name=f"http-{cid}")
        elif kind == W.H_WS_CONNECT:
            conv = _Conversation(self, cid, "websocket")
            scope = W.scope_in(meta)
            scope["type"] = "websocket"
            scope["asgi"] = dict(self.versions[1])
            scope["state"] = dict(self.state)
            scope["env"] = _env()
            scope.setdefault("subprotocols", [])
            self.convs[cid] = conv
            conv.deliver({"type": "websocket.connect"})
            conv.task = self.loop.create_task(conv.run(scope), name=f"websocket-{cid}")
        elif kind == W.H_LIFESPAN_STARTUP:
            conv = _Conversation(self, 0, "lifespan")
            self.lifespan = conv
            self.convs[0] = conv
            conv.deliver({"type": "lifespan.startup"})
            scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                     "state": self.state}
            conv.task = self.loop.create_task(conv.run(scope), name="lifespan")
        elif kind == W.H_STOP:
            if self.stop is not None and not self.stop.done():
                self.stop.set_result(meta)
        elif kind == W.H_ENV:
            os.environ.update(meta.get("environ") or {})
            self.bindings = list(meta.get("bindings") or [])
            self.environ = dict(meta.get("environ") or {})
        elif kind == W.H_REPLY:
            fut = self.calls.pop(cid, None)
            if fut is not None and not fut.done():
                fut.set_result((meta, body))
        else:
            conv = self.convs.get(cid)
            if conv is None:
                return  # the conversation ended meanwhile
            if kind == W.H_BODY:
                conv.deliver({"type": "http.request", "body": body,
                              "more_body": bool(meta.get("more_body", False))})
            elif kind == W.H_DISCONNECT:
                conv.deliver({"type": "http.disconnect"})
            elif kind == W.H_WS_RECEIVE:
                if meta.get("text"):
                    conv.deliver({"type": "websocket.receive",
                                  "text": body.decode("utf-8", "surrogateescape")})
                else:
                    conv.deliver({"type": "websocket.receive", "bytes": body})
            elif kind == W.H_WS_DISCONNECT:
                conv.deliver({"type": "websocket.disconnect", "code": int(meta.get("code", 1005)),
                              "reason": meta.get("reason", "")})
            elif kind == W.H_ACK:
                conv._release_sender()
            elif kind == W.H_CANCEL:
                if conv.task is not None:
                    conv.task.cancel(meta.get("reason") or "cancelled by the host")

    async def main(self):
        import asyncio

        self.stop = self.loop.create_future()
        self.emit(W.G_READY, 0, {"pid": os.getpid()})
        opts = await self.stop
        cancelled = await self._drain(float(opts.get("drain", 30)))
        lifespan = await self._lifespan_shutdown(float(opts.get("shutdown", 5)))
        self.emit(W.G_STOPPED, 0, {"cancelled": cancelled, "lifespan": lifespan})

    def _pending(self):
        import asyncio

        me = asyncio.current_task(self.loop)
        life = self.lifespan.task if self.lifespan is not None else None
        return [t for t in asyncio.all_tasks(self.loop) if t is not me and t is not life
                and not t.done()]

    async def _drain(self, seconds):
        """Wait up to ``seconds`` for every task but the lifespan; cancel the rest."""
        import asyncio

        end = self.loop.time() + seconds
        while True:
            pending = self._pending()
            if not pending:
                return []
            left = end - self.loop.time()
            if left <= 0:
                break
            await asyncio.wait(pending, timeout=left)
        names = sorted(t.get_name() for t in pending)
        for t in pending:
            t.cancel("pyworkers: drain timeout")
        await asyncio.wait(pending, timeout=1.0)
        return names

    async def _lifespan_shutdown(self, seconds):
        import asyncio

        conv = self.lifespan
        if conv is None or conv.task is None or conv.task.done() \
                or self.lifespan_said != "lifespan.startup.complete":
            return "none"
        conv.deliver({"type": "lifespan.shutdown"})
        done, _ = await asyncio.wait([conv.task], timeout=seconds)
        if not done:
            conv.task.cancel()
            return "timeout"
        return self.lifespan_said or "returned"


_loop = None


def _selector_class():
    import selectors

    class _ServeSelector(selectors.PollSelector):
        """``PollSelector`` that first writes the frames the serve loop buffered, and that
        skips most zero-timeout polls (see :data:`ZERO_POLL_EVERY`)."""

        _zero = 0

        def select(self, timeout=None):
            server = _server
            if server is not None:
                _flush_output()
                server.flush()
            if timeout is not None and timeout <= 0:
                self._zero += 1
                if self._zero % ZERO_POLL_EVERY:
                    return []
            else:
                self._zero = 0
            return super().select(timeout)

    return _ServeSelector


def _flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or replaced stream
            pass


def _block_buffer_output():
    """The guest's stdout/stderr look like a terminal (line-buffered: one host call per
    printed line); under serve they are block-buffered and flushed at each loop iteration."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=False)
        except Exception:  # noqa: BLE001 - not a TextIOWrapper
            pass


def prepare_loop():
    """The isolate's event loop (a ``SelectorEventLoop`` over ``PollSelector``; the self-pipe
    is patched out by ``_pyworkers_guest``, so it holds no fd), made once: at deploy, before
    the snapshot, so restored isolates do not import asyncio and build it again."""
    global _loop
    import asyncio
    import selectors
    import warnings

    import _pyworkers_asgi as A

    if _loop is None or _loop.is_closed():
        _loop = asyncio.SelectorEventLoop(_selector_class()())
        if A.configure()["inline_sync"]:
            _loop.set_default_executor(A.inline_executor())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop(_loop)
    return _loop


def run(options=None):
    """Serve until the host sends ``H_STOP`` (see the module docstring). ``options``:
    ``{"inline_sync": bool}`` (defaults from ``_pyworkers_asgi.configure``). The app must have
    been loaded with ``_pyworkers_asgi.load``. Returns ``{"stopped": True}``."""
    global _server
    import _pyworkers_asgi as A

    if A._app is None:
        raise RuntimeError("no ASGI app loaded: call _pyworkers_asgi.load first")
    loop = prepare_loop()
    _block_buffer_output()
    server = _server = _Server(A._app, A._state, loop)
    loop.add_reader(server.fd, server.on_readable)
    try:
        loop.run_until_complete(server.main())
    finally:
        loop.remove_reader(server.fd)
        os.close(server.fd)
        _server = None
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
    return {"stopped": True}
