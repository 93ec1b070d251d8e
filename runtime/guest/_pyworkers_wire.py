"""The wire format of the host<->guest serve channel (imported by the guest *and* by the host's
``pyworkers.serve.protocol``: this file is the one definition of both).

The channel is a byte stream (the guest's fd for ``/dev/pyworkers/channel``; on the host a
``pyworkers.runtime.streams.Channel``). It carries *frames*::

    header  struct "<BIII": kind (u8), cid (u32), meta length (u32), body length (u32)
    meta    UTF-8 JSON object (may be empty: length 0 means {})
    body    raw bytes (request/response body chunks, WebSocket payloads)

``cid`` names a conversation: 0 is the lifespan, every HTTP request or WebSocket gets a new
one from the host. Bodies travel as raw bytes (never re-encoded), metadata as JSON, so the
host never evaluates anything the guest wrote. Byte strings inside metadata (paths, headers)
are Latin-1 decoded strings (lossless for any byte).
"""
import json
import struct

HEADER = struct.Struct("<BIII")
MAX_META = 1 << 20  # a frame's JSON metadata may not exceed 1 MiB

# host -> guest
H_LIFESPAN_STARTUP = 1   # {}
H_HTTP = 2               # meta: scope fields + "more_body" (+ "trace": 1 to time the request:
                         # G_DONE then carries "trace": [dispatched, app called, app returned],
                         # guest monotonic ns); body: first request body chunk
H_BODY = 3               # meta: {"more_body": bool}; body: a request body chunk
H_DISCONNECT = 4         # {} the HTTP client went away
H_WS_CONNECT = 5         # meta: scope fields (+ "subprotocols")
H_WS_RECEIVE = 6         # meta: {"text": bool}; body: payload (UTF-8 when text)
H_WS_DISCONNECT = 7      # meta: {"code": int, "reason": str}
H_CANCEL = 8             # {"reason": str} cancel the conversation's task (request timeout)
H_ACK = 9                # {} a streamed body chunk reached the client: the sender may go on
H_STOP = 10              # {"drain": seconds, "shutdown": seconds} drain, lifespan shutdown, exit
H_ENV = 11               # {"environ": {name: value}, "bindings": [{"name", "kind"}, ...]}
                         # set before lifespan startup (secrets never enter a snapshot)
H_REPLY = 12             # cid = call id; meta {"ok": bool, "result": ..., "error": {...}}; body

# guest -> host
G_READY = 20             # {"pid": ...} the loop runs
G_LIFESPAN = 21          # {"type": "lifespan.startup.complete" | ..., "message": str}
G_START = 22             # {"status": int, "headers": [[name, value], ...], "trailers": bool}
G_BODY = 23              # meta: {"more_body": bool}; body: a response body chunk
G_NEED_BODY = 24         # {} the app awaits receive() and no body chunk is queued
G_DONE = 25              # {"error": null | {"type", "message", "traceback"}} the ASGI call ended
G_WS_ACCEPT = 26         # {"subprotocol": str | null, "headers": [[name, value], ...]}
G_WS_SEND = 27           # meta: {"text": bool}; body: payload
G_WS_CLOSE = 28          # {"code": int, "reason": str}
G_STOPPED = 29           # {"cancelled": [task names], "lifespan": str} run() is returning
G_LOG = 30               # {"level": "error" | "warning" | "info", "message": str}
G_CALL = 31              # cid = call id; meta {"binding", "op", "args", "conv"}; body: payload
                         # ("conv": the request's cid, 0 outside a request)
                         # a binding operation the host performs (KV, SQL, objects...)

#: scope keys whose values are bytes (sent as Latin-1 strings)
BYTES_KEYS = ("raw_path", "query_string")


def encode(kind, cid, meta=None, body=b""):
    """One frame as bytes. ``meta`` is a JSON-able dict (or None), ``body`` bytes-like."""
    m = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
    return HEADER.pack(kind, cid, len(m), len(body)) + m + bytes(body)


def header(kind, cid, meta=None, body_len=0):
    """The header and metadata of a frame whose body (``body_len`` bytes) is written
    separately (avoids copying a large body once more)."""
    m = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
    return HEADER.pack(kind, cid, len(m), body_len) + m


class Decoder:
    """Incremental frame decoder: :meth:`feed` bytes, get ``[(kind, cid, meta, body)]``.
    Raises ``ValueError`` for a frame whose metadata is too large or not a JSON object."""

    def __init__(self, max_body=1 << 31):
        self.buf = bytearray()
        self.max_body = max_body

    def feed(self, data):
        self.buf += data
        out = []
        buf = self.buf
        pos = 0
        n = len(buf)
        hs = HEADER.size
        while n - pos >= hs:
            kind, cid, mlen, blen = HEADER.unpack_from(buf, pos)
            if mlen > MAX_META or blen > self.max_body:
                raise ValueError(f"frame too large (meta {mlen} bytes, body {blen} bytes)")
            end = pos + hs + mlen + blen
            if end > n:
                break
            mstart = pos + hs
            meta = json.loads(bytes(buf[mstart:mstart + mlen])) if mlen else {}
            if not isinstance(meta, dict):
                raise ValueError("frame metadata is not a JSON object")
            out.append((kind, cid, meta, bytes(buf[mstart + mlen:end])))
            pos = end
        if pos:
            del buf[:pos]
        return out


def headers_out(raw):
    """ASGI headers (``[(bytes, bytes)]``) -> JSON-able ``[[str, str]]`` (Latin-1)."""
    return [[bytes(k).decode("latin-1"), bytes(v).decode("latin-1")] for k, v in raw or ()]


def headers_in(items):
    """Inverse of :func:`headers_out`."""
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items or ()]


def scope_out(scope):
    """An HTTP/WebSocket scope's forwarded fields as JSON-able metadata."""
    meta = {}
    for k, v in scope.items():
        if k in BYTES_KEYS:
            meta[k] = bytes(v).decode("latin-1")
        elif k == "headers":
            meta[k] = headers_out(v)
        elif k in ("client", "server"):
            meta[k] = list(v) if v is not None else None
        else:
            meta[k] = v
    return meta


def scope_in(meta):
    """Inverse of :func:`scope_out` (a new dict)."""
    scope = dict(meta)
    for k in BYTES_KEYS:
        if k in scope:
            scope[k] = scope[k].encode("latin-1")
    scope["headers"] = headers_in(scope.get("headers"))
    for k in ("client", "server"):
        if scope.get(k) is not None:
            scope[k] = tuple(scope[k])
    return scope
