"""The nodes of the sandboxed file system (see :mod:`pyworkers.runtime.vfs` for the whole).

In-memory directories and files, ``/dev/null``, host-produced files, read-only layer files and
directories (checked against their layer root at lookup *and* at open), the writable layer's
accounting (:class:`TmpFS`: file data plus :data:`NODE_COST` per node, unlinked-but-open files
included) and open file descriptions. WASI errno values and Emscripten/musl open flags.
"""
from __future__ import annotations

import errno as _errno
import hashlib
import itertools
import os
import stat as st
import time

# WASI errno values (wasi-libc / Emscripten), not the host's.
ESUCCESS, E2BIG, EACCES, EBADF, EEXIST, EFAULT, EINVAL, EIO, EISDIR, EMFILE, ENAMETOOLONG = \
    0, 1, 2, 8, 20, 21, 28, 29, 31, 33, 37
ENOENT, ENOSPC, ENOSYS, ENOTDIR, ENOTEMPTY, ENOTTY, EPERM, EROFS, ESPIPE, ELOOP, EXDEV, ENOTSUP = \
    44, 51, 52, 54, 55, 59, 63, 69, 70, 32, 75, 58
ENODEV, ENOTSOCK, EAFNOSUPPORT, EFBIG = 43, 57, 5, 22

_HOST_TO_WASI = {
    _errno.ENOENT: ENOENT, _errno.EACCES: EACCES, _errno.ENOTDIR: ENOTDIR, _errno.EISDIR: EISDIR,
    _errno.EEXIST: EEXIST, _errno.ENAMETOOLONG: ENAMETOOLONG, _errno.ELOOP: ELOOP,
    _errno.EPERM: EPERM, _errno.EINVAL: EINVAL, _errno.ENOSPC: ENOSPC, _errno.EFBIG: EFBIG,
}

#: bytes of the ``/tmp`` cap charged per file or directory (the host's bookkeeping for a node)
NODE_COST = 1024
#: largest file size (bytes) before ``EFBIG`` (ext4's limit); the cap gives ``ENOSPC`` long before
MAX_FILE_SIZE = 1 << 44
#: longest file name (bytes) the writable layer accepts (``ENAMETOOLONG`` beyond)
NAME_MAX = 255
#: device numbers: the in-memory skeleton, ``/tmp``; layers get ``DEV_LAYER0 + i`` in mount order
DEV_MEM, DEV_TMP, DEV_LAYER0 = 1, 2, 3

# open flags (Emscripten/musl values)
O_ACCMODE, O_WRONLY, O_RDWR = 3, 1, 2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_DIRECTORY, O_NOFOLLOW = 0o100, 0o200, 0o1000, 0o2000, 0o200000, 0o400000

S_IFDIR, S_IFREG, S_IFCHR = 0o040000, 0o100000, 0o020000


class FSError(Exception):
    """A file-system error with a WASI ``errno``."""

    def __init__(self, errno: int, msg: str = ""):
        super().__init__(errno, msg)
        self.errno = errno


_inode_counter = itertools.count(1 << 40)  # nodes made without a file system's number


def path_ino(dev: int, path: str) -> int:
    """A stable inode number (< 2**48) for layer path ``path`` on device ``dev``: the same file
    gets the same number in every isolate and process (snapshots record numbers the guest saw)."""
    h = hashlib.blake2b(f"{dev}:{path}".encode("utf-8", "surrogateescape"), digest_size=6).digest()
    return int.from_bytes(h, "little") | 1


class Node:
    """A file-system node. ``writable`` nodes live in the writable ``/tmp`` layer.

    ``ino``/``dev`` are what ``stat`` reports; ``mode`` holds the permission bits (``chmod`` on
    ``/tmp`` nodes changes them)."""

    is_dir = False
    writable = False
    dev = DEV_MEM
    perm = 0o444

    def __init__(self, ino: int | None = None) -> None:
        self.ino = next(_inode_counter) if ino is None else ino
        self.mtime = time.time()
        self.mode = self.perm

    def stat(self) -> dict:
        raise NotImplementedError


