"""The sandboxed file system an isolate sees.

The guest namespace is a tree the host builds; nothing outside it is reachable:

- in-memory directories (the skeleton: ``/``, ``/lib``, ``/home``, ``/dev``, ...), read-only;
- read-only *layers* mapped from host paths the caller gave (the stdlib zip as one file, a
  site-packages directory, the app's files). A host symlink that resolves outside its layer, a
  device, a FIFO or a socket is treated as absent (``ENOENT``); the host never opens a path that
  is not under a layer root it was given;
- a per-isolate writable in-memory ``/tmp`` with a byte cap (``ENOSPC`` past it).

Paths are resolved lexically inside the guest tree: ``..`` at ``/`` stays at ``/``, so no guest
path names a host path outside the layers. Errors are raised as :class:`FSError` carrying a WASI
errno (Emscripten uses WASI errno numbers).
"""
from __future__ import annotations

import errno as _errno
import itertools
import os
import stat as st
import time
from pathlib import Path

# WASI errno values (wasi-libc / Emscripten), not the host's.
ESUCCESS, E2BIG, EACCES, EBADF, EEXIST, EFAULT, EINVAL, EIO, EISDIR, EMFILE, ENAMETOOLONG = \
    0, 1, 2, 8, 20, 21, 28, 29, 31, 33, 37
ENOENT, ENOSPC, ENOSYS, ENOTDIR, ENOTEMPTY, ENOTTY, EPERM, EROFS, ESPIPE, ELOOP, EXDEV, ENOTSUP = \
    44, 51, 52, 54, 55, 59, 63, 69, 70, 32, 75, 58
ENODEV, ENOTSOCK, EAFNOSUPPORT = 43, 57, 5

_HOST_TO_WASI = {
    _errno.ENOENT: ENOENT, _errno.EACCES: EACCES, _errno.ENOTDIR: ENOTDIR, _errno.EISDIR: EISDIR,
    _errno.EEXIST: EEXIST, _errno.ENAMETOOLONG: ENAMETOOLONG, _errno.ELOOP: ELOOP,
    _errno.EPERM: EPERM, _errno.EINVAL: EINVAL,
}

# open flags (Emscripten/musl values)
O_ACCMODE, O_WRONLY, O_RDWR = 3, 1, 2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_DIRECTORY, O_NOFOLLOW = 0o100, 0o200, 0o1000, 0o2000, 0o200000, 0o400000

S_IFDIR, S_IFREG, S_IFCHR = 0o040000, 0o100000, 0o020000


class FSError(Exception):
    """A file-system error with a WASI ``errno``."""

    def __init__(self, errno: int, msg: str = ""):
        super().__init__(errno, msg)
        self.errno = errno


_inode_counter = itertools.count(2)


class Node:
    """A file-system node. ``writable`` nodes live in the writable ``/tmp`` layer."""

    is_dir = False
    writable = False

    def __init__(self) -> None:
        self.ino = next(_inode_counter)
        self.mtime = time.time()

    def stat(self) -> dict:
        raise NotImplementedError


class MemDir(Node):
    """An in-memory directory; ``fs`` is set for directories of the writable layer."""

    is_dir = True

    def __init__(self, writable: bool = False, fs: "TmpFS | None" = None):
        super().__init__()
        self.children: dict[str, Node] = {}
        self.writable = writable
        self.fs = fs

    def lookup(self, name: str) -> Node | None:
        return self.children.get(name)

    def names(self) -> list[str]:
        return list(self.children)

    def stat(self) -> dict:
        return dict(mode=S_IFDIR | (0o777 if self.writable else 0o555), size=4096, ino=self.ino,
                    mtime=self.mtime, nlink=2)


class MemFile(Node):
    """An in-memory file (writable layer) or a fixed in-memory blob."""

    def __init__(self, data: bytes = b"", writable: bool = False, fs: "TmpFS | None" = None):
        super().__init__()
        self.data = bytearray(data)
        self.writable = writable
        self.fs = fs

    def size(self) -> int:
        return len(self.data)

    def stat(self) -> dict:
        return dict(mode=S_IFREG | (0o666 if self.writable else 0o444), size=len(self.data),
                    ino=self.ino, mtime=self.mtime, nlink=1)


