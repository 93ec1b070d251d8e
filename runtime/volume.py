"""Persistent volumes: a writable host directory mounted in an isolate's
:class:`~pyworkers.runtime.vfs.VFS` (``[[volumes]] mount = "/data"``), shared by every isolate
and process that mounts it, with POSIX advisory record locks.

Nodes (:class:`VolDir`, :class:`VolFile`) name host paths under the volume root; the guest's
path resolution stays lexical (``..`` never leaves the tree) and a host symlink, device, FIFO
or socket inside the volume is treated as absent, so no guest path reaches outside the root.
File data goes straight to the host file (``pread``/``pwrite`` on a host fd opened with the
guest's access mode), so other isolates and processes see writes at once.

Size cap: :class:`Quota` counts the bytes of regular files under the root (measured when first
mounted in the process, then kept up to date by this process's writes, truncates and unlinks);
a write that would pass ``max_size`` fails with ``ENOSPC``. Other processes' writes are
counted at the next mount of a fresh process only.

Locks (``fcntl`` ``F_GETLK``/``F_SETLK``/``F_SETLKW``): POSIX record locks belong to a process,
and every isolate of a server runs in one host process, so the host's plain POSIX locks would
never make two isolates conflict. Each isolate is therefore its own lock owner: for each file it
locks, it opens one host *lock descriptor* and sets Linux open-file-description locks
(``F_OFD_SETLK``, https://man7.org/linux/man-pages/man2/fcntl.2.html, "Open file description
locks") on it. Locks of one owner merge and split like POSIX locks of one process, and conflict
with every other isolate's and process's, which is what SQLite's ``unix`` VFS expects
(https://www.sqlite.org/lockingv3.html). As with POSIX locks, closing any guest descriptor of a
file releases the isolate's locks on it; all are released when the isolate closes.
"""
from __future__ import annotations

import errno as _errno
import fcntl
import os
import stat as st
import struct
import threading

from pyworkers.runtime import vfs as V

#: the guest's ``struct flock`` (Emscripten/musl wasm32): l_type, l_whence, l_start, l_len, l_pid
GUEST_FLOCK = struct.Struct("<hh4xqqi4x")
#: the host's ``struct flock`` (Linux, 64-bit ``off_t``)
HOST_FLOCK = struct.Struct("@hhqqi4x")
#: musl's l_type values
G_RDLCK, G_WRLCK, G_UNLCK = 0, 1, 2
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
F_OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", 38)
#: WASI errno values used here
EAGAIN, EDEADLK, ENOLCK, EINTR = 6, 16, 46, 27

_to_host_type = {G_RDLCK: fcntl.F_RDLCK, G_WRLCK: fcntl.F_WRLCK, G_UNLCK: fcntl.F_UNLCK}
_to_guest_type = {v: k for k, v in _to_host_type.items()}


class Quota:
    """Bytes used under one volume root in this process (see the module docstring)."""

    def __init__(self, root: str, cap: int | None):
        self.root, self.cap = root, cap
        self.lock = threading.Lock()
        self.used = 0
        for d, _, files in os.walk(root):
            for f in files:
                try:
                    s = os.lstat(os.path.join(d, f))
                except OSError:
                    continue
                if st.S_ISREG(s.st_mode):
                    self.used += s.st_size

    def grow(self, delta: int) -> None:
        with self.lock:
            if delta > 0 and self.cap is not None and self.used + delta > self.cap:
                raise V.FSError(V.ENOSPC, f"volume {self.root} is full (max_size {self.cap} bytes)")
            self.used = max(0, self.used + delta)


_quotas: dict[str, Quota] = {}
_quotas_lock = threading.Lock()


def quota_for(root: str, cap: int | None) -> Quota:
    with _quotas_lock:
        q = _quotas.get(root)
        if q is None:
            q = _quotas[root] = Quota(root, cap)
        q.cap = cap
        return q


def _node_for(path: str, quota: Quota) -> V.Node | None:
    try:
        s = os.lstat(path)
    except OSError:
        return None
    if st.S_ISDIR(s.st_mode):
        return VolDir(path, quota)
    if st.S_ISREG(s.st_mode):
        return VolFile(path, quota)
    return None  # symlinks, devices, FIFOs, sockets: absent


