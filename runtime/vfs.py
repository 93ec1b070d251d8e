"""The sandboxed file system an isolate sees.

The guest namespace is a tree the host builds; nothing outside it is reachable:

- in-memory directories (the skeleton: ``/``, ``/lib``, ``/home``, ``/dev``, ...), read-only;
- read-only *layers* mapped from host paths the caller gave (the stdlib zip as one file, a
  site-packages directory, the app's files). A host symlink that resolves outside its layer, a
  device, a FIFO or a socket is treated as absent (``ENOENT``); the host never opens a path that
  is not under a layer root it was given;
- a per-isolate writable in-memory ``/tmp`` with a byte cap: file data plus a fixed
  :data:`NODE_COST` per file or directory, including files that are unlinked but still open
  (their bytes are released when the last descriptor closes). Past the cap the guest gets
  ``ENOSPC`` (``EFBIG`` past :data:`MAX_FILE_SIZE`); negative sizes and offsets ``EINVAL``.
  The host never holds more than the cap for ``/tmp``.

Layer files are checked twice: at lookup (a symlink must resolve inside its layer root) and at
open (``O_NOFOLLOW``, then the opened descriptor's real path must still lie inside the layer root),
so a layer file swapped for a symlink on the host after lookup is not followed.

Inode and device numbers are deterministic: each mount has its own device number (in mount
order), layer nodes get an inode derived from their guest path, in-memory nodes one from their
file system's counter. ``/tmp`` nodes keep their numbers, modes and times across a snapshot
capture/restore (see :mod:`pyworkers.snapshot.capture`).

Paths are resolved lexically inside the guest tree: ``..`` at ``/`` stays at ``/``, so no guest
path names a host path outside the layers. Errors are raised as :class:`FSError` carrying a WASI
errno (Emscripten uses WASI errno numbers).
"""
from __future__ import annotations

import itertools
import os
import stat as st
import time

# The node types, errno values and flags are part of this module's interface (``V.MemFile``,
# ``V.ENOENT``, ``V.O_CREAT``...): they live in vfs_nodes to keep each module to one concern.
from pyworkers.runtime.vfs_nodes import *  # noqa: F401,F403
from pyworkers.runtime.vfs_nodes import _HOST_TO_WASI, _inside  # noqa: F401


