"""The exceptions of the guest's ``_ssl`` (``_pyworkers_ssl``) and :func:`raise_error`, which
raises the one a host TLS reply names.

The classes are those CPython's ``_ssl`` defines (same names, bases and attributes);
``_pyworkers_ssl`` re-exports them and sets their ``__module__`` to ``_ssl``.
"""
__all__ = ["SSLError", "SSLZeroReturnError", "SSLWantReadError", "SSLWantWriteError",
           "SSLSyscallError", "SSLEOFError", "SSLCertVerificationError", "ERRORS", "raise_error"]


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


#: exception class by the name a host reply's ``type`` gives
ERRORS = {c.__name__: c for c in (SSLError, SSLZeroReturnError, SSLWantReadError,
                                   SSLWantWriteError, SSLSyscallError, SSLEOFError,
                                   SSLCertVerificationError)}
ERRORS.update(ValueError=ValueError, TypeError=TypeError, OSError=OSError,
              FileNotFoundError=FileNotFoundError, NotImplementedError=NotImplementedError)


def raise_error(hdr):
    """Raise the exception described by the header ``hdr`` of a host reply with status
    ``"error"``: class from ``type`` (:class:`SSLError` when unknown), arguments from ``args``,
    and its ``reason``, ``library``, ``verify_code``, ``verify_message`` when given."""
    cls = ERRORS.get(hdr.get("type"), SSLError)
    exc = cls(*hdr.get("args", ()))
    for k in ("reason", "library", "verify_code", "verify_message"):
        if hdr.get(k) is not None:
            setattr(exc, k, hdr[k])
    raise exc
