"""The TLS connection objects of the guest's ``_ssl`` (``_pyworkers_ssl``): what
``_SSLContext._wrap_socket`` (for ``ssl.SSLSocket``) and ``_wrap_bio`` (for ``ssl.SSLObject``)
return.

Each connection opens the host device ``/dev/pyworkers/tls`` and every step (handshake, read,
write, shutdown) is one request there, carrying the ciphertext received from the peer and
returning the ciphertext to send (wire format: ``runtime/tls.py``). :class:`_BioTLS` moves that
ciphertext through the caller's two ``MemoryBIO``\\ s, :class:`_SocketTLS` through the socket's
own (C-level) ``recv``/``send``.
"""
import os as _os
import struct as _struct
import weakref as _weakref

import _pyworkers_ssl_constants as _constants
from _pyworkers_ssl_errors import (SSLEOFError, SSLError, SSLSyscallError, SSLWantReadError,
                                   SSLWantWriteError, raise_error)

__all__ = ["_TLS", "_BioTLS", "_SocketTLS"]

_DEVICE = "/dev/pyworkers/tls"


def _tuples(v):
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


class _TLS:
    """State shared by socket- and BIO-backed connections: the host session fd."""

    server_side = False
    session = None

    def __init__(self, ctx, server_hostname, owner):
        import json

        self._json = json
        self.context = ctx
        self.server_hostname = server_hostname
        self.owner = owner
        self._info = None
        self._pending = 0
        self._fd = -1
        self._fd = _os.open(_DEVICE, _os.O_RDWR)
        hdr, _ = self._call(b"C", {"config": ctx._config(), "server_hostname": server_hostname},
                            "".join(ctx._ca).encode("ascii", "replace"))
        if hdr.get("status") == "error":
            self._close()
            raise_error(hdr)

    def _call(self, op, header, payload=b""):
        h = self._json.dumps(header).encode()
        _os.write(self._fd, op + _struct.pack("<I", len(h)) + h + payload)
        raw = _os.read(self._fd, 1 << 20)
        hlen, blen = _struct.unpack_from("<II", raw)
        need = 8 + hlen + blen
        while len(raw) < need:
            more = _os.read(self._fd, need - len(raw))
            if not more:
                raise SSLSyscallError(5, "the host closed the TLS session")
            raw += more
        return self._json.loads(raw[8:8 + hlen]), raw[8 + hlen:need]

    def _close(self):
        if self._fd >= 0:
            try:
                _os.close(self._fd)
            except OSError:
                pass
            self._fd = -1

    def __del__(self):
        self._close()

    def _details(self):
        if self._info is None:
            hdr, der = self._call(b"I", {})
            hdr["der"] = der
            self._info = hdr
        return self._info

    # the ssl.py-facing API
    def do_handshake(self):
        self._step("handshake")
        self._info = None
        self._details()

    def read(self, len=1024, buffer=None):
        data = self._step("read", n=len)
        if buffer is not None:
            n = _blen(data)
            memoryview(buffer)[:n] = data
            return n
        return data

    def write(self, data):
        return self._step("write", data=memoryview(data).tobytes())

    def pending(self):
        return self._pending

    def getpeercert(self, binary_form=False):
        if self._info is None:
            raise ValueError("handshake not done yet")
        if binary_form:
            return self._info["der"] or None
        cert = self._info.get("peercert")
        return _tuples(cert) if cert is not None else ({} if self._info["der"] else None)

    def get_verified_chain(self):
        return None

    def get_unverified_chain(self):
        return None

    def cipher(self):
        c = self._info and self._info.get("cipher")
        return tuple(c) if c else None

    def shared_ciphers(self):
        c = self._info and self._info.get("shared_ciphers")
        return [tuple(x) for x in c] if c else None

    def compression(self):
        return self._info and self._info.get("compression")

    def version(self):
        return self._info and self._info.get("version")

    def selected_alpn_protocol(self):
        return self._info and self._info.get("alpn")

    def selected_npn_protocol(self):
        return None

    @property
    def session_reused(self):
        return bool(self._info and self._info.get("session_reused"))

    def get_channel_binding(self, cb_type="tls-unique"):
        if cb_type != "tls-unique":
            raise ValueError(f"{cb_type} channel binding type not implemented")
        cb = self._info and self._info.get("channel_binding")
        return bytes.fromhex(cb) if cb else None

    def verify_client_post_handshake(self):
        raise SSLError(1, "post-handshake authentication is a server-side feature")

    def shutdown(self):
        self._step("shutdown")
        self._close()
        return self._shutdown_result()

    def _shutdown_result(self):
        return None

    def _do(self, op, n, data, incoming, eof):
        hdr, body = self._call(b"D", {"op": op, "n": n, "in": _blen(incoming), "eof": eof},
                               incoming + data)
        nout = hdr["out"]
        self._pending = hdr.get("pending", 0)
        return hdr, body[:nout], body[nout:]