class VFS:
    """The isolate's file system: a guest tree of in-memory nodes, host layers and ``/tmp``.

    ``layers`` maps absolute guest paths to host paths (files or directories), all read-only.
    ``tmp_cap`` bounds the writable ``/tmp`` (bytes). Methods take guest paths (``str``) and
    raise :class:`FSError` with a WASI errno.
    """

    def __init__(self, layers: dict[str, str | os.PathLike], tmp_cap: int = 64 << 20,
                 home: str = "/home/pyodide"):
        self._inos = itertools.count(2)  # the in-memory skeleton's inode numbers
        self.root = MemDir(ino=1)
        self.tmpfs = TmpFS(tmp_cap)
        self.cwd = "/"
        self._next_dev = DEV_LAYER0
        for d in ("/lib", "/home", home, "/dev"):
            self._mkdir_p(d)
        self._mkdir_p("/dev").children["null"] = DevNull(ino=next(self._inos))
        tmp = MemDir(writable=True, fs=self.tmpfs, ino=1)
        self.root.children["tmp"] = tmp
        for guest, host in sorted(layers.items()):
            self.mount(guest, host)

    # -- construction
    def _mkdir_p(self, path: str) -> MemDir:
        node = self.root
        for part in [p for p in path.split("/") if p]:
            nxt = node.children.get(part) if isinstance(node, MemDir) else None
            if nxt is None:
                nxt = MemDir(ino=next(self._inos))
                node.children[part] = nxt
            if not isinstance(nxt, MemDir):
                raise ValueError(f"cannot mount below {path}: {part} is not an in-memory directory")
            node = nxt
        return node

    def add_dynamic(self, guest: str, produce) -> None:
        """A read-only file at ``guest`` whose bytes are ``produce()`` at each open."""
        parent, _, name = guest.rpartition("/")
        self._mkdir_p(parent).children[name] = DynamicFile(produce, ino=next(self._inos))


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
        dev, self._next_dev = self._next_dev, self._next_dev + 1
        if st.S_ISDIR(hst.st_mode):
            pdir.children[name] = HostDir(real, real, dev, "")
        elif st.S_ISREG(hst.st_mode):
            pdir.children[name] = HostFile(real, hst, real, dev, path_ino(dev, ""))
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
            _check_name(name, apath)
            if isinstance(parent, _vol.VolDir):
                try:
                    node = parent.create(name, bool(flags & O_EXCL))
                except OSError as e:
                    raise FSError(_HOST_TO_WASI.get(e.errno, EIO), apath) from None
            else:
                node = self.tmpfs.new_file()
                parent.children[name] = node  # type: ignore[union-attr]
        return self.open_node(node, flags, apath)

    def open_node(self, node: Node, flags: int, apath: str) -> OpenFile:
        """Open ``node`` (found at guest path ``apath``, or an unlinked ``/tmp`` file being
        restored from a snapshot) with ``flags``; checks access like :meth:`open`."""
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
                of.host_fd = node.open_host()
            except FSError as e:
                raise FSError(e.errno, apath) from None
        elif isinstance(node, DynamicFile):
            of.entries = [("", MemFile(node.produce()))]  # content fixed at open
        elif isinstance(node, ServiceFile):
            of.entries = [("request", MemFile())]
        elif isinstance(node, MemFile) and node.fs is not None:
            node.opens += 1
            of.counted = True
        return of

    def close(self, of: OpenFile) -> None:
        """Drop one reference to ``of``; the last one closes its host descriptor and, for a
        ``/tmp`` file that was unlinked meanwhile, releases its bytes."""
        of.refs -= 1
        if of.refs > 0:
            return
        if of.host_fd is not None:
            if isinstance(of.node, _vol.VolFile) and getattr(self, "locks", None) is not None:
                self.locks.file_closed(of)  # POSIX: closing a file drops the owner's locks
            os.close(of.host_fd)
            of.host_fd = None
        if of.counted:
            of.counted = False
            node = of.node
            node.opens -= 1  # type: ignore[attr-defined]
            if node.opens <= 0:  # type: ignore[attr-defined]
                node.fs.released(node)  # type: ignore[attr-defined]

    def read(self, of: OpenFile, n: int, offset: int | None = None) -> bytes:
        if not of.readable():
            raise FSError(EBADF)
        node = of.node
        pos = of.pos if offset is None else offset
        if pos < 0 or n < 0:
            raise FSError(EINVAL, "negative offset")
        if node.is_dir:
            raise FSError(EISDIR)
        if isinstance(node, HostFile):
            # never ask the host for more than the file holds (os.pread allocates n bytes first)
            data = os.pread(of.host_fd, min(n, max(0, node.size() - pos)), pos)  # type: ignore[arg-type]
        elif isinstance(node, _vol.VolFile):
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
        if pos < 0:
            raise FSError(EINVAL, "negative offset")
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
        _check_name(name, apath)
        if isinstance(parent, _vol.VolDir):
            _vol.mkdir(parent, name)
            return
        parent.children[name] = self.tmpfs.new_dir()  # type: ignore[union-attr]

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
        del parent.children[name]  # type: ignore[union-attr]
        self.tmpfs.unlinked(node)

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
        if not np_.is_dir:
            raise FSError(ENOTDIR, napath)
        existing = np_.lookup(nname)  # type: ignore[attr-defined]
        if existing is node:
            return  # rename(x, x) (or another name of the same node): nothing to do
        if node.is_dir and (napath + "/").startswith(oapath + "/"):
            raise FSError(EINVAL, napath)  # a directory into its own subtree
        _check_name(nname, napath)
        if existing is not None:
            if existing.is_dir and not node.is_dir:
                raise FSError(EISDIR, napath)
            if node.is_dir and not existing.is_dir:
                raise FSError(ENOTDIR, napath)
            if existing.is_dir and existing.children:  # type: ignore[attr-defined]
                raise FSError(ENOTEMPTY, napath)
        np_.children[nname] = node  # type: ignore[union-attr]
        del op.children[oname]  # type: ignore[union-attr]
        if existing is not None:
            self.tmpfs.unlinked(existing)

    def truncate(self, node: Node, size: int) -> None:
        """Set a ``/tmp`` or volume file's size (``EINVAL`` negative, ``EFBIG``/``ENOSPC`` past
        the cap, ``EROFS`` elsewhere)."""
        if size < 0:
            raise FSError(EINVAL, "negative size")
        if node.is_dir:
            raise FSError(EISDIR)
        if isinstance(node, _vol.VolFile):
            _vol.truncate(node, size)
            return
        if not isinstance(node, MemFile) or not node.writable:
            raise FSError(EROFS)
        node.fs.resize(node, size)  # type: ignore[union-attr]
        node.mtime = time.time()

    def chmod(self, node: Node, mode: int) -> None:
        """Set the permission bits of a ``/tmp`` node (other nodes: ignored, like the glue's
        read-only files)."""
        if node.writable and isinstance(node, (MemFile, MemDir)):
            node.mode = mode & 0o7777


def _check_name(name: str, apath: str) -> None:
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise FSError(ENAMETOOLONG, apath[:64] + "...")


EBUSY_ROOT = 10  # EBUSY

from pyworkers.runtime import volume as _vol  # noqa: E402  (volume nodes subclass Node)
