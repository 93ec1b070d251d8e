"""``hashlib.pbkdf2_hmac`` and ``hashlib.scrypt`` for the sandbox (imported by the guest helper
when ``hashlib`` is first imported and lacks them: Pyodide's CPython has no ``_hashlib``).

Both run on the host's OpenSSL through the service file ``/dev/pyworkers/kdf`` (protocol and
limits: ``runtime/kdf.py`` on the host side). Signatures, argument checks and results are those
of CPython's ``_hashlib`` functions.
"""
import json
import os
from operator import index as _index

DEVICE = "/dev/pyworkers/kdf"


def _bytes(value):
    if isinstance(value, str):
        raise TypeError("a bytes-like object is required, not 'str'")
    try:
        return memoryview(value).tobytes()
    except TypeError:
        raise TypeError("a bytes-like object is required, not %r" % type(value).__name__) from None


def _derive(req):
    fd = os.open(DEVICE, os.O_RDWR)
    try:
        data = json.dumps(req).encode()
        while data:
            data = data[os.write(fd, data):]
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    reply = json.loads(b"".join(chunks))
    if "ok" in reply:
        return bytes.fromhex(reply["ok"])
    kind, message = reply["error"]
    raise {"TypeError": TypeError, "OverflowError": OverflowError,
           "MemoryError": MemoryError}.get(kind, ValueError)(message)


def pbkdf2_hmac(hash_name, password, salt, iterations, dklen=None):
    """Password based key derivation function 2 (PKCS #5 v2.0) with HMAC as pseudorandom function."""
    if not isinstance(hash_name, str):
        raise TypeError("pbkdf2_hmac() argument 'hash_name' must be str, not %s" % type(hash_name).__name__)
    return _derive({"op": "pbkdf2_hmac", "hash_name": hash_name, "password": _bytes(password).hex(),
                    "salt": _bytes(salt).hex(), "iterations": _index(iterations),
                    "dklen": None if dklen is None else _index(dklen)})


def scrypt(password, *, salt, n, r, p, maxmem=0, dklen=64):
    """scrypt password-based key derivation function."""
    return _derive({"op": "scrypt", "password": _bytes(password).hex(),
                    "salt": _bytes(salt).hex(), "n": _index(n), "r": _index(r), "p": _index(p),
                    "maxmem": _index(maxmem), "dklen": _index(dklen)})


def install(hashlib):
    """Add the missing functions to the ``hashlib`` module object."""
    if not hasattr(hashlib, "pbkdf2_hmac"):
        hashlib.pbkdf2_hmac = pbkdf2_hmac
        if "pbkdf2_hmac" not in hashlib.__all__:
            hashlib.__all__ += ("pbkdf2_hmac",)
    if not hasattr(hashlib, "scrypt"):
        hashlib.scrypt = scrypt
