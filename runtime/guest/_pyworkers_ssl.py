"""``_ssl`` for the pyworkers sandbox: TLS done by the host's OpenSSL.

Loaded in place of Pyodide's stub ``_ssl`` (see ``_PostImportPatches.REPLACED``), under
CPython's real ``ssl.py``. It keeps the API CPython's ``ssl.py`` uses (``_SSLContext``,
``MemoryBIO``, the ``_wrap_socket``/``_wrap_bio`` objects, errors, constants) but holds no
crypto: each TLS connection opens the host device ``/dev/pyworkers/tls`` and every step
(handshake, read, write, shutdown) is one request there, carrying the ciphertext received from
the peer and returning the ciphertext to send (wire format: ``runtime/tls.py``). Constants are
the host ``_ssl``'s (``/dev/pyworkers/ssl-constants``), so they match the OpenSSL really used.
Client side only: server-side TLS raises :class:`SSLError`.

This module is the ``_ssl`` module object ``ssl.py`` sees: it defines the small pieces
(``MemoryBIO``, ``SSLSession``, ``txt2obj``/``nid2obj``, ``RAND_*``,
``get_default_verify_paths``) and re-exports the rest from the guest modules beside it, found
on ``sys.path`` (``/lib/pyworkers``): ``_pyworkers_ssl_constants`` (the constants, copied onto
this module), ``_pyworkers_ssl_errors`` (the exceptions), ``_pyworkers_ssl_context``
(``_SSLContext``) and ``_pyworkers_ssl_conn`` (the connection objects). The classes defined
there carry this module's name as their ``__module__`` (``_ssl.SSLError``, as before).
"""
import os as _os

from _pyworkers_ssl_conn import _BioTLS, _SocketTLS, _TLS
from _pyworkers_ssl_constants import CONSTANTS as _CONSTANTS, OBJECTS as _OBJECTS
from _pyworkers_ssl_context import _SSLContext
from _pyworkers_ssl_errors import (SSLCertVerificationError, SSLEOFError, SSLError,
                                   SSLSyscallError, SSLWantReadError, SSLWantWriteError,
                                   SSLZeroReturnError)

globals().update(_CONSTANTS)  # the host's constants (and the HAS_* flags) are _ssl's

for _cls in (SSLError, SSLZeroReturnError, SSLWantReadError, SSLWantWriteError, SSLSyscallError,
             SSLEOFError, SSLCertVerificationError, _SSLContext, _TLS, _BioTLS, _SocketTLS):
    _cls.__module__ = __name__  # "_ssl": tracebacks name _ssl.SSLError, pickle finds it here
del _cls


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
