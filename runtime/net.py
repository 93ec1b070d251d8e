"""Outbound TCP for the guest: host sockets behind the Emscripten socket syscalls, and DNS.

The guest's ``socket`` module (CPython's ``socketmodule.c`` over Emscripten's musl) calls the
``__syscall_socket``/``connect``/``sendto``/``recvfrom``/``sendmsg``/``recvmsg``/
``getsockopt``/``getpeername``/``getsockname`` imports, Pyodide's ``_try_shutdown`` (from its
``__syscall_shutdown`` wrapper; its ``_maybe_*_async`` JSPI hooks return null so the plain
syscalls run); DNS is in ``runtime/dns.py``.
Semantics follow Emscripten's ``libsyscall.js``/``libsockfs.js`` (sockaddr layouts:
``sockaddr_in`` 16 bytes = family u16, port u16 big-endian, address 4 bytes;
``sockaddr_in6`` 28 bytes = family, port, flowinfo u32, address 16 bytes, scope id u32;
``struct addrinfo`` 32 bytes = flags, family, socktype, protocol, addrlen, addr*, canonname*,
next*; ``struct msghdr`` = name*, namelen, iov*, iovlen, control*, controllen, flags) but each
guest socket is a real non-blocking host socket (:class:`HostSocket`). The host side handles
IPv4 and IPv6, but Pyodide's CPython is built without IPv6 (``socket.has_ipv6`` is False), so
guests connect over IPv4 and ``getaddrinfo`` with no family returns IPv4 addresses.

Blocking guest sockets (CPython's default, and ``settimeout(None)``) block on the host in
:meth:`Host.wait` (the isolate's waker plus the socket's fd), so the request deadline and
``Isolate.interrupt`` still stop them; non-blocking ones (``O_NONBLOCK`` via ``fcntl`` or
``ioctl(FIONBIO)``; CPython sets it for every socket with a timeout and polls) get
``EAGAIN``/``EINPROGRESS`` like on Linux. Every ``connect`` is checked against the isolate's
egress :class:`~pyworkers.runtime.egress.Policy` on the resolved address; a refusal is
``EACCES`` (``PermissionError`` in the guest) and its text is logged to ``pyworkers.egress``
and readable by the guest at ``/dev/pyworkers/net-error`` (the guest's ``socket`` patch puts it
in the exception). Only TCP (``SOCK_STREAM``) over IPv4/IPv6: other socket types and families
fail with ``EPROTONOSUPPORT``/``EAFNOSUPPORT``; listening sockets are not offered (``bind``/
``listen``/``accept`` fail with ``EPERM``).
"""
from __future__ import annotations

import errno as _errno
import ipaddress
import logging
import select
import socket
import struct
from typing import TYPE_CHECKING

from pyworkers.runtime import egress as E
from pyworkers.runtime.host import imp, syscall
from pyworkers.runtime.streams import POLLERR, POLLHUP, POLLIN, POLLOUT, Stream, StreamError
from pyworkers.runtime.vfs import FSError

if TYPE_CHECKING:
    from pyworkers.runtime.host import Host

log = logging.getLogger("pyworkers.egress")

# WASI errno numbering (Emscripten uses it): position in this list = the number
_WASI_NAMES = (
    "ESUCCESS E2BIG EACCES EADDRINUSE EADDRNOTAVAIL EAFNOSUPPORT EAGAIN EALREADY EBADF EBADMSG "
    "EBUSY ECANCELED ECHILD ECONNABORTED ECONNREFUSED ECONNRESET EDEADLK EDESTADDRREQ EDOM EDQUOT "
    "EEXIST EFAULT EFBIG EHOSTUNREACH EIDRM EILSEQ EINPROGRESS EINTR EINVAL EIO EISCONN EISDIR "
    "ELOOP EMFILE EMLINK EMSGSIZE EMULTIHOP ENAMETOOLONG ENETDOWN ENETRESET ENETUNREACH ENFILE "
    "ENOBUFS ENODEV ENOENT ENOEXEC ENOLCK ENOLINK ENOMEM ENOMSG ENOPROTOOPT ENOSPC ENOSYS ENOTCONN "
    "ENOTDIR ENOTEMPTY ENOTRECOVERABLE ENOTSOCK ENOTSUP ENOTTY ENXIO EOVERFLOW EOWNERDEAD EPERM "
    "EPIPE EPROTO EPROTONOSUPPORT EPROTOTYPE ERANGE EROFS ESPIPE ESRCH ESTALE ETIMEDOUT ETXTBSY "
    "EXDEV").split()
