"""``_ssl`` for the pyworkers sandbox: TLS done by the host's OpenSSL.

Loaded in place of Pyodide's stub ``_ssl`` (see ``_PostImportPatches.REPLACED``), under
CPython's real ``ssl.py``. It keeps the API CPython's ``ssl.py`` uses (``_SSLContext``,
``MemoryBIO``, the ``_wrap_socket``/``_wrap_bio`` objects, errors, constants) but holds no
crypto: each TLS connection opens the host device ``/dev/pyworkers/tls`` and every step
(handshake, read, write, shutdown) is one request there, carrying the ciphertext received from
the peer and returning the ciphertext to send (wire format: ``runtime/tls.py``). Constants are
the host ``_ssl``'s (``/dev/pyworkers/ssl-constants``), so they match the OpenSSL really used.
Client side only: server-side TLS raises :class:`SSLError`.
"""
import os as _os
import struct as _struct
import weakref as _weakref

_DEVICE = "/dev/pyworkers/tls"


# feature flags newer ssl.py versions import; the host's own values (below) win
HAS_SNI = HAS_ALPN = HAS_ECDH = HAS_NEVER_CHECK_COMMON_NAME = HAS_TLSv1_2 = HAS_TLSv1_3 = True
HAS_NPN = HAS_PSK = HAS_PHA = HAS_SSLv2 = HAS_SSLv3 = HAS_TLSv1 = HAS_TLSv1_1 = False


def _load_constants():
    import json

    with open("/dev/pyworkers/ssl-constants", "rb") as f:
        consts = json.loads(f.read())
    objs = consts.pop("_OBJECTS", [])
    for k, v in consts.items():
        globals()[k] = tuple(v) if isinstance(v, list) else v
    return [tuple(o) for o in objs]


_OBJECTS = _load_constants()


# ------------------------------------------------------------------------------------ errors
class SSLError(OSError):
    """An error from the TLS layer (``args``: ``(ssl error code, message)``)."""

    reason = None
    library = None

    def __str__(self):
        if len(self.args) > 1 and isinstance(self.args[1], str):
            return self.args[1]
        return super().__str__()


class SSLZeroReturnError(SSLError):
    """The TLS connection was closed cleanly."""


class SSLWantReadError(SSLError):
    """More data must be received from the peer to complete the operation."""


class SSLWantWriteError(SSLError):
    """Data must be sent to the peer to complete the operation."""


class SSLSyscallError(SSLError):
    """A transport error."""


class SSLEOFError(SSLError):
    """The peer closed the transport without a TLS close_notify."""


class SSLCertVerificationError(SSLError, ValueError):
    """The peer's certificate did not verify."""

    verify_code = None
    verify_message = None


_ERRORS = {c.__name__: c for c in (SSLError, SSLZeroReturnError, SSLWantReadError,
                                    SSLWantWriteError, SSLSyscallError, SSLEOFError,
                                    SSLCertVerificationError)}
_ERRORS.update(ValueError=ValueError, TypeError=TypeError, OSError=OSError,
               FileNotFoundError=FileNotFoundError, NotImplementedError=NotImplementedError)


def _raise(hdr):
    cls = _ERRORS.get(hdr.get("type"), SSLError)
    exc = cls(*hdr.get("args", ()))
    for k in ("reason", "library", "verify_code", "verify_message"):
        if hdr.get(k) is not None:
            setattr(exc, k, hdr[k])
    raise exc


# ------------------------------------------------------------------------------ small pieces
class MemoryBIO:
    """An in-memory buffer (the ``ssl.MemoryBIO`` API)."""

    def __init__(self):
        self._buf = bytearray()
        self._eof = False

    def write(self, data):
        if isinstance(data, (str, int, bool)) or data is None:
            raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'")
        if self._eof:
            raise SSLError(1, "cannot write() after write_eof()")
        data = memoryview(data).tobytes()
        self._buf += data
        return len(data)

    def read(self, n=-1):
        if n is None or n < 0 or n >= len(self._buf):
            out = bytes(self._buf)
            self._buf.clear()
        else:
            out = bytes(self._buf[:n])
            del self._buf[:n]
        return out

    def write_eof(self):
        self._eof = True

    @property
    def pending(self):
        return len(self._buf)

    @property
    def eof(self):
        return self._eof and not self._buf


class SSLSession:
    """TLS sessions are not exposed (no resumption across connections)."""

    def __init__(self, *a, **k):
        raise TypeError("cannot create '_ssl.SSLSession' instances")


def txt2obj(txt, name=False):
    for o in _OBJECTS:
        if txt == o[3] or (name and txt in (o[1], o[2])):
            return o
    raise ValueError(f"unknown object '{txt}'")