class MemDir(Node):
    """An in-memory directory; ``fs`` is set for directories of the writable layer."""

    is_dir = True

    def __init__(self, writable: bool = False, fs: "TmpFS | None" = None, ino: int | None = None):
        super().__init__(ino)
        self.children: dict[str, Node] = {}
        self.writable = writable
        self.fs = fs
        self.mode = 0o777 if writable else 0o555
        if fs is not None:
            self.dev = fs.dev

    def lookup(self, name: str) -> Node | None:
        return self.children.get(name)

    def names(self) -> list[str]:
        return list(self.children)

    def stat(self) -> dict:
        return dict(mode=S_IFDIR | self.mode, size=4096, ino=self.ino, dev=self.dev,
                    mtime=self.mtime, nlink=2)


class MemFile(Node):
    """An in-memory file (writable layer) or a fixed in-memory blob.

    ``nlink`` is 0 once the file is unlinked (or replaced by a rename); ``opens`` counts open
    file descriptions. A writable file's bytes stay charged to its :class:`TmpFS` until both
    are 0."""

    def __init__(self, data: bytes = b"", writable: bool = False, fs: "TmpFS | None" = None,
                 ino: int | None = None):
        super().__init__(ino)
        self.data = bytearray(data)
        self.writable = writable
        self.fs = fs
        self.mode = 0o666 if writable else 0o444
        self.nlink = 1
        self.opens = 0
        if fs is not None:
            self.dev = fs.dev

    def size(self) -> int:
        return len(self.data)

    def stat(self) -> dict:
        return dict(mode=S_IFREG | self.mode, size=len(self.data), ino=self.ino, dev=self.dev,
                    mtime=self.mtime, nlink=self.nlink)


class DevNull(Node):
    def stat(self) -> dict:
        return dict(mode=S_IFCHR | 0o666, size=0, ino=self.ino, dev=self.dev, mtime=self.mtime,
                    nlink=1, rdev=0x103)


class DynamicFile(Node):
    """A read-only file whose content is produced by the host when it is opened."""

    def __init__(self, produce, ino: int | None = None):
        super().__init__(ino)
        self.produce = produce

    def size(self) -> int:
        return len(self.produce())

    def stat(self) -> dict:
        return dict(mode=S_IFREG | 0o444, size=0, ino=self.ino, dev=self.dev, mtime=self.mtime, nlink=1)


class ServiceFile(Node):
    """A host service reached through a file: per open file, the guest writes one request (any
    number of writes), then reads the reply, which ``handle(request: bytes) -> bytes`` computes
    at the first read. Writing again after a read starts a new request."""

    writable = True

    def __init__(self, handle, ino: int | None = None):
        super().__init__(ino)
        self.handle = handle

    def size(self) -> int:
        return 0

    def stat(self) -> dict:
        return dict(mode=S_IFCHR | 0o666, size=0, ino=self.ino, dev=self.dev, mtime=self.mtime,
                    nlink=1, rdev=0x104)


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


class HostFile(Node):
    """A read-only file of a layer; ``path`` was checked to lie inside the layer root ``root``
    at lookup, and is checked again at each :meth:`open_host`."""

    def __init__(self, path: str, hst: os.stat_result, root: str | None = None, dev: int = DEV_LAYER0,
                 ino: int | None = None):
        super().__init__(ino)
        self.path = path
        self.root = root or path
        self.dev = dev
        self._st = hst

    def size(self) -> int:
        return self._st.st_size

    def stat(self) -> dict:
        return dict(mode=S_IFREG | 0o444, size=self._st.st_size, ino=self.ino, dev=self.dev,
                    mtime=self._st.st_mtime, nlink=1)

    def open_host(self) -> int:
        """A read-only host descriptor of this file, opened without following a final symlink
        and refused (``ENOENT``) unless what was opened is a regular file whose real path still
        lies inside the layer root (a component swapped for a symlink after lookup). Raises
        :class:`FSError`."""
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0) \
            | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError as e:
            raise FSError(ENOENT if e.errno == _errno.ELOOP else _HOST_TO_WASI.get(e.errno, EIO),
                          self.path) from None
        try:
            real = os.readlink(f"/proc/self/fd/{fd}") if os.path.isdir("/proc/self/fd") \
                else os.path.realpath(self.path)
            if not st.S_ISREG(os.fstat(fd).st_mode) or not _inside(real, self.root):
                raise FSError(ENOENT, self.path)
        except BaseException:
            os.close(fd)
            raise
        return fd


