"""TLS for the guest, done by the host's OpenSSL (Python's ``ssl`` module on the host).

The guest's ``_ssl`` (``runtime/guest/_pyworkers_ssl.py``) keeps only plaintext and ciphertext
buffers; every TLS step runs here on a host ``ssl.SSLObject`` over two ``ssl.MemoryBIO``\\ s.
The guest opens :data:`DEVICE` once per TLS connection (a :class:`TLSSession` stream), writes
one request and reads one reply per step. Wire format (little-endian):

- request: ``op`` (1 byte) + header length (u32) + JSON header + payload bytes;
- reply: header length (u32) + payload length (u32) + JSON header + payload.

Ops: ``C`` configure (header: the guest context's settings, see :func:`_context`; payload:
trusted CA certificates in PEM from ``load_verify_locations``); ``D`` one TLS step (header
``{"op": "handshake"|"read"|"write"|"shutdown", "n": int, "eof": bool, "in": int}``; payload:
``in`` bytes received from the peer, then data to write); reply ``{"status": "ok"|
"want_read"|"want_write"|"error", "out": int, "pending": int, ...}`` and payload = ``out``
bytes to send to the peer followed by the plaintext read. ``I``: connection details
(version, cipher, ALPN protocol, peer certificate as a dict and DER, channel binding).

Trust: a context that asked for the default CAs (``load_default_certs``,
``set_default_verify_paths``: what ``ssl.create_default_context()`` does) trusts the
``certifi`` bundle; the worker's own CAs (``[outbound] ca_certificates``, carried by the egress
policy) are trusted by every verifying context. Host contexts are cached by configuration.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import ssl
import struct
import tempfile
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from pyworkers.runtime.streams import POLLIN, POLLOUT, Stream, StreamError

if TYPE_CHECKING:
    from pyworkers.runtime.host import Host

#: guest path of the TLS device
DEVICE = "/dev/pyworkers/tls"
EAGAIN, EINVAL = 6, 28
_MAX_REQUEST = 64 << 20

_cache: "OrderedDict[str, ssl.SSLContext]" = OrderedDict()
_cache_lock = threading.Lock()
#: options bits passed through from the guest's context
_OPTION_MASK = (ssl.OP_NO_TLSv1 | ssl.OP_NO_TLSv1_1 | ssl.OP_NO_TLSv1_2 | ssl.OP_NO_TLSv1_3
                | ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
                | getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0))


def _certifi_pem() -> str:
    import certifi

    with open(certifi.where(), encoding="ascii") as f:
        return f.read()


def _context(cfg: dict, ca_pem: str, worker_ca: str) -> ssl.SSLContext:
    """A cached host client context for the guest's settings ``cfg``: ``verify_mode`` (0/1/2),
    ``check_hostname``, ``default_certs``, ``minimum_version``/``maximum_version`` (TLS
    version numbers, -2/-1 = min/max supported), ``options``, ``ciphers``, ``alpn``
    (list of str), ``post_handshake_auth``, ``cert_chain`` (PEM text) and ``key_password``.
    Raises ``ssl.SSLError``/``ValueError`` for bad settings."""
    key = hashlib.sha256(json.dumps([cfg, ca_pem, worker_ca], sort_keys=True).encode()).hexdigest()
    with _cache_lock:
        ctx = _cache.get(key)
        if ctx is not None:
            _cache.move_to_end(key)
            return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    verify = int(cfg.get("verify_mode", 2))
    ctx.check_hostname = bool(cfg.get("check_hostname", True)) and verify != 0
    ctx.verify_mode = ssl.VerifyMode(verify)
    if verify != 0:
        if cfg.get("default_certs"):
            ctx.load_verify_locations(cadata=_certifi_pem())
        if worker_ca:
            ctx.load_verify_locations(cadata=worker_ca)
        if ca_pem:
            ctx.load_verify_locations(cadata=ca_pem)
    for attr in ("minimum_version", "maximum_version"):
        v = cfg.get(attr)
        if v is not None:
            setattr(ctx, attr, ssl.TLSVersion(int(v)))
    if "options" in cfg:
        ctx.options = (ctx.options & ~_OPTION_MASK) | (int(cfg["options"]) & _OPTION_MASK)
    if cfg.get("ciphers"):
        ctx.set_ciphers(str(cfg["ciphers"]))
    if cfg.get("alpn"):
        ctx.set_alpn_protocols([str(p) for p in cfg["alpn"]])
    if cfg.get("cert_chain"):
        fd, path = tempfile.mkstemp(suffix=".pem")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(cfg["cert_chain"])
            ctx.load_cert_chain(path, password=cfg.get("key_password"))
        finally:
            os.unlink(path)
    with _cache_lock:
        _cache[key] = ctx
        while len(_cache) > 64:
            _cache.popitem(last=False)
    return ctx


def _error(e: BaseException) -> dict:
    d: dict[str, Any] = {"status": "error", "type": type(e).__name__, "args": []}
    if isinstance(e, ssl.SSLError):
        d["args"] = [e.args[0] if e.args else 0, e.args[1] if len(e.args) > 1 else str(e)]
        d["reason"] = getattr(e, "reason", None)
        d["library"] = getattr(e, "library", None)
        if isinstance(e, ssl.SSLCertVerificationError):
            d["verify_code"] = e.verify_code
            d["verify_message"] = e.verify_message
    else:
        d["args"] = [str(a) for a in e.args]
    return d


def _info(obj: ssl.SSLObject) -> tuple[dict, bytes]:
    der = obj.getpeercert(True) or b""
    try:
        cb = obj.get_channel_binding("tls-unique")
    except (ValueError, ssl.SSLError):
        cb = None
    return ({"version": obj.version(), "cipher": obj.cipher(),
             "alpn": obj.selected_alpn_protocol(), "peercert": obj.getpeercert(False) if der else None,
             "compression": obj.compression(), "session_reused": obj.session_reused,
             "shared_ciphers": obj.shared_ciphers(), "der": len(der),
             "channel_binding": cb.hex() if cb else None}, der)


class TLSSession(Stream):
    """One guest TLS connection (see the module docstring). Replies are queued until the
    guest reads them; ``write`` runs the request synchronously."""

    def __init__(self, host: "Host"):
        self.host = host
        self._reply = bytearray()
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj: ssl.SSLObject | None = None

    # Stream interface
    def read(self, n: int) -> bytes:
        if not self._reply:
            raise StreamError(EAGAIN, "no reply pending")
        out = bytes(self._reply[:n])
        del self._reply[:n]
        return out

    def write(self, data: bytes) -> int:
        try:
            op = data[:1]
            hlen, = struct.unpack_from("<I", data, 1)
            if hlen > _MAX_REQUEST:
                raise ValueError("header too large")
            header = json.loads(bytes(data[5:5 + hlen]))
            payload = bytes(data[5 + hlen:])
            reply, body = self._handle(op, header, payload)
        except (ValueError, KeyError, TypeError, struct.error) as e:
            reply, body = {"status": "error", "type": "ValueError",
                           "args": [f"bad TLS request: {e}"]}, b""
        h = json.dumps(reply).encode()
        self._reply += struct.pack("<II", len(h), len(body)) + h + body
        return len(data)

    def revents(self) -> int:
        return POLLOUT | (POLLIN if self._reply else 0)

    def close(self) -> None:
        self._obj = None

    # operations
    def _handle(self, op: bytes, header: dict, payload: bytes) -> tuple[dict, bytes]:
        if op == b"C":
            policy = getattr(self.host, "egress", None)
            worker_ca = getattr(policy, "ca_pem", "") or ""
            try:
                ctx = _context(header["config"], payload.decode("ascii", "replace"), worker_ca)
                self._obj = ctx.wrap_bio(self._in, self._out, server_side=False,
                                         server_hostname=header.get("server_hostname"))
            except (ssl.SSLError, ValueError, OSError) as e:
                return _error(e), b""
            return {"status": "ok"}, b""
        obj = self._obj
        if obj is None:
            raise ValueError("TLS session not configured")
        if op == b"I":
            info, der = _info(obj)
            return {"status": "ok", **info}, der
        if op != b"D":
            raise ValueError(f"unknown op {op!r}")
        n_in = int(header.get("in", 0))
        if n_in:
            self._in.write(payload[:n_in])
        if header.get("eof"):
            self._in.write_eof()
        data = payload[n_in:]
        step = header["op"]
        result: dict[str, Any] = {"status": "ok"}
        plain = b""
        try:
            if step == "handshake":
                obj.do_handshake()
            elif step == "read":
                plain = obj.read(max(0, int(header.get("n", 16384))))
            elif step == "write":
                result["value"] = obj.write(data)
            elif step == "shutdown":
                obj.unwrap()
            else:
                raise ValueError(f"unknown step {step!r}")
        except ssl.SSLWantReadError:
            result = {"status": "want_read"}
        except ssl.SSLWantWriteError:
            result = {"status": "want_write"}
        except (ssl.SSLError, ValueError, OSError) as e:
            result = _error(e)
        out = self._out.read()
        result["out"] = len(out)
        try:
            result["pending"] = obj.pending()
        except (ssl.SSLError, ValueError):
            result["pending"] = 0
        return result, out + plain


def register(host: "Host") -> None:
    """Offer :data:`DEVICE` to ``host``'s guest (each open is a new :class:`TLSSession`)."""
    host.devices[DEVICE] = lambda: TLSSession(host)


@functools.lru_cache(maxsize=1)
def host_ssl_constants() -> bytes:
    """JSON of the host ``_ssl`` module's constants and OpenSSL version (the guest's ``_ssl``
    reports the library that really does its TLS)."""
    import _ssl

    out = {}
    for name in dir(_ssl):
        v = getattr(_ssl, name)
        if name[:1].isupper() or name.startswith(("_DEFAULT_CIPHERS",
                                              "_OPENSSL_API")):
            if isinstance(v, (bool, int, str, tuple)):
                out[name] = v
    out["_OBJECTS"] = [list(_ssl.txt2obj(oid)) for oid in ("1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2")]
    return json.dumps(out).encode()


@functools.lru_cache(maxsize=1)
def host_ssl_source() -> bytes:
    """The host interpreter's ``Lib/ssl.py`` (CPython's real module, served to the guest in
    place of Pyodide's stub)."""
    with open(ssl.__file__, "rb") as f:
        return f.read()