class VolDir(V.Node):
    """A writable directory of a volume (host path ``path``); nothing is cached: other
    isolates and processes change it."""

    is_dir = True
    writable = True

    def __init__(self, path: str, quota: Quota):
        super().__init__()
        self.path, self.quota = path, quota

    def lookup(self, name: str) -> V.Node | None:
        if name in ("", ".", "..") or "/" in name:
            return None
        return _node_for(os.path.join(self.path, name), self.quota)

    def names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.path) if self.lookup(n) is not None)
        except OSError:
            return []

    def stat(self) -> dict:
        try:
            s = os.stat(self.path)
        except OSError as e:
            raise V.FSError(V._HOST_TO_WASI.get(e.errno, V.EIO)) from None
        return dict(mode=V.S_IFDIR | 0o777, size=4096, ino=s.st_ino, mtime=s.st_mtime, nlink=2)

    # the VFS's MemDir-style API for the operations that change a directory
    def create(self, name: str, exclusive: bool) -> "VolFile":
        p = os.path.join(self.path, name)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if exclusive else 0)
        fd = os.open(p, flags, 0o644)
        os.close(fd)
        return VolFile(p, self.quota)


class VolFile(V.Node):
    """A regular file of a volume."""

    writable = True

    def __init__(self, path: str, quota: Quota):
        super().__init__()
        self.path, self.quota = path, quota

    def size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def stat(self) -> dict:
        try:
            s = os.stat(self.path)
        except OSError as e:
            raise V.FSError(V._HOST_TO_WASI.get(e.errno, V.EIO)) from None
        # the host inode: SQLite identifies a database file by (dev, ino) across connections
        return dict(mode=V.S_IFREG | 0o666, size=s.st_size, ino=s.st_ino, mtime=s.st_mtime,
                    nlink=1)


def _host(e: OSError) -> V.FSError:
    return V.FSError(V._HOST_TO_WASI.get(e.errno, V.EIO), str(e))


