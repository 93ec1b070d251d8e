"""Restore: isolates that start from a snapshot, copy-on-write, in about a millisecond.

The portable snapshot file is not copied into each isolate. Once per machine (cached by the
snapshot's digest and the engine fingerprint), a :class:`Restorer` builds a module whose
instantiation *is* the snapshot, Wizer-style (:func:`pyworkers.runtime.wasmbin.build_image_module`:
one active data segment per run of non-zero pages, memory minimum = image size, mutable globals
initialised to their snapshot values, start function dropped), compiles and serializes it
(``.cwasm``). Every isolate then comes from one ``InstancePre`` over the release's shared Linker:
wasmtime maps the image copy-on-write from the ``.cwasm`` (``memory_init_cow``), so an idle
restored isolate costs well under a MiB of private memory.

Around that, :meth:`Restorer.new_isolate` re-creates what the image cannot hold, in this order
(as workerd does for Pyodide: same libraries, same order, same bases, fail fast otherwise):

1. the function table grown to its snapshot size, CPython's trampoline re-instantiated at its
   recorded slot;
2. every side module re-instantiated in load order at its recorded memory base and table base,
   *without* data initialisation (passive-data variant) and without relocations/constructors,
   its GOT entries and mutable globals set to their snapshot values; its element segments refill
   its table range;
3. the remaining recorded table slots (``dlsym``/GOT function pointers, libffi closures made
   by ``ctypes`` re-created from their recorded call layout, see :mod:`pyworkers.runtime.ffi`),
   then a check that the table has exactly the snapshot's size; an unknown slot origin is refused;
4. host state: cwd, environment, ``/tmp`` (same inode numbers, modes, times; unlinked-but-open
   files too), open files (same nodes, offsets, flags), a monotonic clock that does not go back;
5. entropy: ``random`` is reseeded from the host's entropy before any guest code runs in the
   isolate: the isolate's first request carries a ``reseed`` flag the guest handles first (no
   crossing of its own; snapshots of an older guest helper get a ``reseed`` request at restore)
   (``os.urandom``/``secrets`` always read the host's entropy).

Optional, for the first request's latency: :meth:`Restorer.learn_hot_pages` learns from one
isolate that has served which image pages isolates write after restore, and
:meth:`Restorer.prefault` takes them in a later isolate in a few ``madvise`` calls, before its
requests would fault on them one by one (:mod:`pyworkers.snapshot.hotpages`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import wasmtime

from pyworkers.runtime import ffi
from pyworkers.runtime import vfs as V
from pyworkers.runtime.dylink import FUNC_EXPORT, LoadedLibrary, compile_side_module, read_dylink
from pyworkers.runtime.engine import config_fingerprint, load_module, wasmtime_version
from pyworkers.runtime.install import cache_root, ensure_compiled
from pyworkers.runtime.isolate import Isolate, Runtime
from pyworkers.runtime.trampolines import count_args_module, trampoline_call_module
from pyworkers.runtime.wasmbin import GLOBAL_EXPORT_PREFIX, build_image_module
from pyworkers.snapshot.format import SnapshotError, read_snapshot
from pyworkers.snapshot.hotpages import PAGE, HotPages


class Restorer:
    """Restores isolates from one snapshot file.

    Args:
        path: the snapshot file.
        site_packages, mounts: the read-only layers to mount (the same content the snapshot was
            taken with: side modules are checked against their recorded sha256).
        expect_type: refuse a snapshot of another type (``baseline``/``package``/``dedicated``).
        layer_hash, app_hash: refuse a snapshot recorded for other layer/app contents.
        copy: restore by copying the image into a fresh instance of the release's module instead
            of compiling an image module: no per-snapshot compile (for one-off restores, e.g. a
            deploy starting from a package snapshot), but ~tens of ms and the whole image as
            private memory per isolate.

    Raises :class:`SnapshotError` (one line naming the file and the mismatch) for a truncated or
    corrupted file or one made for another runtime build, wasmtime version, engine
    configuration, layer, app or snapshot type. The first construction on a machine builds and
    caches the image module (seconds: a full compile); later ones load it in milliseconds.
    """

    def __init__(self, path: str | os.PathLike, *, site_packages: str | os.PathLike | None = None,
                 mounts: dict[str, str | os.PathLike] | None = None, expect_type: str | None = None,
                 layer_hash: str | None = None, app_hash: str | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 progress: Callable[[str], None] | None = None, copy: bool = False):
        t0 = time.perf_counter()
        self.copy = copy
        self.path = Path(path)
        self.snap = read_snapshot(self.path)
        self.snap.verify_checksums()  # also when the image module is already cached
        meta = self.snap.metadata
        self.metadata = meta
        p = self.path
        if expect_type and meta.get("snapshot_type") != expect_type:
            raise SnapshotError(f"{p}: is a {meta.get('snapshot_type')} snapshot, expected {expect_type}")
        if meta.get("wasmtime_version") != wasmtime_version():
            raise SnapshotError(f"{p}: made with wasmtime {meta.get('wasmtime_version')}, this is "
                                f"wasmtime {wasmtime_version()}: take the snapshot again (redeploy)")
        if meta.get("engine") != config_fingerprint():
            raise SnapshotError(f"{p}: made for engine configuration {meta.get('engine')}, this is "
                                f"{config_fingerprint()}: take the snapshot again (redeploy)")
        for what, want in (("layer_hash", layer_hash), ("app_hash", app_hash)):
            if want is not None and meta.get(what) != want:
                raise SnapshotError(f"{p}: {what} mismatch: snapshot has {meta.get(what)}, expected {want}")
        self.runtime = Runtime.get(meta["release"], cache_dir=cache_dir, progress=progress)
        if self.runtime.installed.wasm_sha256 != meta.get("build_sha256"):
            raise SnapshotError(f"{p}: made for runtime build {str(meta.get('build_sha256'))[:16]}... of "
                                f"{meta['release']}, installed build is {self.runtime.installed.wasm_sha256[:16]}...")
        if meta.get("stdlib_sha256") != self.runtime.stdlib_sha256:
            raise SnapshotError(f"{p}: made with another standard library archive "
                                f"({str(meta.get('stdlib_sha256'))[:16]}...) than this runtime mounts "
                                f"({self.runtime.stdlib_sha256[:16]}...): take the snapshot again (redeploy)")
        self.site_packages = str(site_packages) if site_packages else None
        self.mounts = {k: str(v) for k, v in (mounts or {}).items()}
        self.state = self.snap.section_json("state")
        self.cache_dir = cache_dir
        if copy:  # no per-snapshot compile: instantiate the release's module, copy the image in
            self.image = self.snap.section("memory")
            self.module, self.pre = self.runtime.module, self.runtime.pre
        else:
            self.module = self._image_module(progress)
            self.pre = self.runtime.linker.instantiate_pre(self.module)
        self.lib_modules = self._side_modules(progress)
        #: linear-memory pages its isolates touch after restore (see :meth:`learn_hot_pages`)
        self.hot_pages = HotPages() if copy else _load_hot_pages(self._hot_pages_path())
        self._lock = threading.Lock()
        self._lib_plans: list[list[tuple]] | None = None
        self.timings = {"prepare_ms": (time.perf_counter() - t0) * 1000}

    # ------------------------------------------------------------------ once per process
    def image_ready(self) -> bool:
        """Whether this snapshot's copy-on-write image module is already compiled in the
        cache (a ``Restorer(copy=False)`` then loads it in milliseconds instead of compiling
        it for seconds)."""
        from pyworkers.runtime.install import compiled_path

        return compiled_path(cache_root(self.cache_dir), _image_key(self.snap.digest),
                             "snapshot").with_suffix(".json").exists()

    def _hot_pages_path(self) -> Path:
        return image_module_path(self.snap.digest, self.cache_dir).with_suffix(HOT_PAGES_SUFFIX)

    def learn_hot_pages(self, iso: Isolate, *, save: bool = True) -> bool:
        """Learn from ``iso`` (an idle isolate of this Restorer that has done what a fresh one
        does first: e.g. lifespan startup and a first request) which pages of the image its
        isolates write after restore, for :meth:`prefault`. ``save``: also keep them beside
        the cached image module (``.hotpages``, written atomically), so Restorers of the same
        snapshot in later processes start with them. Returns False (nothing learned) in copy
        mode (every page is private there already) or without ``/proc/self/pagemap``; raises
        nothing else. Costs ~1 ms (reads one 8-byte pagemap entry per page of the image)."""
        if self.copy or iso.dead:
            return False
        if not self.hot_pages.learn(iso, image_size=self.metadata["memory_size"]):
            return False
        if save:
            _save_hot_pages(self._hot_pages_path(), self.hot_pages, self.metadata["memory_size"])
        return True

    def prefault(self, iso: Isolate, *, read: bool = False) -> dict:
        """Pre-fault in ``iso`` the pages :meth:`learn_hot_pages` learned: one
        ``madvise(MADV_POPULATE_WRITE)`` per run of pages (Linux >= 5.14; does nothing on older
        kernels), so its lifespan and first request do not take a copy-on-write page fault per
        page they write. Contents are unchanged and the isolate ends up with the private pages
        it would have dirtied anyway. Meant for an isolate that waits idle (a pool's spare:
        off the critical path) but safe while it runs, from any thread (it touches no wasmtime
        store; not after :meth:`Isolate.close`); ``read=True`` also maps the pages only
        read (measured not to pay: read faults are cheap with the kernel's fault-around).
        Returns ``{"bytes", "read_bytes", "ranges", "ms"}`` (see
        :meth:`pyworkers.snapshot.hotpages.HotPages.prefault`); ``bytes`` 0 when nothing is
        learned yet."""
        mem = iso.mem
        if self.copy or iso.dead or mem is None:
            return {"bytes": 0, "read_bytes": 0, "ranges": 0, "ms": 0.0}
        return self.hot_pages.prefault(iso, read=read)

    def _image_module(self, progress) -> wasmtime.Module:
        key = _image_key(self.snap.digest)
        root = cache_root(self.cache_dir)
        sdir = root / "snapshots"
        sdir.mkdir(parents=True, exist_ok=True)
        cwasm = image_module_path(self.snap.digest, self.cache_dir)
        if not cwasm.with_suffix(".json").exists():
            t0 = time.perf_counter()
            image = self.snap.section("memory")
            globals_ = {int(k): v for k, v in self.state["globals"].items()}
            wasm = build_image_module(self.runtime.installed.wasm.read_bytes(), image, globals_)
            # a name of its own: two processes (or a server's background compile and a deploy)
            # preparing the same image must not write, compile and delete one shared file
            # (seen: "No such file or directory: .../snapshots/<key>.wasm")
            tmp = sdir / f"{key[:32]}.{os.getpid()}.{threading.get_ident()}.wasm"
            remove_stale_image_sources(sdir)
            tmp.write_bytes(wasm)
            if progress:
                progress(f"built image module ({len(wasm) / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
            try:
                ensure_compiled(tmp, key, "snapshot", root=root, progress=progress)
            finally:
                tmp.unlink(missing_ok=True)
            prune_image_modules(cwasm.parent, keep=cwasm)
        else:
            os.utime(cwasm.with_suffix(".json"))  # mark as recently used for pruning
        return load_module(cwasm)

    def _layer_fs(self) -> V.VFS:
        layers = {self.runtime.stdlib_guest_path: str(self.runtime.stdlib_zip)}
        if self.site_packages:
            layers[self.runtime.site_packages_guest_path] = self.site_packages
        layers.update(self.mounts)
        return V.VFS(layers)

    def _side_modules(self, progress) -> list[tuple[wasmtime.Module, set[str]]]:
        out = []
        if not self.state["libs"]:
            return out
        fs = self._layer_fs()
        for lib in self.state["libs"]:
            try:
                of = fs.open(lib["path"], 0)
                data = fs.read(of, fs.size_of(of.node))
                fs.close(of)
            except V.FSError:
                raise SnapshotError(f"{self.path}: side module {lib['path']} is not in the mounted layers "
                                    "(mount the site-packages layer the snapshot was taken with)") from None
            if hashlib.sha256(data).hexdigest() != lib["sha256"]:
                raise SnapshotError(f"{self.path}: side module {lib['path']} differs from the snapshot's "
                                    f"(sha256 {lib['sha256'][:16]}...): layer mismatch")
            module, _ = compile_side_module(data, name=os.path.basename(lib["path"]), variant="restore",
                                            cache_dir=self.cache_dir, progress=progress)
            out.append((module, read_dylink(data).weak_imports))
        return out

    # ------------------------------------------------------------------ per isolate
    def new_isolate(self, *, stdout=None, stderr=None, memory_limit: int | None = None,
                    reseed: bool = True, egress: Any = None) -> Isolate:
        """A fresh isolate in the snapshot's state (raises :class:`IsolateCrashed` or
        :class:`SnapshotError` if the layout cannot be reproduced); ``egress``: its outbound
        network policy (:class:`pyworkers.runtime.egress.Policy`, ``None``: the default).
        ``reseed``: reseed the guest's ``random`` before any guest code runs (the flag rides on
        the isolate's first request: the restore itself makes no guest call). The isolate's
        ``loaded_app`` is :attr:`loaded_app`."""
        h = self.state["host"]
        iso = Isolate(self.runtime, site_packages=self.site_packages, mounts=self.mounts,
                      stdout=stdout, stderr=stderr, tmp_cap=h["tmp_cap"], memory_limit=memory_limit,
                      egress=egress, _restore=self)
        iso.loaded_app = self.loaded_app
        if reseed:
            if iso.guest_protocol >= 2:
                iso._reseed_pending = True  # done by the guest at the start of the first request
            else:  # a snapshot of an older guest helper: one request now
                iso.request({"op": "reseed"})
        return iso

    @property
    def loaded_app(self) -> tuple[str, str | None] | None:
        """``(main, path)`` of the ASGI app the snapshot's guest adapter already has loaded
        (recorded by :func:`pyworkers.snapshot.capture.take_snapshot` after checking it in the
        guest: a dedicated snapshot taken after ``_pyworkers_asgi.load(main, path)``), or
        ``None`` (a package or baseline snapshot, or one written before this was recorded):
        then the app must be loaded after restore. Isolates restored from it carry the same
        value as ``Isolate.loaded_app``; a server can skip the load call when it equals what it
        would pass, e.g. ``if iso.loaded_app != (main, "/app"): iso.call("_pyworkers_asgi:load",
        main, "/app")``."""
        app = self.metadata.get("asgi_app")
        if not isinstance(app, dict) or not isinstance(app.get("main"), str):
            return None
        return app["main"], app.get("path")

    def _restore_into(self, iso: Isolate) -> None:
        st, store = self.state, iso.store
        iso.instance = self.pre.instantiate(store)
        iso._bind_memory()
        if self.copy:
            self._copy_image(iso)
        self._restore_host(iso, st["host"])
        table = iso.table
        target = st["table"]["size"]
        size = table.size(store)
        if size > target:
            raise SnapshotError(f"{self.path}: table starts at {size} entries, snapshot has {target}")
        table.grow(store, target - size, None)
        log = [(i, tuple(o)) for i, o in st["table"]["log"]]
        for idx, origin in log:
            if origin[0] == "trampoline_call":
                inst = wasmtime.Instance(store, trampoline_call_module(), [iso.memory, table])
                table.set(store, idx, inst.exports(store)["trampoline_call"])
            elif origin[0] == "count_args":
                inst = wasmtime.Instance(store, count_args_module(), [table])
                table.set(store, idx, inst.exports(store)["f"])
        linker = iso.linker
        for name, value in st["got"].items():
            linker._got_entry(name, True, value)
        linker.got_required = set(st["got_required"])
        plans = self._plans(linker)
        for lib_state, (module, weak), plan in zip(st["libs"], self.lib_modules, plans):
            instance = linker.instantiate_planned(module, plan, lib_state["path"], lib_state["memory_base"],
                                                  lib_state["table_base"])
            ex = instance.exports(store)
            for gidx, value in lib_state["globals"].items():
                ex[f"{GLOBAL_EXPORT_PREFIX}{gidx}"].set_value(store, value)
            lib = LoadedLibrary(lib_state["path"], lib_state["sha256"], lib_state["memory_base"],
                                lib_state["memory_size"], lib_state["table_base"], lib_state["table_size"],
                                list(lib_state["handles"]), linker.relocated_exports(instance, store,
                                                                                     lib_state["memory_base"]),
                                instance, lib_state["global"], weak)
            linker.loaded.append(lib)
            linker.by_name[lib.name] = lib
            for hnd in lib.handles:
                linker.by_handle[hnd] = lib
        for idx, origin in log:
            if origin[0] == "main":
                table.set(store, idx, iso._export(origin[1]))
            elif origin[0] == "lib":
                table.set(store, idx, linker.loaded[origin[1]].exports[origin[2]])
            elif origin[0] in (ffi.ORIGIN_CLOSURE, ffi.ORIGIN_FREE):
                ffi.restore_slot(iso, idx, origin)
            elif origin[0] not in ("trampoline_call", "count_args"):
                raise SnapshotError(f"{self.path}: table slot {idx} has unknown origin {origin[0]!r} "
                                    "(snapshot written by a newer pyworkers?)")
        linker.func_slots = {(o, n): i for o, n, i in st["func_slots"]}
        iso.table_log = log
        if table.size(store) != target:
            raise SnapshotError(f"{self.path}: table has {table.size(store)} entries after restore, "
                                f"snapshot has {target}: layout not reproducible")

    def _copy_image(self, iso: Isolate) -> None:
        """Copy mode: grow memory to the image, write it, set the main module's mutable globals
        (the release module's own data segments and start function ran at instantiation and are
        overwritten here)."""
        image, store = self.image, iso.store
        pages = (len(image) + 65535) // 65536
        cur = iso.memory.size(store)
        if pages > cur:
            iso.memory.grow(store, pages - cur)
        iso.mem.refresh()
        iso.mem.write(0, image)
        for idx, value in self.state["globals"].items():
            iso._export(f"{GLOBAL_EXPORT_PREFIX}{idx}").set_value(store, value)

    def _plans(self, linker) -> list[list[tuple]]:
        """Import plans of the side modules (computed with the first isolate, then reused: the
        resolution depends only on the module, the main module and the libraries before it)."""
        if self._lib_plans is None:
            plans = []
            saved = list(linker.loaded)
            try:
                for lib_state, (module, weak) in zip(self.state["libs"], self.lib_modules):
                    plans.append(linker.plan(module, lib_state["path"], weak))
                    # plan() consults earlier libraries' exports: stand-ins with their export names
                    linker.loaded.append(_ExportsOnly(module, lib_state["global"]))
            finally:
                linker.loaded[:] = saved
            self._lib_plans = plans
        return self._lib_plans

    def _restore_host(self, iso: Isolate, h: dict) -> None:
        fs, host = iso.fs, iso.host
        fs.cwd = h["cwd"]
        host.environ = dict(h["environ"])
        tmp = fs.root.children["tmp"]
        tmpfs = fs.tmpfs
        by_ino: dict[int, V.Node] = {}

        def meta(node: V.Node, entry: dict) -> V.Node:
            if "mode" in entry:
                node.mode, node.mtime = entry["mode"], entry["mtime"]
            by_ino[node.ino] = node
            return node

        def new_file(entry: dict) -> V.MemFile:
            data = base64.b64decode(entry["file"])
            f = tmpfs.new_file(entry.get("ino"))
            tmpfs.resize(f, len(data))
            f.data[:] = data
            return meta(f, entry)  # type: ignore[return-value]

        def build(node: V.MemDir, tree: dict) -> None:
            for name, entry in tree.items():
                if "dir" in entry:
                    d = meta(tmpfs.new_dir(entry.get("ino")), entry)
                    node.children[name] = d
                    build(d, entry["dir"])  # type: ignore[arg-type]
                else:
                    node.children[name] = new_file(entry)

        build(tmp, h["tmp"])  # type: ignore[arg-type]
        if "tmp_root" in h:
            tmp.mode, tmp.mtime = h["tmp_root"]["mode"], h["tmp_root"]["mtime"]
        for entry in h.get("tmp_orphans", ()):
            new_file(entry).nlink = 0  # unlinked but open: charged until its last close
        tmpfs.next_ino = max([h.get("tmp_next_ino", tmpfs.next_ino), *(i + 1 for i in by_ino)])
        opened: list[V.OpenFile] = []
        for f in h["files"]:
            flags = f["flags"] & ~(V.O_CREAT | V.O_TRUNC | V.O_EXCL)
            node = by_ino.get(f["ino"]) if "ino" in f else None
            of = fs.open_node(node, flags, f["path"]) if node is not None else fs.open(f["path"], flags)
            of.flags, of.pos, of.refs = f["flags"], f["pos"], f["refs"]
            opened.append(of)
        for node in by_ino.values():
            if isinstance(node, V.MemFile) and node.nlink == 0 and node.opens == 0:
                tmpfs.released(node)
        host.fds = {}
        for fd, entry in h["fds"].items():
            host.fds[int(fd)] = entry["stdio"] if "stdio" in entry else opened[entry["file"]]
        iso._dispatch = h["dispatch"]
        iso.guest_protocol = h.get("guest_protocol", 1)
        iso._cstrs = {k: int(v) for k, v in h["cstrs"].items()}
        iso._count_args_ptr = h["count_args_ptr"]
        host.mono_offset_ns = max(0, h["monotonic_ns"] - time.monotonic_ns() + 1_000_000)
        host.entropy_calls = h["entropy_calls"]
        host.entropy_bytes = h["entropy_bytes"]


class _ExportsOnly:
    """A stand-in for a loaded library while planning imports: only its function export names."""

    def __init__(self, module: wasmtime.Module, is_global: bool):
        self.is_global = is_global
        self.exports = {e.name: FUNC_EXPORT for e in module.exports if isinstance(e.type, wasmtime.FuncType)}


HOT_PAGES_SUFFIX = ".hotpages"
_HOT_PAGES_VERSION = 1


def _load_hot_pages(path: Path) -> HotPages:
    """The learned pages saved at ``path``; empty when absent, unreadable or made for another
    page size (they are only a hint: learning again fixes them)."""
    try:
        doc = json.loads(path.read_text())
        if doc.get("version") != _HOT_PAGES_VERSION or doc.get("page_size") != PAGE:
            return HotPages()
        written = [(int(o), int(n)) for o, n in doc["written"]]
        read = [(int(o), int(n)) for o, n in doc.get("read", ())]
        if any(o < 0 or n <= 0 or o % PAGE or n % PAGE for o, n in written + read):
            return HotPages()
        return HotPages(written, read)
    except (OSError, ValueError, KeyError, TypeError):
        return HotPages()


def _save_hot_pages(path: Path, hot: HotPages, image_size: int) -> None:
    doc = {"version": _HOT_PAGES_VERSION, "page_size": PAGE, "image_size": image_size,
           "written": hot.written or [], "read": hot.read or []}
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    try:
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        os.replace(tmp, path)
    except OSError:  # a read-only cache: keep them in memory only
        tmp.unlink(missing_ok=True)


def _image_key(digest: str) -> str:
    return hashlib.sha256(f"{digest}:{config_fingerprint()}".encode()).hexdigest()


def image_module_path(snapshot: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the compiled image module (``.cwasm``; its manifest is the ``.json`` beside it) of
    a snapshot is cached for this engine: ``snapshot`` is the snapshot file's path or its
    digest (``SnapshotFile.digest``). The file may not exist. Raises :class:`SnapshotError` for
    an unreadable snapshot file."""
    from pyworkers.runtime.install import compiled_path

    digest = str(snapshot)
    if not (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        digest = read_snapshot(snapshot).digest
    return compiled_path(cache_root(cache_dir), _image_key(digest), "snapshot")


def image_modules_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding this engine's compiled snapshot image modules."""
    from pyworkers.runtime.install import compiled_path

    return compiled_path(cache_root(cache_dir), "0" * 24, "snapshot").parent


#: seconds after which an image module's source (``<cache>/snapshots/*.wasm``, written only for the
#: compile that follows) is a leftover of a process that died while compiling
STALE_SOURCE_S = 3600.0


def remove_stale_image_sources(directory: Path, max_age: float = STALE_SOURCE_S) -> list[Path]:
    """Delete image module sources (``*.wasm``, ~30-55 MiB each) in ``directory`` older than
    ``max_age`` seconds: a process killed during the compile (a server stopped while its
    background compile ran) leaves its source behind (measured: 6.9 GiB of them in a test
    machine's cache). Returns the deleted paths; never raises."""
    removed = []
    now = time.time()
    try:
        entries = list(directory.glob("*.wasm"))
    except OSError:
        return removed
    for p in entries:
        try:
            if now - p.stat().st_mtime > max_age:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


def prune_image_modules(directory: Path, keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Delete the least recently used snapshot image modules beyond ``limit`` (default
    ``$PYWORKERS_SNAPSHOT_IMAGES`` or 24) in ``directory``; each is ~35 MiB and is rebuilt on
    demand. Returns the deleted paths. A module another process has loaded stays usable (its
    file is only unlinked)."""
    limit = limit if limit is not None else int(os.environ.get("PYWORKERS_SNAPSHOT_IMAGES", "24"))
    entries = []
    for manifest in directory.glob("snapshot-*.json"):
        cw = manifest.with_suffix(".cwasm")
        if cw == keep:
            continue
        try:
            entries.append((manifest.stat().st_mtime, manifest, cw))
        except OSError:
            continue
    entries.sort(reverse=True)
    removed = []
    for _mtime, manifest, cw in entries[max(0, limit - 1):]:
        for p in (manifest, cw, cw.with_suffix(HOT_PAGES_SUFFIX)):
            p.unlink(missing_ok=True)
        removed.append(cw)
    return removed


_restorers: dict[tuple, Restorer] = {}
_restorers_lock = threading.Lock()


def restore_isolate(path: str | os.PathLike, **kwargs: Any) -> Isolate:
    """Restore one isolate from ``path``. Keyword arguments go to :class:`Restorer` (layers,
    checks) and :meth:`Restorer.new_isolate` (``stdout``, ``stderr``, ``memory_limit``); the
    Restorer is cached per process by path and layers."""
    iso_kw = {k: kwargs.pop(k) for k in ("stdout", "stderr", "memory_limit", "reseed", "egress")
              if k in kwargs}
    key = (str(Path(path).resolve()), os.stat(path).st_mtime_ns, repr(sorted(kwargs.items(), key=str)))
    with _restorers_lock:
        r = _restorers.get(key)
        if r is None:
            r = Restorer(path, **kwargs)
            _restorers[key] = r
    return r.new_isolate(**iso_kw)
