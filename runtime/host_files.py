"""File-system syscalls of the host (a mixin of :class:`pyworkers.runtime.host.Host`): open,
fcntl (incl. record locks on volume files), ioctl, stat, directories, links, truncate, chmod,
dup. Semantics mirror Emscripten's ``library_syscall.js`` over the sandboxed VFS; each method is
registered with :func:`~pyworkers.runtime.host_abi.imp` under its import's name."""
from __future__ import annotations

from pyworkers.runtime import vfs as V
from pyworkers.runtime.host_abi import AT_EMPTY_PATH, AT_REMOVEDIR, imp, syscall
from pyworkers.runtime.streams import Stream
from pyworkers.runtime.vfs import FSError
from pyworkers.runtime.volume import GUEST_FLOCK, VolFile


class FileSyscalls:
    """The file syscalls; the host provides ``fs``, ``fds``, ``mem``, ``devices`` and the fd
    helpers (``_of``, ``_path_at``, ``_new_fd``, ``_write_stat``, ``_ref``...)."""

    # ----------------------------------------------------------------- files
    @imp("__syscall_openat")
    @syscall
    def __syscall_openat(self, dirfd, path, flags, varargs):
        p = self._path_at(dirfd, path)
        device = self.devices.get(p)
        if device is not None:
            return self._stream_fd(device())
        of = self.fs.open(p, flags)
        return self._new_fd(of)

    @imp("__syscall_fcntl64")
    @syscall
    def __syscall_fcntl64(self, fd, cmd, varargs):
        of = self.fds.get(fd)
        if of is None:
            raise FSError(V.EBADF)
        if cmd == 0:  # F_DUPFD
            arg = self.mem.i32(varargs)
            if arg < 0:
                raise FSError(V.EINVAL)
            self._ref(of)
            return self._new_fd(of, arg)
        if cmd in (1, 2):  # F_GETFD / F_SETFD
            return 0
        if cmd == 3:  # F_GETFL
            if isinstance(of, (V.OpenFile, Stream)):
                return getattr(of, "flags", V.O_RDWR)
            return 0 if of == "stdin" else 1
        if cmd == 4:  # F_SETFL
            if isinstance(of, V.OpenFile):
                of.flags |= self.mem.i32(varargs)
            elif isinstance(of, Stream):
                of.flags = V.O_RDWR | self.mem.i32(varargs)
            return 0
        if cmd in (12, 13, 14):  # F_GETLK / F_SETLK / F_SETLKW
            ptr = self.mem.u32(varargs)
            locks = getattr(self.fs, "locks", None)
            if isinstance(of, V.OpenFile) and isinstance(of.node, VolFile) and locks is not None:
                # a volume file: real record locks on the host file (pyworkers.runtime.volume)
                out = locks.fcntl(of, cmd, self.mem.read(ptr, GUEST_FLOCK.size))
                if out is not None:
                    self.mem.write(ptr, out)
                return 0
            if cmd == 12:  # nothing else is shared: no lock ever conflicts
                self.mem.pack("<h", ptr, 2)
            return 0
        raise FSError(V.EINVAL)

    @imp("__syscall_ioctl")
    @syscall
    def __syscall_ioctl(self, fd, op, varargs):
        of = self.fds.get(fd)
        if of is None:
            raise FSError(V.EBADF)
        ioctl = getattr(of, "ioctl", None)
        if ioctl is not None:  # host sockets: FIONBIO, FIONREAD
            return ioctl(self, op, self.mem.u32(varargs))
        raise FSError(V.ENOTTY)

    def _stat_node(self, path: str) -> dict:
        return self.fs.lookup(path).stat()

    @imp("__syscall_stat64", "__syscall_lstat64")
    @syscall
    def __syscall_stat64(self, path, buf):
        return self._write_stat(buf, self._stat_node(self.mem.cstr(path)))

    @imp("__syscall_fstat64")
    @syscall
    def __syscall_fstat64(self, fd, buf):
        of = self.fds.get(fd)
        if of is None:
            raise FSError(V.EBADF)
        if isinstance(of, str):
            s = self._stdio_stat(fd)
        elif isinstance(of, Stream):
            s = dict(mode=of.mode, size=0, ino=0x10000 + fd, mtime=0.0, nlink=1, dev=2)
        else:
            s = of.node.stat()
        return self._write_stat(buf, s)

    @imp("__syscall_newfstatat")
    @syscall
    def __syscall_newfstatat(self, dirfd, path, buf, flags):
        p = self._path_at(dirfd, path, allow_empty=bool(flags & AT_EMPTY_PATH))
        return self._write_stat(buf, self._stat_node(p))

    @imp("__syscall_faccessat")
    @syscall
    def __syscall_faccessat(self, dirfd, path, amode, flags):
        node = self.fs.lookup(self._path_at(dirfd, path))
        if amode & 2 and not node.writable:
            raise FSError(V.EACCES)

    @imp("__syscall_getdents64")
    @syscall
    def __syscall_getdents64(self, fd, dirp, count):
        of = self._of(fd)
        entries = self.fs.readdir(of)
        size = 280
        start = of.pos // size
        end = min(len(entries), start + count // size)
        pos = 0
        idx = start
        for idx in range(start, end):
            name, node = entries[idx]
            dtype = 4 if node.is_dir else (2 if isinstance(node, V.DevNull) else 8)
            nb = name.encode("utf-8", "surrogateescape")[:255]
            self.mem.pack("<QqHB", dirp + pos, node.ino, (idx + 1) * size, size, dtype)
            self.mem.write(dirp + pos + 19, nb + b"\0")
            pos += size
        else:
            idx = end if end > start else start
        of.pos = (start + pos // size) * size
        return pos

    @imp("__syscall_getcwd")
    @syscall
    def __syscall_getcwd(self, buf, size):
        if size == 0:
            raise FSError(V.EINVAL)
        cwd = self.fs.cwd.encode()
        if size < len(cwd) + 1:
            return -68  # ERANGE
        self.mem.write(buf, cwd + b"\0")
        return len(cwd) + 1

    @imp("__syscall_chdir")
    @syscall
    def __syscall_chdir(self, path):
        p = self.fs.abspath(self.mem.cstr(path))
        if not self.fs.lookup(p).is_dir:
            raise FSError(V.ENOTDIR)
        self.fs.cwd = p

    @imp("__syscall_fchdir")
    @syscall
    def __syscall_fchdir(self, fd):
        of = self._of(fd)
        if not of.node.is_dir:
            raise FSError(V.ENOTDIR)
        self.fs.cwd = of.path

    @imp("__syscall_mkdirat")
    @syscall
    def __syscall_mkdirat(self, dirfd, path, mode):
        self.fs.mkdir(self._path_at(dirfd, path))

    @imp("__syscall_unlinkat")
    @syscall
    def __syscall_unlinkat(self, dirfd, path, flags):
        self.fs.unlink(self._path_at(dirfd, path), rmdir=bool(flags & AT_REMOVEDIR))

    @imp("__syscall_rmdir")
    @syscall
    def __syscall_rmdir(self, path):
        self.fs.unlink(self.mem.cstr(path), rmdir=True)

    @imp("__syscall_renameat")
    @syscall
    def __syscall_renameat(self, olddirfd, oldpath, newdirfd, newpath):
        self.fs.rename(self._path_at(olddirfd, oldpath), self._path_at(newdirfd, newpath))

    @imp("__syscall_readlinkat")
    @syscall
    def __syscall_readlinkat(self, dirfd, path, buf, size):
        self.fs.lookup(self._path_at(dirfd, path))
        raise FSError(V.EINVAL)  # no symlinks inside the sandbox

    @imp("__syscall_symlinkat", "__syscall_mknodat")
    @syscall
    def _no_links(self, *args):
        raise FSError(V.EPERM)

    @imp("__syscall_ftruncate64")
    @syscall
    def __syscall_ftruncate64(self, fd, length):
        self.fs.truncate(self._of(fd).node, length)

    @imp("__syscall_truncate64")
    @syscall
    def __syscall_truncate64(self, path, length):
        self.fs.truncate(self.fs.lookup(self.mem.cstr(path)), length)

    @imp("__syscall_utimensat", "__syscall_fchown32", "__syscall_fchownat", "__syscall_fdatasync",
         "__syscall_fadvise64", "__syscall_fallocate")
    @syscall
    def _metadata_noop(self, *args):
        return 0

    # chmod keeps a /tmp node's permission bits (stat reports them, snapshots carry them)
    @imp("__syscall_chmod")
    @syscall
    def __syscall_chmod(self, path, mode):
        self.fs.chmod(self.fs.lookup(self.mem.cstr(path)), mode)

    @imp("__syscall_fchmod")
    @syscall
    def __syscall_fchmod(self, fd, mode):
        self.fs.chmod(self._of(fd).node, mode)

    @imp("__syscall_fchmodat2")
    @syscall
    def __syscall_fchmodat2(self, dirfd, path, mode, flags):
        self.fs.chmod(self.fs.lookup(self._path_at(dirfd, path, allow_empty=bool(flags & AT_EMPTY_PATH))), mode)

    @imp("__syscall_dup")
    @syscall
    def __syscall_dup(self, fd):
        of = self.fds.get(fd)
        if of is None:
            raise FSError(V.EBADF)
        self._ref(of)
        return self._new_fd(of)

    @imp("__syscall_dup3")
    @syscall
    def __syscall_dup3(self, fd, newfd, flags):
        of = self.fds.get(fd)
        if of is None:
            raise FSError(V.EBADF)
        if fd == newfd:
            raise FSError(V.EINVAL)
        old = self.fds.pop(newfd, None)
        if isinstance(old, V.OpenFile):
            self.fs.close(old)
        elif isinstance(old, Stream):
            self._stream_unref(old)
        self._ref(of)
        self.fds[newfd] = of
        return newfd