def open_file(of: V.OpenFile, flags: int) -> None:
    """Open the host file behind ``of`` (a :class:`VolFile`) with the guest's access mode."""
    node: VolFile = of.node  # type: ignore[assignment]
    acc = flags & V.O_ACCMODE
    mode = {0: os.O_RDONLY, V.O_WRONLY: os.O_WRONLY, V.O_RDWR: os.O_RDWR}.get(acc, os.O_RDWR)
    try:
        if flags & V.O_TRUNC and acc:
            old = node.size()
            fd = os.open(node.path, mode | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
            node.quota.grow(-old)
        else:
            fd = os.open(node.path, mode | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise _host(e) from None
    of.host_fd = fd


def write(of: V.OpenFile, data: bytes, offset: int | None) -> int:
    node: VolFile = of.node  # type: ignore[assignment]
    fd = of.host_fd
    size = os.fstat(fd).st_size
    if offset is None and of.flags & V.O_APPEND:
        of.pos = size
    pos = of.pos if offset is None else offset
    end = pos + len(data)
    if end > size:
        node.quota.grow(end - size)
    try:
        n = os.pwrite(fd, data, pos)
    except OSError as e:
        node.quota.grow(-(end - size) if end > size else 0)
        raise _host(e) from None
    if offset is None:
        of.pos = pos + n
    return n


def truncate(node: VolFile, size: int) -> None:
    old = node.size()
    if size > old:
        node.quota.grow(size - old)
    try:
        os.truncate(node.path, size)
    except OSError as e:
        raise _host(e) from None
    if size < old:
        node.quota.grow(size - old)


def mkdir(parent: VolDir, name: str) -> None:
    try:
        os.mkdir(os.path.join(parent.path, name), 0o755)
    except OSError as e:
        raise _host(e) from None


def unlink(parent: VolDir, name: str, node: V.Node, rmdir: bool) -> None:
    p = os.path.join(parent.path, name)
    try:
        if rmdir:
            os.rmdir(p)
        else:
            size = node.size() if isinstance(node, VolFile) else 0
            os.unlink(p)
            parent.quota.grow(-size)
    except OSError as e:
        raise _host(e) from None


def rename(op: VolDir, oname: str, np_: VolDir, nname: str) -> None:
    if op.quota is not np_.quota:
        raise V.FSError(V.EXDEV)
    dest = os.path.join(np_.path, nname)
    try:
        old = os.lstat(dest).st_size if os.path.isfile(dest) else 0
        os.rename(os.path.join(op.path, oname), dest)
    except OSError as e:
        raise _host(e) from None
    op.quota.grow(-old)


# ---------------------------------------------------------------------------- locks
class LockTable:
    """One isolate's record locks on volume files: a host lock descriptor per file (by host
    ``(st_dev, st_ino)``), see the module docstring."""

    def __init__(self) -> None:
        self.fds: dict[tuple[int, int], int] = {}

    def _key(self, of: V.OpenFile) -> tuple[int, int]:
        s = os.fstat(of.host_fd)  # type: ignore[arg-type]
        return s.st_dev, s.st_ino

    def _lock_fd(self, of: V.OpenFile) -> int:
        key = self._key(of)
        fd = self.fds.get(key)
        if fd is None:
            fd = self.fds[key] = os.open(of.node.path, os.O_RDWR | os.O_CLOEXEC)  # type: ignore[attr-defined]
        return fd

    def fcntl(self, of: V.OpenFile, cmd: int, guest_flock: bytes) -> bytes | None:
        """``F_GETLK`` (12) / ``F_SETLK`` (13) / ``F_SETLKW`` (14) for ``of``'s file with the
        guest's ``struct flock``; returns the updated struct for ``F_GETLK``. Raises
        :class:`FSError` (``EAGAIN`` on a conflict, like Linux)."""
        ltype, whence, start, length, _ = GUEST_FLOCK.unpack(guest_flock)
        if ltype not in _to_host_type:
            raise V.FSError(V.EINVAL)
        if whence == 1:
            start += of.pos
        elif whence == 2:
            start += os.fstat(of.host_fd).st_size  # type: ignore[arg-type]
        elif whence != 0:
            raise V.FSError(V.EINVAL)
        if start < 0:
            raise V.FSError(V.EINVAL)
        if ltype == G_UNLCK and self._key(of) not in self.fds:
            return None  # nothing locked on it
        host = HOST_FLOCK.pack(_to_host_type[ltype], 0, start, length, 0)
        fd = self._lock_fd(of)
        op = {12: F_OFD_GETLK, 13: F_OFD_SETLK, 14: F_OFD_SETLKW}[cmd]
        try:
            res = fcntl.fcntl(fd, op, host)
        except OSError as e:
            if e.errno in (_errno.EAGAIN, _errno.EACCES):
                raise V.FSError(EAGAIN) from None
            if e.errno == _errno.EDEADLK:
                raise V.FSError(EDEADLK) from None
            if e.errno == _errno.EINTR:
                raise V.FSError(EINTR) from None
            raise V.FSError(ENOLCK, str(e)) from None
        if cmd != 12:
            return None
        htype, hwhence, hstart, hlen, _ = HOST_FLOCK.unpack(res)
        return GUEST_FLOCK.pack(_to_guest_type.get(htype, G_UNLCK), hwhence, hstart, hlen, -1)

    def file_closed(self, of: V.OpenFile) -> None:
        """A guest descriptor of the file closed: drop the isolate's locks on it (POSIX)."""
        try:
            key = self._key(of)
        except OSError:
            return
        fd = self.fds.pop(key, None)
        if fd is not None:
            os.close(fd)

    def release_all(self) -> None:
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def mount(vfs: V.VFS, guest: str, host: str | os.PathLike, max_size: int | None = None) -> None:
    """Mount host directory ``host`` (created if missing) writable at guest path ``guest``
    of ``vfs``, capped at ``max_size`` bytes (``None``: no cap)."""
    real = os.path.realpath(os.fspath(host))
    os.makedirs(real, exist_ok=True)
    parent, _, name = guest.rstrip("/").rpartition("/")
    pdir = vfs._mkdir_p(parent or "/")
    pdir.children[name] = VolDir(real, quota_for(real, max_size))
    if not hasattr(vfs, "locks"):
        vfs.locks = LockTable()  # type: ignore[attr-defined]