class HostDir(Node):
    """A read-only directory of a layer rooted at host path ``root``."""

    is_dir = True

    def __init__(self, path: str, root: str, dev: int = DEV_LAYER0, rel: str = "",
                 ino: int | None = None):
        super().__init__(path_ino(dev, rel) if ino is None else ino)
        self.path = path
        self.root = root
        self.dev = dev
        self.rel = rel  # path below the layer root as the guest names it (stable inode numbers)
        self._children: dict[str, Node | None] = {}
        self._names: list[str] | None = None

    def _inside(self, real: str) -> bool:
        return _inside(real, self.root)

    def lookup(self, name: str) -> Node | None:
        if name in self._children:
            return self._children[name]
        node = None
        p = os.path.join(self.path, name)
        rel = f"{self.rel}/{name}"
        try:
            lst = os.lstat(p)
            if st.S_ISLNK(lst.st_mode) or not self._inside(os.path.realpath(self.path)):
                real = os.path.realpath(p)
                if not self._inside(real):
                    lst = None  # points out of the layer: absent
                else:
                    p, lst = real, os.stat(real)
            if lst is not None:
                if st.S_ISDIR(lst.st_mode):
                    node = HostDir(p, self.root, self.dev, rel)
                elif st.S_ISREG(lst.st_mode):
                    node = HostFile(p, lst, self.root, self.dev, path_ino(self.dev, rel))
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
        return dict(mode=S_IFDIR | 0o555, size=4096, ino=self.ino, dev=self.dev, mtime=self.mtime, nlink=2)


class TmpFS:
    """Accounting for the writable layer: file data plus :data:`NODE_COST` per node, capped at
    ``cap`` bytes. ``next_ino`` numbers its nodes (kept across snapshot restore)."""

    def __init__(self, cap: int, dev: int = DEV_TMP):
        self.cap = cap
        self.used = 0
        self.dev = dev
        self.next_ino = 2

    def _charge(self, n: int) -> None:
        if n > 0 and self.used + n > self.cap:
            raise FSError(ENOSPC, "writable /tmp is full")
        self.used += n

    def new_ino(self) -> int:
        ino = self.next_ino
        self.next_ino += 1
        return ino

    def new_file(self, ino: int | None = None) -> MemFile:
        """A new empty writable file charged :data:`NODE_COST` (``ENOSPC`` past the cap)."""
        self._charge(NODE_COST)
        return MemFile(writable=True, fs=self, ino=self.new_ino() if ino is None else ino)

    def new_dir(self, ino: int | None = None) -> MemDir:
        """A new writable directory charged :data:`NODE_COST` (``ENOSPC`` past the cap)."""
        self._charge(NODE_COST)
        return MemDir(writable=True, fs=self, ino=self.new_ino() if ino is None else ino)

    def resize(self, f: MemFile, new_size: int) -> None:
        """Set ``f``'s size in bytes: ``EINVAL`` if negative, ``EFBIG`` past
        :data:`MAX_FILE_SIZE`, ``ENOSPC`` if the cap would be exceeded. Nothing is allocated
        before the checks."""
        if new_size < 0:
            raise FSError(EINVAL, "negative file size")
        if new_size > MAX_FILE_SIZE:
            raise FSError(EFBIG, "file too large")
        delta = new_size - len(f.data)
        self._charge(delta)
        if delta > 0:
            f.data.extend(bytes(delta))
        else:
            del f.data[new_size:]

    def unlinked(self, node: Node) -> None:
        """``node`` lost its name: release its charge now, or (a file still open) when the last
        open description closes (:meth:`released`)."""
        if isinstance(node, MemFile):
            node.nlink = 0
            if node.opens > 0:
                return
            self.used -= len(node.data)
            node.data = bytearray()
        self.used -= NODE_COST

    def released(self, node: MemFile) -> None:
        """The last open description of ``node`` closed."""
        if node.nlink == 0 and node.fs is self:
            self.used -= len(node.data) + NODE_COST
            node.data = bytearray()


class OpenFile:
    """An open file description: node, flags, position and, for directories, the entry list."""

    __slots__ = ("node", "flags", "pos", "path", "host_fd", "entries", "refs", "counted")

    def __init__(self, node: Node, flags: int, path: str):
        self.node = node
        self.flags = flags
        self.pos = 0
        self.path = path
        self.host_fd: int | None = None
        self.entries: list[tuple[str, Node]] | None = None
        self.refs = 1
        self.counted = False  # counted in ``node.opens`` (writable-layer files)

    def readable(self) -> bool:
        return (self.flags & O_ACCMODE) != O_WRONLY

    def writable(self) -> bool:
        return (self.flags & O_ACCMODE) in (O_WRONLY, O_RDWR)