_blen = len


class _BioTLS(_TLS):
    """``SSLObject``'s engine: ciphertext through the caller's two :class:`MemoryBIO`\\ s."""

    def __init__(self, ctx, incoming, outgoing, server_hostname, owner):
        self._incoming = incoming
        self._outgoing = outgoing
        super().__init__(ctx, server_hostname, owner)

    def _step(self, op, n=0, data=b""):
        if self._fd < 0:
            raise ValueError("the TLS connection is closed")
        incoming = self._incoming.read()
        hdr, out, plain = self._do(op, n, data, incoming, self._incoming.eof)
        if out:
            self._outgoing.write(out)
        st = hdr["status"]
        if st == "ok":
            return hdr.get("value", plain) if op == "write" else plain
        if st == "want_read":
            raise SSLWantReadError(_constants.SSL_ERROR_WANT_READ,
                                   "The operation did not complete (read)")
        if st == "want_write":
            raise SSLWantWriteError(_constants.SSL_ERROR_WANT_WRITE,
                                    "The operation did not complete (write)")
        raise_error(hdr)


class _SocketTLS(_TLS):
    """``SSLSocket``'s engine: ciphertext through the socket's own (C-level) recv/send."""

    def __init__(self, ctx, sock, server_hostname, owner):
        import _socket

        self._raw = _socket.socket
        self._sock = _weakref.ref(sock)
        self._rbuf = b""
        self._wbuf = b""
        self._eof = False
        super().__init__(ctx, server_hostname, owner)

    def _flush(self, sock, data):
        data = self._wbuf + data
        self._wbuf = b""
        while data:
            try:
                n = self._raw.send(sock, data)
            except BlockingIOError:
                self._wbuf = data
                raise SSLWantWriteError(_constants.SSL_ERROR_WANT_WRITE,
                                        "The operation did not complete (write)") from None
            data = data[n:]

    def _step(self, op, n=0, data=b""):
        sock = self._sock()
        if sock is None or self._fd < 0:
            raise ValueError("the TLS connection is closed")
        if self._wbuf:
            self._flush(sock, b"")
        while True:
            incoming, self._rbuf = self._rbuf, b""
            hdr, out, plain = self._do(op, n, data, incoming, self._eof)
            if out:
                self._flush(sock, out)
            st = hdr["status"]
            if st == "ok":
                return hdr.get("value", plain) if op == "write" else plain
            if st == "want_read":
                if self._eof:
                    raise SSLEOFError(_constants.SSL_ERROR_EOF,
                                      "EOF occurred in violation of protocol")
                try:
                    chunk = self._raw.recv(sock, 65536)
                except BlockingIOError:
                    raise SSLWantReadError(_constants.SSL_ERROR_WANT_READ,
                                           "The operation did not complete (read)") from None
                if chunk:
                    self._rbuf += chunk
                else:
                    self._eof = True
                continue
            if st == "want_write":
                continue
            raise_error(hdr)

    def _shutdown_result(self):
        return self._sock()