W = {name: i for i, name in enumerate(_WASI_NAMES)}
#: host errno -> WASI errno
HOST_TO_WASI = {getattr(_errno, n): i for n, i in W.items() if hasattr(_errno, n)}

AF_INET, AF_INET6 = 2, 10
SOCK_STREAM, SOCK_DGRAM = 1, 2
SOCK_NONBLOCK, SOCK_CLOEXEC = 0o4000, 0o2000000
O_NONBLOCK = 0o4000
MSG_PEEK, MSG_DONTWAIT = 0x2, 0x40
FIONBIO, FIONREAD = 0x5421, 0x541B
S_IFSOCK = 0o140000

#: (level, optname) pairs passed through to the host socket as ints (Linux numbering, which
#: musl shares): SOL_SOCKET SO_REUSEADDR/SO_TYPE/SO_SNDBUF/SO_RCVBUF/SO_KEEPALIVE/SO_LINGER-less,
#: IPPROTO_TCP TCP_NODELAY/TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT
INT_OPTIONS = {(1, 2), (1, 3), (1, 7), (1, 8), (1, 9), (6, 1), (6, 4), (6, 5), (6, 6)}


def wasi_errno(e: OSError) -> int:
    """The WASI errno for a host ``OSError`` (``EIO`` if unknown)."""
    return HOST_TO_WASI.get(e.errno or 0, W["EIO"])


class NetState:
    """Per-isolate network state: open sockets, names resolved (for name rules) and the
    text of the last refused connect."""

    def __init__(self) -> None:
        self.open: set["HostSocket"] = set()
        #: ip (str) -> host names the guest resolved to it
        self.names: dict[str, set[str]] = {}
        self.last_error = ""

    def remember(self, name: str, ip: str) -> None:
        try:
            ipaddress.ip_address(name)
            return  # a literal: nothing to remember
        except ValueError:
            pass
        self.names.setdefault(ip, set()).add(name)


def state(h: "Host") -> NetState:
    st = getattr(h, "net", None)
    if st is None:
        st = h.net = NetState()
    return st


def policy(h: "Host") -> E.Policy:
    return getattr(h, "egress", None) or E.DEFAULT