class DevNull(Node):
    def stat(self) -> dict:
        return dict(mode=S_IFCHR | 0o666, size=0, ino=self.ino, mtime=self.mtime, nlink=1, rdev=0x103)


class DynamicFile(Node):
    """A read-only file whose content is produced by the host when it is opened."""

    def __init__(self, produce):
        super().__init__()
        self.produce = produce

    def size(self) -> int:
        return len(self.produce())

    def stat(self) -> dict:
        return dict(mode=S_IFREG | 0o444, size=0, ino=self.ino, mtime=self.mtime, nlink=1)


class ServiceFile(Node):
    """A host service reached through a file: per open file, the guest writes one request (any
    number of writes), then reads the reply, which ``handle(request: bytes) -> bytes`` computes
    at the first read. Writing again after a read starts a new request."""

    writable = True

    def __init__(self, handle):
        super().__init__()
        self.handle = handle

    def size(self) -> int:
        return 0

    def stat(self) -> dict:
        return dict(mode=S_IFCHR | 0o666, size=0, ino=self.ino, mtime=self.mtime, nlink=1, rdev=0x104)


class HostFile(Node):
    """A read-only file of a layer; ``path`` was checked to lie inside the layer root."""

    def __init__(self, path: str, hst: os.stat_result):
        super().__init__()
        self.path = path
        self._st = hst

    def size(self) -> int:
        return self._st.st_size

    def stat(self) -> dict:
        return dict(mode=S_IFREG | 0o444, size=self._st.st_size, ino=self.ino,
                    mtime=self._st.st_mtime, nlink=1)


class HostDir(Node):
    """A read-only directory of a layer rooted at host path ``root``."""

    is_dir = True

    def __init__(self, path: str, root: str):
        super().__init__()
        self.path = path
        self.root = root
        self._children: dict[str, Node | None] = {}
        self._names: list[str] | None = None

    def _inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root + os.sep)

    def lookup(self, name: str) -> Node | None:
        if name in self._children:
            return self._children[name]
        node = None
        p = os.path.join(self.path, name)
        try:
            lst = os.lstat(p)
            if st.S_ISLNK(lst.st_mode):
                real = os.path.realpath(p)
                if not self._inside(real):
                    lst = None  # points out of the layer: absent
                else:
                    p, lst = real, os.stat(real)
            if lst is not None:
                if st.S_ISDIR(lst.st_mode):
                    node = HostDir(p, self.root)
                elif st.S_ISREG(lst.st_mode):
                    node = HostFile(p, lst)
        except OSError:
            node = None
        self._children[name] = node
        return node

    def names(self) -> list[str]:
        if self._names is None:
            try:
                self._names = sorted(n for n in os.listdir(self.path) if self.lookup(n) is not None)
            except OSError:
                self._names = []
        return list(self._names)

    def stat(self) -> dict:
        return dict(mode=S_IFDIR | 0o555, size=4096, ino=self.ino, mtime=self.mtime, nlink=2)


class TmpFS:
    """Accounting for the writable layer: total bytes of file data, capped at ``cap`` bytes."""

    def __init__(self, cap: int):
        self.cap = cap
        self.used = 0

    def resize(self, f: MemFile, new_size: int) -> None:
        delta = new_size - len(f.data)
        if delta > 0 and self.used + delta > self.cap:
            raise FSError(ENOSPC, "writable /tmp is full")
        self.used += delta
        if delta > 0:
            f.data.extend(b"\0" * delta)
        else:
            del f.data[new_size:]


class OpenFile:
    """An open file description: node, flags, position and, for directories, the entry list."""

    __slots__ = ("node", "flags", "pos", "path", "host_fd", "entries", "refs")

    def __init__(self, node: Node, flags: int, path: str):
        self.node = node
        self.flags = flags
        self.pos = 0
        self.path = path
        self.host_fd: int | None = None
        self.entries: list[tuple[str, Node]] | None = None
        self.refs = 1

    def readable(self) -> bool:
        return (self.flags & O_ACCMODE) != O_WRONLY

    def writable(self) -> bool:
        return (self.flags & O_ACCMODE) in (O_WRONLY, O_RDWR)


