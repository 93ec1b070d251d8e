"""Key derivation for the guest on the host's OpenSSL: ``hashlib.pbkdf2_hmac`` and ``hashlib.scrypt``.

Pyodide's CPython has no ``_hashlib`` (no OpenSSL in the sandbox), so ``hashlib.pbkdf2_hmac`` and
``hashlib.scrypt`` are missing. Password hashing at real work factors is far too slow in
interpreted Python (scrypt n=2**14, r=8, p=1 is ~500,000 Salsa20/8 cores), so the guest module
``runtime/guest/_pyworkers_hashlib.py`` sends each derivation to the host through the service file
:data:`DEVICE` (see :class:`pyworkers.runtime.vfs.ServiceFile`) and the host runs the standard
library's own ``hashlib`` functions (OpenSSL).

Protocol (UTF-8 JSON, one request per open file):

- request ``{"op": "pbkdf2_hmac", "hash_name": str, "password": hex, "salt": hex,
  "iterations": int, "dklen": int | null}`` or ``{"op": "scrypt", "password": hex, "salt": hex,
  "n": int, "r": int, "p": int, "maxmem": int, "dklen": int}``;
- reply ``{"ok": hex}`` or ``{"error": [exception type name, message]}`` (``ValueError``,
  ``TypeError``, ``OverflowError`` or ``MemoryError``: the guest raises the same type).

Limits (the host computes while the guest waits, and a host computation cannot be interrupted
by the isolate's request timeout): at most :data:`MAX_PBKDF2_WORK` iterations x output blocks,
scrypt memory at most :data:`MAX_SCRYPT_MEM` bytes, requests at most :data:`MAX_REQUEST` bytes;
beyond them the guest gets a ``ValueError`` naming the limit.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

#: guest path of the service file
DEVICE = "/dev/pyworkers/kdf"
MAX_REQUEST = 1 << 20
#: iterations x ceil(dklen / digest size) per pbkdf2_hmac call (10x Django 5's 1,000,000 default)
MAX_PBKDF2_WORK = 10_000_000
#: scrypt memory 128 * r * (n + p + 2) bytes per call (werkzeug's default n=2**15, r=8: 32 MiB)
MAX_SCRYPT_MEM = 256 << 20
_ERRORS = ("ValueError", "TypeError", "OverflowError", "MemoryError")


def _int(req: dict, key: str, default: Any = None) -> Any:
    v = req.get(key, default)
    if v is None and default is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{key} must be an integer")
    return v


def _derive(req: dict) -> bytes:
    op = req.get("op")
    password = bytes.fromhex(req["password"])
    salt = bytes.fromhex(req["salt"])
    if op == "pbkdf2_hmac":
        name = req["hash_name"]
        if not isinstance(name, str):
            raise TypeError("hash_name must be a string")
        iterations, dklen = _int(req, "iterations"), _int(req, "dklen")
        try:
            size = hashlib.new(name).digest_size
        except (ValueError, TypeError):
            raise ValueError(f"unsupported hash type {name}") from None
        blocks = -(-(dklen or size) // size) if (dklen or size) > 0 else 1
        if isinstance(iterations, int) and iterations * blocks > MAX_PBKDF2_WORK:
            raise ValueError(f"pbkdf2_hmac: iterations x blocks above the sandbox limit {MAX_PBKDF2_WORK}")
        return hashlib.pbkdf2_hmac(name, password, salt, iterations, dklen)
    if op == "scrypt":
        n, r, p = _int(req, "n"), _int(req, "r"), _int(req, "p")
        maxmem, dklen = _int(req, "maxmem", 0), _int(req, "dklen", 64)
        if n > 0 and r > 0 and p > 0 and 128 * r * (n + p + 2) > MAX_SCRYPT_MEM:
            raise ValueError(f"scrypt: memory 128*r*(n+p+2) above the sandbox limit {MAX_SCRYPT_MEM} bytes")
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)
    raise ValueError(f"unknown key derivation {op!r}")


def handle(request: bytes) -> bytes:
    """Serve one request (see the module docstring); never raises."""
    try:
        if len(request) > MAX_REQUEST:
            raise ValueError(f"key derivation request above {MAX_REQUEST} bytes")
        req = json.loads(request)
        if not isinstance(req, dict):
            raise ValueError("bad key derivation request")
        reply: dict = {"ok": _derive(req).hex()}
    except Exception as e:  # noqa: BLE001 - everything goes back to the guest as data
        name = type(e).__name__
        reply = {"error": [name if name in _ERRORS else "ValueError", str(e)]}
    return json.dumps(reply).encode()