def nid2obj(nid):
    for o in _OBJECTS:
        if o[0] == nid:
            return o
    raise ValueError(f"unknown NID {nid}")


def RAND_status():
    return True


def RAND_add(string, entropy):
    pass


def RAND_bytes(n):
    return _os.urandom(n)


def get_default_verify_paths():
    return ("SSL_CERT_FILE", "/etc/ssl/cert.pem", "SSL_CERT_DIR", "/etc/ssl/certs")


def _der_to_pem(data):
    import base64

    data = bytes(data)
    out = []
    i = 0
    while i < len(data):
        if data[i] != 0x30 or i + 2 > len(data):
            raise SSLError(1, "[X509] not a DER certificate sequence")
        ln = data[i + 1]
        hdr = 2
        if ln & 0x80:
            nb = ln & 0x7F
            ln = int.from_bytes(data[i + 2:i + 2 + nb], "big")
            hdr = 2 + nb
        cert = data[i:i + hdr + ln]
        i += hdr + ln
        b64 = base64.encodebytes(cert).decode("ascii")
        out.append("-----BEGIN CERTIFICATE-----\n" + b64 + "-----END CERTIFICATE-----\n")
    return "".join(out)


def _read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("ascii", "replace")


# ----------------------------------------------------------------------------------- context
class _SSLContext:
    """Settings of a TLS context, applied by the host when a connection is wrapped."""

    def __new__(cls, protocol=None, *args, **kwargs):
        if protocol is None:
            protocol = PROTOCOL_TLS  # noqa: F821 - from the host constants
        pinned = {globals().get(f"PROTOCOL_TLSv{v}"): globals().get(f"PROTO_TLSv{v}")
                  for v in ("1", "1_1", "1_2")}  # deprecated fixed-version protocols
        pinned.pop(None, None)
        if protocol not in (PROTOCOL_TLS, PROTOCOL_TLS_CLIENT, PROTOCOL_TLS_SERVER,  # noqa: F821
                            *pinned):
            raise ValueError(f"invalid or unsupported protocol version {protocol}")
        self = object.__new__(cls)
        client = protocol == PROTOCOL_TLS_CLIENT  # noqa: F821
        self._protocol = protocol
        self._verify_mode = CERT_REQUIRED if client else CERT_NONE  # noqa: F821
        self._check_hostname = client
        self._options = (OP_ALL | OP_NO_SSLv2 | OP_NO_SSLv3 | OP_NO_COMPRESSION  # noqa: F821
                         | OP_CIPHER_SERVER_PREFERENCE | OP_SINGLE_DH_USE  # noqa: F821
                         | OP_SINGLE_ECDH_USE)  # noqa: F821
        self._minimum_version = pinned.get(protocol, PROTO_MINIMUM_SUPPORTED)  # noqa: F821
        self._maximum_version = pinned.get(protocol, PROTO_MAXIMUM_SUPPORTED)  # noqa: F821
        self._verify_flags = VERIFY_X509_TRUSTED_FIRST  # noqa: F821
        self._host_flags_v = 0
        self._msg_cb = None
        self._ca = []
        self._default_certs = False
        self._alpn = None
        self._ciphers = None
        self._cert_chain = None
        self._password = None
        self.sni_callback = None
        self.keylog_filename = None
        self.post_handshake_auth = False
        self.num_tickets = 2
        self.security_level = 2
        return self

    protocol = property(lambda self: self._protocol)

    @property
    def verify_mode(self):
        return self._verify_mode

    @verify_mode.setter
    def verify_mode(self, value):
        value = int(value)
        if value not in (0, 1, 2):
            raise ValueError("invalid value for verify_mode")
        if value == 0 and self._check_hostname:
            raise ValueError("Cannot set verify_mode to CERT_NONE when check_hostname is enabled.")
        self._verify_mode = value

    @property
    def check_hostname(self):
        return self._check_hostname

    @check_hostname.setter
    def check_hostname(self, value):
        value = bool(value)
        if value and self._verify_mode == 0:
            self._verify_mode = 2
        self._check_hostname = value

    @property
    def options(self):
        return self._options

    @options.setter
    def options(self, value):
        self._options = int(value)

    @property
    def minimum_version(self):
        return self._minimum_version

    @minimum_version.setter
    def minimum_version(self, value):
        self._minimum_version = int(value)

    @property
    def maximum_version(self):
        return self._maximum_version

    @maximum_version.setter
    def maximum_version(self, value):
        self._maximum_version = int(value)

    @property
    def verify_flags(self):
        return self._verify_flags

    @verify_flags.setter
    def verify_flags(self, value):
        self._verify_flags = int(value)

    @property
    def _host_flags(self):
        return self._host_flags_v

    @_host_flags.setter
    def _host_flags(self, value):
        self._host_flags_v = int(value)

    @property
    def _msg_callback(self):
        return self._msg_cb

    @_msg_callback.setter
    def _msg_callback(self, value):
        self._msg_cb = value

    def load_verify_locations(self, cafile=None, capath=None, cadata=None):
        if cafile is None and capath is None and cadata is None:
            raise TypeError("cafile, capath and cadata cannot be all omitted")
        if cafile is not None:
            self._ca.append(_read_text(_os.fspath(cafile)))
        if capath is not None:
            for name in sorted(_os.listdir(capath)):
                p = _os.path.join(capath, name)
                if _os.path.isfile(p):
                    text = _read_text(p)
                    if "BEGIN CERTIFICATE" in text:
                        self._ca.append(text)
        if cadata is not None:
            if isinstance(cadata, str):
                if "BEGIN CERTIFICATE" not in cadata:
                    raise SSLError(1, "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found")
                self._ca.append(cadata)
            else:
                self._ca.append(_der_to_pem(cadata))

    def load_cert_chain(self, certfile, keyfile=None, password=None):
        text = _read_text(_os.fspath(certfile))
        if keyfile is not None:
            text += "\n" + _read_text(_os.fspath(keyfile))
        if callable(password):
            password = password()
        if isinstance(password, bytes):
            password = password.decode("utf-8")
        self._cert_chain = text
        self._password = password

    def set_default_verify_paths(self):
        self._default_certs = True

    def _set_alpn_protocols(self, protos):
        protos = bytes(protos)
        out, i = [], 0
        while i < len(protos):
            n = protos[i]
            out.append(protos[i + 1:i + 1 + n].decode("ascii"))
            i += 1 + n
        self._alpn = out

    def _set_npn_protocols(self, protos):
        pass

    def set_ciphers(self, ciphers):
        self._ciphers = str(ciphers)

    def get_ciphers(self):
        return []

    def set_ecdh_curve(self, name):
        pass

    def load_dh_params(self, path):
        pass

    def cert_store_stats(self):
        n = sum(t.count("BEGIN CERTIFICATE") for t in self._ca)
        return {"x509": n, "crl": 0, "x509_ca": n}

    def get_ca_certs(self, binary_form=False):
        return []

    def session_stats(self):
        keys = ("number", "connect", "connect_good", "connect_renegotiate", "accept",
                "accept_good", "accept_renegotiate", "hits", "misses", "timeouts", "cache_full")
        return dict.fromkeys(keys, 0)

    def _config(self):
        return {"verify_mode": self._verify_mode, "check_hostname": self._check_hostname,
                "default_certs": self._default_certs, "minimum_version": self._minimum_version,
                "maximum_version": self._maximum_version, "options": self._options,
                "ciphers": self._ciphers, "alpn": self._alpn, "cert_chain": self._cert_chain,
                "key_password": self._password}

    def _wrap_socket(self, sock, server_side, server_hostname=None, *, owner=None, session=None):
        if server_side:
            raise SSLError(1, "server-side TLS is not available in the pyworkers sandbox")
        return _SocketTLS(self, sock, server_hostname, owner)

    def _wrap_bio(self, incoming, outgoing, server_side, server_hostname=None, *, owner=None,
                  session=None):
        if server_side:
            raise SSLError(1, "server-side TLS is not available in the pyworkers sandbox")
        return _BioTLS(self, incoming, outgoing, server_hostname, owner)


# -------------------------------------------------------------------------------- connection
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
            _raise(hdr)

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
            raise SSLWantReadError(SSL_ERROR_WANT_READ,  # noqa: F821
                                   "The operation did not complete (read)")
        if st == "want_write":
            raise SSLWantWriteError(SSL_ERROR_WANT_WRITE,  # noqa: F821
                                    "The operation did not complete (write)")
        _raise(hdr)


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
                raise SSLWantWriteError(SSL_ERROR_WANT_WRITE,  # noqa: F821
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
                    raise SSLEOFError(SSL_ERROR_EOF,  # noqa: F821
                                      "EOF occurred in violation of protocol")
                try:
                    chunk = self._raw.recv(sock, 65536)
                except BlockingIOError:
                    raise SSLWantReadError(SSL_ERROR_WANT_READ,  # noqa: F821
                                           "The operation did not complete (read)") from None
                if chunk:
                    self._rbuf += chunk
                else:
                    self._eof = True
                continue
            if st == "want_write":
                continue
            _raise(hdr)

    def _shutdown_result(self):
        return self._sock()
