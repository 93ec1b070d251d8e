"""``_SSLContext`` of the guest's ``_ssl`` (``_pyworkers_ssl``): a TLS context's settings.

The context holds no crypto: it keeps what ``ssl.SSLContext`` sets (verify mode, hostname
check, options, protocol versions, ciphers, ALPN, trusted CAs as PEM text, a client
certificate chain) and hands them, as :meth:`_SSLContext._config` and the CA text, to the host
when a connection is wrapped (``_wrap_socket``/``_wrap_bio`` return the connection objects of
``_pyworkers_ssl_conn``). Client side only: server-side TLS raises ``SSLError``.
"""
import os as _os

import _pyworkers_ssl_constants as _constants
from _pyworkers_ssl_conn import _BioTLS, _SocketTLS
from _pyworkers_ssl_errors import SSLError

__all__ = ["_SSLContext"]


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


class _SSLContext:
    """Settings of a TLS context, applied by the host when a connection is wrapped."""

    def __new__(cls, protocol=None, *args, **kwargs):
        c = _constants
        if protocol is None:
            protocol = c.PROTOCOL_TLS
        pinned = {c.CONSTANTS.get(f"PROTOCOL_TLSv{v}"): c.CONSTANTS.get(f"PROTO_TLSv{v}")
                  for v in ("1", "1_1", "1_2")}  # deprecated fixed-version protocols
        pinned.pop(None, None)
        if protocol not in (c.PROTOCOL_TLS, c.PROTOCOL_TLS_CLIENT, c.PROTOCOL_TLS_SERVER,
                            *pinned):
            raise ValueError(f"invalid or unsupported protocol version {protocol}")
        self = object.__new__(cls)
        client = protocol == c.PROTOCOL_TLS_CLIENT
        self._protocol = protocol
        self._verify_mode = c.CERT_REQUIRED if client else c.CERT_NONE
        self._check_hostname = client
        self._options = (c.OP_ALL | c.OP_NO_SSLv2 | c.OP_NO_SSLv3 | c.OP_NO_COMPRESSION
                         | c.OP_CIPHER_SERVER_PREFERENCE | c.OP_SINGLE_DH_USE
                         | c.OP_SINGLE_ECDH_USE)
        self._minimum_version = pinned.get(protocol, c.PROTO_MINIMUM_SUPPORTED)
        self._maximum_version = pinned.get(protocol, c.PROTO_MAXIMUM_SUPPORTED)
        self._verify_flags = c.VERIFY_X509_TRUSTED_FIRST
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