class VFS:
    """The isolate's file system: a guest tree of in-memory nodes, host layers and ``/tmp``.

    ``layers`` maps absolute guest paths to host paths (files or directories), all read-only.
    ``tmp_cap`` bounds the writable ``/tmp`` (bytes). Methods take guest paths (``str``) and
    raise :class:`FSError` with a WASI errno.
    """

    def __init__(self, layers: dict[str, str | os.PathLike], tmp_cap: int = 64 << 20,
                 home: str = "/home/pyodide"):
        self.root = MemDir()
        self.tmpfs = TmpFS(tmp_cap)
        self.cwd = "/"
        for d in ("/lib", "/home", home, "/dev"):
            self._mkdir_p(d)
        self._mkdir_p("/dev").children["null"] = DevNull()
        tmp = MemDir(writable=True, fs=self.tmpfs)
        self.root.children["tmp"] = tmp
        for guest, host in sorted(layers.items()):
            self.mount(guest, host)

    # -- construction
    def _mkdir_p(self, path: str) -> MemDir:
        node = self.root
        for part in [p for p in path.split("/") if p]:
            nxt = node.children.get(part) if isinstance(node, MemDir) else None
            if nxt is None:
                nxt = MemDir()
                node.children[part] = nxt
            if not isinstance(nxt, MemDir):
                raise ValueError(f"cannot mount below {path}: {part} is not an in-memory directory")
            node = nxt
        return node

    def add_dynamic(self, guest: str, produce) -> None:
        """A read-only file at ``guest`` whose bytes are ``produce()`` at each open."""
        parent, _, name = guest.rpartition("/")
        self._mkdir_p(parent).children[name] = DynamicFile(produce)

    def add_service(self, guest: str, handle) -> None:
        """A :class:`ServiceFile` at ``guest``: write a request, read ``handle(request)``."""
        parent, _, name = guest.rpartition("/")
        self._mkdir_p(parent).children[name] = ServiceFile(handle)

    def mount(self, guest: str, host: str | os.PathLike) -> None:
        """Map host file or directory ``host`` read-only at guest path ``guest``."""
        real = os.path.realpath(os.fspath(host))
        parent, _, name = guest.rstrip("/").rpartition("/")
        pdir = self._mkdir_p(parent or "/")
        hst = os.stat(real)
        if st.S_ISDIR(hst.st_mode):
            pdir.children[name] = HostDir(real, real)
        elif st.S_ISREG(hst.st_mode):
            pdir.children[name] = HostFile(real, hst)
        else:
            raise ValueError(f"layer {host} is neither a file nor a directory")

    #: ``(guest path) -> None`` called when a write under a read-only layer is refused (the
    #: server logs a hint: /tmp or a volume)
    on_read_only = None

    def _refused(self, apath: str) -> None:
        cb = self.on_read_only
        if cb is not None and not apath.startswith("/dev/"):
            try:
                cb(apath)
            except Exception:  # noqa: BLE001 - a hint only
                pass

    def mount_volume(self, guest: str, host: str | os.PathLike, max_size: int | None = None) -> None:
        """Mount host directory ``host`` writable at ``guest`` (:mod:`pyworkers.runtime.volume`:
        shared with other isolates and processes, record locks, ``max_size`` bytes)."""
        _vol.mount(self, guest, host, max_size)

    # -- path resolution
    def abspath(self, path: str) -> str:
        if not path.startswith("/"):
            path = self.cwd.rstrip("/") + "/" + path
        parts: list[str] = []
        for p in path.split("/"):
            if p in ("", "."):
                continue
            if p == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(p)
        return "/" + "/".join(parts)

    def lookup(self, path: str) -> Node:
        """The node at ``path`` (``ENOENT``/``ENOTDIR``)."""
        apath = self.abspath(path)
        node: Node = self.root
        for part in apath.split("/"):
            if not part:
                continue
            if not node.is_dir:
                raise FSError(ENOTDIR, apath)
            nxt = node.lookup(part)  # type: ignore[attr-defined]
            if nxt is None:
                raise FSError(ENOENT, apath)
            node = nxt
        return node

    def lookup_parent(self, path: str) -> tuple[Node, str, str]:
        apath = self.abspath(path)
        if apath == "/":
            raise FSError(EBUSY_ROOT, apath)
        parent, _, name = apath.rpartition("/")
        return self.lookup(parent or "/"), name, apath

    # -- operations
    def open(self, path: str, flags: int, mode: int = 0o666) -> OpenFile:
        apath = self.abspath(path)
        try:
            node = self.lookup(apath)
            if flags & O_CREAT and flags & O_EXCL:
                raise FSError(EEXIST, apath)
        except FSError as e:
            if e.errno != ENOENT or not flags & O_CREAT:
                raise
            parent, name, _ = self.lookup_parent(apath)
            if not parent.is_dir:
                raise FSError(ENOTDIR, apath)
            if not parent.writable:
                self._refused(apath)
                raise FSError(EROFS if not isinstance(parent, MemDir) or parent is not self.root else EACCES, apath)
            if isinstance(parent, _vol.VolDir):
                try:
                    node = parent.create(name, bool(flags & O_EXCL))
                except OSError as e:
                    raise FSError(_HOST_TO_WASI.get(e.errno, EIO), apath) from None
            else:
                node = MemFile(writable=True, fs=self.tmpfs)
                parent.children[name] = node  # type: ignore[union-attr]
        if node.is_dir:
            if (flags & O_ACCMODE) != 0:
                raise FSError(EISDIR, apath)
        elif flags & O_DIRECTORY:
            raise FSError(ENOTDIR, apath)
        if (flags & O_ACCMODE) != 0 and not node.writable and not isinstance(node, DevNull):
            if isinstance(node, (HostFile, HostDir)):
                self._refused(apath)
            raise FSError(EROFS if isinstance(node, (HostFile, HostDir)) else EACCES, apath)
        of = OpenFile(node, flags, apath)
        if isinstance(node, _vol.VolFile):
            _vol.open_file(of, flags)
            return of
        if isinstance(node, MemFile) and flags & O_TRUNC and node.writable:
            node.fs.resize(node, 0)  # type: ignore[union-attr]
        if isinstance(node, HostFile):
            try:
                of.host_fd = os.open(node.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as e:
                raise FSError(_HOST_TO_WASI.get(e.errno, EIO), apath)
        elif isinstance(node, DynamicFile):
            of.entries = [("", MemFile(node.produce()))]  # content fixed at open
        elif isinstance(node, ServiceFile):
            of.entries = [("request", MemFile())]
        return of

    def close(self, of: OpenFile) -> None:
        of.refs -= 1
        if of.refs <= 0 and of.host_fd is not None:
            if isinstance(of.node, _vol.VolFile) and getattr(self, "locks", None) is not None:
                self.locks.file_closed(of)  # POSIX: closing a file drops the owner's locks
            os.close(of.host_fd)
            of.host_fd = None

    def read(self, of: OpenFile, n: int, offset: int | None = None) -> bytes:
        if not of.readable():
            raise FSError(EBADF)
        node = of.node
        pos = of.pos if offset is None else offset
        if node.is_dir:
            raise FSError(EISDIR)
        if isinstance(node, (HostFile, _vol.VolFile)):
            data = os.pread(of.host_fd, n, pos)  # type: ignore[arg-type]
        elif isinstance(node, DynamicFile):
            data = bytes(of.entries[0][1].data[pos:pos + n])  # type: ignore[index,union-attr]
        elif isinstance(node, ServiceFile):
            kind, buf = of.entries[0]  # type: ignore[index]
            if kind == "request":
                of.entries = [("reply", MemFile(node.handle(bytes(buf.data))))]  # type: ignore[union-attr]
                of.pos = pos = 0
            data = bytes(of.entries[0][1].data[pos:pos + n])  # type: ignore[index,union-attr]
        elif isinstance(node, MemFile):
            data = bytes(node.data[pos:pos + n])
        else:
            data = b""
        if offset is None:
            of.pos += len(data)
        return data

    def write(self, of: OpenFile, data: bytes, offset: int | None = None) -> int:
        if not of.writable():
            raise FSError(EBADF)
        node = of.node
        if isinstance(node, DevNull):
            return len(data)
        if isinstance(node, ServiceFile):
            if of.entries[0][0] != "request":  # type: ignore[index]
                of.entries = [("request", MemFile())]
            of.entries[0][1].data += data  # type: ignore[index,union-attr]
            return len(data)
        if isinstance(node, _vol.VolFile):
            return _vol.write(of, data, offset)
        if not isinstance(node, MemFile) or not node.writable:
            raise FSError(EROFS)
        if offset is None and of.flags & O_APPEND:
            of.pos = len(node.data)
        pos = of.pos if offset is None else offset
        end = pos + len(data)
        if end > len(node.data):
            node.fs.resize(node, end)  # type: ignore[union-attr]
        node.data[pos:end] = data
        node.mtime = time.time()
        if offset is None:
            of.pos = end
        return len(data)

    def size_of(self, node: Node) -> int:
        return node.size() if hasattr(node, "size") else 0  # type: ignore[attr-defined]

    def readdir(self, of: OpenFile) -> list[tuple[str, Node]]:
        if of.entries is None:
            node = of.node
            if not node.is_dir:
                raise FSError(ENOTDIR)
            entries: list[tuple[str, Node]] = [(".", node)]
            try:
                parent = self.lookup(of.path.rpartition("/")[0] or "/")
            except FSError:
                parent = node
            entries.append(("..", parent))
            for name in node.names():  # type: ignore[attr-defined]
                child = node.lookup(name)  # type: ignore[attr-defined]
                if child is not None:
                    entries.append((name, child))
            of.entries = entries
        return of.entries

    def mkdir(self, path: str) -> None:
        parent, name, apath = self.lookup_parent(path)
        if not parent.is_dir:
            raise FSError(ENOTDIR, apath)
        if parent.lookup(name) is not None:  # type: ignore[attr-defined]
            raise FSError(EEXIST, apath)
        if not parent.writable:
            self._refused(apath)
            raise FSError(EROFS, apath)
        if isinstance(parent, _vol.VolDir):
            _vol.mkdir(parent, name)
            return
        parent.children[name] = MemDir(writable=True, fs=self.tmpfs)  # type: ignore[union-attr]

    def unlink(self, path: str, rmdir: bool = False) -> None:
        parent, name, apath = self.lookup_parent(path)
        node = parent.lookup(name) if parent.is_dir else None  # type: ignore[attr-defined]
        if node is None:
            raise FSError(ENOENT, apath)
        if not parent.writable:
            raise FSError(EROFS, apath)
        if rmdir:
            if not node.is_dir:
                raise FSError(ENOTDIR, apath)
            if not isinstance(node, _vol.VolDir) and node.children:  # type: ignore[attr-defined]
                raise FSError(ENOTEMPTY, apath)
        elif node.is_dir:
            raise FSError(EISDIR, apath)
        if isinstance(parent, _vol.VolDir):
            _vol.unlink(parent, name, node, rmdir)
            return
        if isinstance(node, MemFile):
            self.tmpfs.used -= len(node.data)
        del parent.children[name]  # type: ignore[union-attr]

    def rename(self, old: str, new: str) -> None:
        op, oname, oapath = self.lookup_parent(old)
        np_, nname, napath = self.lookup_parent(new)
        node = op.lookup(oname) if op.is_dir else None  # type: ignore[attr-defined]
        if node is None:
            raise FSError(ENOENT, oapath)
        if not (op.writable and np_.writable):
            raise FSError(EROFS if not op.writable else EXDEV, napath)
        if isinstance(op, _vol.VolDir) or isinstance(np_, _vol.VolDir):
            if not (isinstance(op, _vol.VolDir) and isinstance(np_, _vol.VolDir)):
                raise FSError(EXDEV, napath)
            _vol.rename(op, oname, np_, nname)
            return
        existing = np_.lookup(nname)  # type: ignore[attr-defined]
        if isinstance(existing, MemFile):
            self.tmpfs.used -= len(existing.data)
        np_.children[nname] = node  # type: ignore[union-attr]
        del op.children[oname]  # type: ignore[union-attr]

    def truncate(self, node: Node, size: int) -> None:
        if isinstance(node, _vol.VolFile):
            _vol.truncate(node, size)
            return
        if not isinstance(node, MemFile) or not node.writable:
            raise FSError(EROFS)
        node.fs.resize(node, size)  # type: ignore[union-attr]


EBUSY_ROOT = 10  # EBUSY

from pyworkers.runtime import volume as _vol  # noqa: E402  (volume nodes subclass Node)
