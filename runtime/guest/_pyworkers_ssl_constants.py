"""The constants of the guest's ``_ssl`` (``_pyworkers_ssl``): the host ``_ssl``'s own.

Read once, at import, from the host device ``/dev/pyworkers/ssl-constants`` (JSON written by
``runtime/tls.py``: ``host_ssl_constants``), so ``PROTOCOL_*``, ``OP_*``, ``CERT_*``,
``SSL_ERROR_*``, ``OPENSSL_VERSION*`` and the ``HAS_*`` flags match the OpenSSL that really
does the guest's TLS. Each constant is an attribute of this module and an entry of
:data:`CONSTANTS` (which ``_pyworkers_ssl`` copies onto the ``_ssl`` module object).
"""
__all__ = ["CONSTANTS", "OBJECTS"]

#: name -> value of every constant the guest's ``_ssl`` has. Starts with the feature flags
#: newer ``ssl.py`` versions import; the host's own values (read below) win.
CONSTANTS = dict.fromkeys(("HAS_SNI", "HAS_ALPN", "HAS_ECDH", "HAS_NEVER_CHECK_COMMON_NAME",
                           "HAS_TLSv1_2", "HAS_TLSv1_3"), True)
CONSTANTS.update(dict.fromkeys(("HAS_NPN", "HAS_PSK", "HAS_PHA", "HAS_SSLv2", "HAS_SSLv3",
                                "HAS_TLSv1", "HAS_TLSv1_1"), False))


def _load_constants():
    import json

    with open("/dev/pyworkers/ssl-constants", "rb") as f:
        consts = json.loads(f.read())
    objs = consts.pop("_OBJECTS", [])
    for k, v in consts.items():
        CONSTANTS[k] = tuple(v) if isinstance(v, list) else v
    globals().update(CONSTANTS)
    return [tuple(o) for o in objs]


#: the ASN.1 objects ``txt2obj``/``nid2obj`` know, as ``(nid, short name, long name, oid)``:
#: the host's serverAuth and clientAuth purposes (what ``ssl.Purpose`` looks up)
OBJECTS = _load_constants()