class HostSocket(Stream):
    """A guest TCP socket backed by a non-blocking host ``socket.socket``.

    ``read``/``write`` raise :class:`StreamError` ``EAGAIN`` when the host socket would block;
    ``blocking`` reports the *guest's* mode (``O_NONBLOCK`` clear): the host then waits instead.
    ``revents`` is a zero-timeout ``poll`` of the host socket; ``os_fd`` its fileno.
    """

    mode = S_IFSOCK | 0o777

    def __init__(self, family: int, nonblocking: bool, net: NetState):
        self.family = family
        self.sock = socket.socket(socket.AF_INET6 if family == AF_INET6 else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.sock.setblocking(False)
        # the guest's setsockopt never reaches the host (Emscripten's C stub), so the option
        # clients set (asyncio, urllib3 ...) is on from the start: no Nagle delays
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.flags = 2 | (O_NONBLOCK if nonblocking else 0)  # O_RDWR
        self.destination: str | None = None  # "host:port" once connect was called
        self.connecting = False
        self.net = net
        self._poller = select.poll()
        self._poller.register(self.sock.fileno(), select.POLLIN | select.POLLOUT | select.POLLPRI)
        net.open.add(self)

    @property
    def blocking(self) -> bool:
        return not (self.flags & O_NONBLOCK)

    def read(self, n: int, flags: int = 0) -> bytes:
        try:
            return self.sock.recv(n, flags)
        except (BlockingIOError, InterruptedError):
            raise StreamError(W["EAGAIN"], "would block") from None
        except OSError as e:
            raise StreamError(wasi_errno(e), str(e)) from None

    def write(self, data: bytes) -> int:
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            raise StreamError(W["EAGAIN"], "would block") from None
        except OSError as e:
            raise StreamError(wasi_errno(e), str(e)) from None

    def revents(self) -> int:
        if self.sock.fileno() < 0:
            return POLLHUP | POLLERR
        bits = 0
        for _, ev in self._poller.poll(0):
            bits |= ev
        out = 0
        if bits & (select.POLLIN | select.POLLPRI):
            out |= POLLIN
        if bits & select.POLLOUT:
            out |= POLLOUT
        if bits & select.POLLERR:
            out |= POLLERR
        if bits & select.POLLHUP:
            out |= POLLHUP
        if not self.connecting and self.destination is None:
            # never connected: Linux reports POLLOUT|POLLHUP for such a TCP socket
            out = POLLOUT | POLLHUP
        return out

    def ioctl(self, h: "Host", op: int, argp: int) -> int:
        return ioctl(h, self, op, argp)

    def os_fd(self) -> int | None:
        fd = self.sock.fileno()
        return fd if fd >= 0 else None

    def close(self) -> None:
        self.net.open.discard(self)
        try:
            self._poller.unregister(self.sock.fileno())
        except (KeyError, ValueError, OSError):
            pass
        self.sock.close()

    def __repr__(self) -> str:
        return f"<HostSocket {self.destination or 'unconnected'}>"


# ---------------------------------------------------------------------------- helpers
def _sock(h: "Host", fd: int) -> HostSocket:
    of = h.fds.get(fd)
    if of is None:
        raise FSError(W["EBADF"])
    if not isinstance(of, HostSocket):
        raise FSError(W["ENOTSOCK"])
    return of


def read_sockaddr(h: "Host", addr: int, addrlen: int) -> tuple[int, str, int]:
    """``(family, ip, port)`` of a guest sockaddr; ``EINVAL``/``EAFNOSUPPORT`` if malformed."""
    if addrlen < 2:
        raise FSError(W["EINVAL"])
    family, = h.mem.unpack("<H", addr)
    if family == AF_INET:
        if addrlen < 16:
            raise FSError(W["EINVAL"])
        port, = struct.unpack(">H", h.mem.read(addr + 2, 2))
        return family, socket.inet_ntop(socket.AF_INET, h.mem.read(addr + 4, 4)), port
    if family == AF_INET6:
        if addrlen < 28:
            raise FSError(W["EINVAL"])
        port, = struct.unpack(">H", h.mem.read(addr + 2, 2))
        return family, socket.inet_ntop(socket.AF_INET6, h.mem.read(addr + 8, 16)), port
    raise FSError(W["EAFNOSUPPORT"])


def write_sockaddr(h: "Host", addr: int, paddrlen: int, host_addr: tuple) -> None:
    """Write a host ``getpeername``-style address into a guest sockaddr (truncated to the
    guest's ``*addrlen`` like Linux; ``*addrlen`` set to the full size)."""
    ip, port = host_addr[0], host_addr[1]
    if ":" in ip:
        raw = struct.pack("<H", AF_INET6) + struct.pack(">H", port) + struct.pack("<I", 0) + \
            socket.inet_pton(socket.AF_INET6, ip.split("%")[0]) + struct.pack("<I", 0)
    else:
        raw = struct.pack("<H", AF_INET) + struct.pack(">H", port) + \
            socket.inet_pton(socket.AF_INET, ip) + b"\0" * 8
    cap = h.mem.u32(paddrlen) if paddrlen else len(raw)
    if addr:
        h.mem.write(addr, raw[:cap])
    if paddrlen:
        h.mem.set_u32(paddrlen, len(raw))


def _wait(h: "Host", s: HostSocket, events: int) -> None:
    fd = s.os_fd()
    if fd is None:
        raise FSError(W["EBADF"])
    if events & POLLOUT:
        h.wait(None, (), (fd,))
    else:
        h.wait(None, (fd,))


def blocking_io(h: "Host", s: Stream, op, arg, events: int, nonblocking: bool = False):
    """Run ``op(arg)``; when it would block and the guest's socket is blocking, wait on the
    host (deadline/interrupt still apply) and retry. Raises :class:`FSError`."""
    while True:
        try:
            return op(arg)
        except StreamError as e:
            if e.errno != W["EAGAIN"] or nonblocking or not getattr(s, "blocking", False):
                raise FSError(e.errno) from None
        _wait(h, s, events)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- syscalls
@imp("__syscall_socket")
@syscall
def sys_socket(h: "Host", domain, type_, protocol, *_):
    base = type_ & 0xF
    if domain not in (AF_INET, AF_INET6):
        raise FSError(W["EAFNOSUPPORT"], "only AF_INET/AF_INET6 sockets")
    if base != SOCK_STREAM or protocol not in (0, 6):
        log.info("guest asked for a socket of type %d protocol %d: only TCP is supported",
                 base, protocol)
        raise FSError(W["EPROTONOSUPPORT"], "only TCP (SOCK_STREAM) sockets")
    st = state(h)
    if len(st.open) >= policy(h).max_sockets:
        raise FSError(W["EMFILE"], "max_sockets")
    try:
        s = HostSocket(domain, bool(type_ & SOCK_NONBLOCK), st)
    except OSError as e:
        raise FSError(wasi_errno(e)) from None
    try:
        return h._stream_fd(s)
    except BaseException:
        s.close()
        raise


def check_egress(h: "Host", ip: str, port: int) -> None:
    """Raise ``EACCES`` (and log) when the isolate's policy refuses ``ip``:``port``."""
    st = state(h)
    names = sorted(st.names.get(ip, ()))
    decision = policy(h).check(ip, port, names)
    if not decision.allowed:
        msg = E.describe_refusal(ip, port, names, decision)
        st.last_error = msg
        log.warning("%s", msg)
        raise FSError(W["EACCES"], msg)


@imp("__syscall_connect")
@syscall
def sys_connect(h: "Host", fd, addr, addrlen, *_):
    s = _sock(h, fd)
    family, ip, port = read_sockaddr(h, addr, addrlen)
    if s.connecting:
        err = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            s.connecting = False
            raise FSError(HOST_TO_WASI.get(err, W["EIO"]))
        if s.revents() & POLLOUT:
            s.connecting = False
            raise FSError(W["EISCONN"])
        if not s.blocking:
            raise FSError(W["EALREADY"])
    else:
        if s.destination is not None:
            raise FSError(W["EISCONN"])
        if family != s.family:
            raise FSError(W["EAFNOSUPPORT"])
        check_egress(h, ip, port)
        s.destination = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        rc = s.sock.connect_ex((ip, port))
        if rc == 0:
            return 0
        if rc not in (_errno.EINPROGRESS, _errno.EAGAIN, _errno.EWOULDBLOCK):
            s.destination = None
            raise FSError(HOST_TO_WASI.get(rc, W["EIO"]))
        s.connecting = True
        if not s.blocking:
            raise FSError(W["EINPROGRESS"])
    while not (s.revents() & (POLLOUT | POLLERR | POLLHUP)):
        _wait(h, s, POLLOUT)
    s.connecting = False
    err = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        s.destination = None
        raise FSError(HOST_TO_WASI.get(err, W["EIO"]))
    return 0


@imp("__syscall_recvfrom")
@syscall
def sys_recvfrom(h: "Host", fd, buf, length, flags, addr, paddrlen):
    s = _sock(h, fd)
    data = blocking_io(h, s, lambda n: s.read(n, flags & MSG_PEEK), length, POLLIN,
                       bool(flags & MSG_DONTWAIT))
    h.mem.write(buf, data)
    if addr and data is not None:
        try:
            write_sockaddr(h, addr, paddrlen, s.sock.getpeername())
        except OSError:
            pass
    return len(data)


@imp("__syscall_sendto")
@syscall
def sys_sendto(h: "Host", fd, message, length, flags, addr, addrlen):
    s = _sock(h, fd)
    data = h.mem.read(message, length)
    return blocking_io(h, s, s.write, data, POLLOUT, bool(flags & MSG_DONTWAIT))


def _iovecs(h: "Host", msg: int) -> list[tuple[int, int]]:
    iov, iovlen = h.mem.unpack("<Ii", msg + 8)
    return [h.mem.unpack("<II", iov + 8 * i) for i in range(max(0, iovlen))]


@imp("__syscall_sendmsg")
@syscall
def sys_sendmsg(h: "Host", fd, msg, flags, *_):
    s = _sock(h, fd)
    data = b"".join(h.mem.read(p, n) for p, n in _iovecs(h, msg) if n)
    return blocking_io(h, s, s.write, data, POLLOUT, bool(flags & MSG_DONTWAIT))


@imp("__syscall_recvmsg")
@syscall
def sys_recvmsg(h: "Host", fd, msg, flags, *_):
    s = _sock(h, fd)
    vecs = _iovecs(h, msg)
    total = sum(n for _, n in vecs)
    data = blocking_io(h, s, lambda n: s.read(n, flags & MSG_PEEK), total, POLLIN,
                       bool(flags & MSG_DONTWAIT))
    off = 0
    for p, n in vecs:
        if off >= len(data):
            break
        chunk = data[off:off + n]
        h.mem.write(p, chunk)
        off += len(chunk)
    name, = h.mem.unpack("<I", msg)
    if name:
        try:
            write_sockaddr(h, name, msg + 4, s.sock.getpeername())
        except OSError:
            h.mem.set_u32(msg + 4, 0)
    h.mem.set_u32(msg + 20, 0)  # no control data
    h.mem.set_i32(msg + 24, 0)
    return len(data)


@imp("__syscall_getsockopt")
@syscall
def sys_getsockopt(h: "Host", fd, level, optname, optval, poptlen, *_):
    s = _sock(h, fd)
    if (level, optname) == (1, 4):  # SOL_SOCKET, SO_ERROR
        err = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        v = HOST_TO_WASI.get(err, W["EIO"]) if err else 0
    elif (level, optname) == (1, 3):  # SO_TYPE
        v = SOCK_STREAM
    elif (level, optname) in INT_OPTIONS:
        v = s.sock.getsockopt(level, optname)
    else:
        raise FSError(W["ENOPROTOOPT"])
    if h.mem.u32(poptlen) < 4:
        raise FSError(W["EINVAL"])
    h.mem.set_i32(optval, v)
    h.mem.set_u32(poptlen, 4)


@imp("__syscall_setsockopt")
@syscall
def sys_setsockopt(h: "Host", fd, level, optname, optval, optlen, *_):
    s = _sock(h, fd)
    if (level, optname) in INT_OPTIONS and optlen >= 4 and (level, optname) != (1, 3):
        s.sock.setsockopt(level, optname, h.mem.i32(optval))
        return 0
    raise FSError(W["ENOPROTOOPT"])


@imp("__syscall_getpeername")
@syscall
def sys_getpeername(h: "Host", fd, addr, paddrlen, *_):
    s = _sock(h, fd)
    try:
        peer = s.sock.getpeername()
    except OSError:
        raise FSError(W["ENOTCONN"]) from None
    write_sockaddr(h, addr, paddrlen, peer)


@imp("__syscall_getsockname")
@syscall
def sys_getsockname(h: "Host", fd, addr, paddrlen, *_):
    s = _sock(h, fd)
    write_sockaddr(h, addr, paddrlen, s.sock.getsockname())


@imp("__syscall_bind", "__syscall_listen", "__syscall_accept4")
@syscall
def sys_no_server(h: "Host", fd, *_):
    _sock(h, fd)
    raise FSError(W["EPERM"], "listening sockets are not available in the sandbox")


@imp("__syscall_socketpair", "__syscall_pipe", "__syscall__newselect")
@syscall
def sys_unsupported(h: "Host", *_):
    raise FSError(W["ENOSYS"])


@imp("_try_shutdown")
def try_shutdown(h: "Host", fd, how, presult):
    """Pyodide's hook in its ``__syscall_shutdown`` wrapper: 1 = handled (result written)."""
    of = h.fds.get(fd)
    if not isinstance(of, HostSocket):
        return 0
    try:
        of.sock.shutdown(how)
        r = 0
    except OSError as e:
        r = -wasi_errno(e)
    h.mem.set_i32(presult, r)
    return 1


def ioctl(h: "Host", s: HostSocket, op: int, argp: int) -> int:
    """``FIONBIO`` (set/clear the guest's non-blocking mode) and ``FIONREAD``."""
    if op == FIONBIO:
        if h.mem.i32(argp):
            s.flags |= O_NONBLOCK
        else:
            s.flags &= ~O_NONBLOCK
        return 0
    if op == FIONREAD:
        try:
            n = len(s.sock.recv(1 << 16, socket.MSG_PEEK))
        except (BlockingIOError, OSError):
            n = 0
        h.mem.set_i32(argp, n)
        return 0
    raise FSError(W["ENOTTY"])


def net_error(h: "Host") -> bytes:
    """Contents of ``/dev/pyworkers/net-error``: the last refused connect's text."""
    return state(h).last_error.encode()


def open_sockets(h: "Host") -> list[HostSocket]:
    """The isolate's open sockets (for snapshot errors and diagnostics)."""
    return sorted(state(h).open, key=lambda s: s.destination or "")
