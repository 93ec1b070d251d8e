"""DNS for the guest: libc's ``getaddrinfo``/``getnameinfo`` and Emscripten's
``_emscripten_lookup_name`` (``gethostbyname``) answered by the host's resolver.

Layouts follow Emscripten's ``libsockfs.js``/``libsyscall.js``: ``struct addrinfo`` is 32 bytes
(flags, family, socktype, protocol, addrlen, addr*, canonname*, next*); errors are musl's
``EAI_*`` numbers (negative). Names the guest resolves are remembered per isolate
(:meth:`pyworkers.runtime.net.NetState.remember`) so egress rules written as host names match
the addresses they resolved to. Names are resolved in a helper thread while the isolate waits
on its waker, so the request deadline and ``Isolate.interrupt()`` stop a slow lookup (the
helper thread finishes it on its own); address literals resolve inline.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

from pyworkers.runtime.host import imp
from pyworkers.runtime.net import AF_INET, AF_INET6, SOCK_DGRAM, SOCK_STREAM, read_sockaddr, \
    state, write_sockaddr
from pyworkers.runtime.vfs import FSError

if TYPE_CHECKING:
    from pyworkers.runtime.host import Host

EAI_BADFLAGS, EAI_NONAME, EAI_AGAIN, EAI_FAIL, EAI_FAMILY, EAI_SOCKTYPE, EAI_SERVICE = \
    -1, -2, -3, -4, -6, -7, -8
EAI_SYSTEM, EAI_OVERFLOW = -11, -12


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _literal(name: str | None) -> bool:
    if name is None:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def resolve(h: "Host", fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` (a host resolver call) in a helper thread; the isolate's thread waits in
    :meth:`Host.wait` (raises ``GuestInterrupted`` at the deadline or on interrupt)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pyworkers-dns")
    fut = _pool.submit(fn, *args)
    fut.add_done_callback(lambda _f: h.waker.wake())
    while not fut.done():
        h.wait(None)
    return fut.result()


def _gai_error(e: OSError) -> int:
    if isinstance(e, socket.gaierror) and isinstance(e.errno, int) and e.errno < 0:
        return e.errno
    return EAI_FAIL


@imp("getaddrinfo")
def getaddrinfo(h: "Host", node, service, hint, out):
    """libc ``getaddrinfo`` resolved by the host's resolver. The list is allocated the way
    Emscripten's ``freeaddrinfo`` frees it (it frees only ``p->ai_addr`` and ``p``): the first
    sockaddr alone, every other node and sockaddr inside the first node's block."""
    flags = family = type_ = proto = 0
    if hint:
        flags, family, type_, proto = h.mem.unpack("<iiii", hint)
    if family not in (0, AF_INET, AF_INET6):
        return EAI_FAMILY
    if type_ not in (0, SOCK_STREAM, SOCK_DGRAM):
        return EAI_SOCKTYPE
    name = h.mem.cstr(node) if node else None
    serv = h.mem.cstr(service) if service else None
    if name is None and serv is None:
        return EAI_NONAME
    # Pyodide's CPython is built without IPv6 (socket.has_ipv6 is False: it cannot even make
    # an AF_INET6 sockaddr), so an unspecified family resolves to IPv4 addresses only
    hfam = {0: socket.AF_INET, AF_INET: socket.AF_INET, AF_INET6: socket.AF_INET6}[family]
    try:
        args = (name, serv, hfam, type_, proto, flags & 0x43F)
        res = (socket.getaddrinfo(*args) if _literal(name) else
               resolve(h, socket.getaddrinfo, *args))
    except UnicodeError:
        return EAI_NONAME
    except OSError as e:
        return _gai_error(e)
    st = state(h)
    seen = set()
    items = []
    for fam, stype, sproto, _canon, sa in res:
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue
        key = (fam, stype, sproto, sa[:2])
        if key in seen:
            continue
        seen.add(key)
        items.append((AF_INET6 if fam == socket.AF_INET6 else AF_INET, int(stype), sproto, sa))
        if name:
            st.remember(name, sa[0])
    if not items:
        return EAI_NONAME
    iso = h.isolate
    salens = [28 if f == AF_INET6 else 16 for f, *_ in items]
    first_sa = iso.malloc(salens[0])
    block = iso.malloc(32 * len(items) + sum(salens[1:]))
    sa_ptrs = [first_sa]
    p = block + 32 * len(items)
    for ln in salens[1:]:
        sa_ptrs.append(p)
        p += ln
    for i, (fam, stype, sproto, sa) in enumerate(items):
        write_sockaddr(h, sa_ptrs[i], 0, sa)  # the full, zero-padded record
        ai = block + 32 * i
        nxt = block + 32 * (i + 1) if i + 1 < len(items) else 0
        h.mem.pack("<iiiiIIII", ai, flags, fam, stype, sproto, salens[i], sa_ptrs[i], 0, nxt)
    h.mem.set_u32(out, block)
    return 0


@imp("getnameinfo")
def getnameinfo(h: "Host", sa, salen, node, nodelen, serv, servlen, flags):
    try:
        _fam, ip, port = read_sockaddr(h, sa, salen)
    except FSError:
        return EAI_FAMILY
    try:
        if flags & socket.NI_NUMERICHOST:
            hname, hserv = socket.getnameinfo((ip, port), flags & 0x1F)
        else:
            hname, hserv = resolve(h, socket.getnameinfo, (ip, port), flags & 0x1F)
    except OSError as e:
        return _gai_error(e)
    if node and nodelen:
        if len(hname.encode()) + 1 > nodelen:
            return EAI_OVERFLOW
        h.mem.write_cstr(node, hname, nodelen)
    if serv and servlen:
        if len(hserv.encode()) + 1 > servlen:
            return EAI_OVERFLOW
        h.mem.write_cstr(serv, hserv, servlen)
    return 0


@imp("_emscripten_lookup_name")
def lookup_name(h: "Host", name):
    """``gethostbyname``'s resolver: the first IPv4 address (network byte order) or 0."""
    n = h.mem.cstr(name)
    try:
        ip = socket.gethostbyname(n) if _literal(n) else resolve(h, socket.gethostbyname, n)
    except (OSError, UnicodeError):
        return 0
    state(h).remember(n, ip)
    return struct.unpack("<I", socket.inet_aton(ip))[0]
