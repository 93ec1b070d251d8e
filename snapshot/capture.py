"""Capture: the state of a live isolate -> a snapshot file.

What is captured (see :mod:`pyworkers.snapshot.format` for the file layout):

- the whole linear memory image (includes every side module's data and heap);
- the main module's mutable globals (stack pointer, stack limits, relocated globals...), read
  through the ``__pyw_g<index>`` exports added at install time;
- the function table: its size and the provenance of every slot the host added
  (``Isolate.table_log``: trampolines, ``dlsym``/GOT function slots, ``ctypes``/libffi
  closures with their call layout);
- every loaded side module in load order: path, content hash, memory base/size, table
  base/size, dso handles, its own mutable globals; and the GOT (name -> value);
- host state: cwd, environment, the writable ``/tmp`` tree (with inode numbers, modes and
  times; files unlinked but still open too), open file descriptors (offsets, flags), the guest
  helper's dispatch object, the guest monotonic clock and entropy use;
- metadata binding it to what it can run on: format version, release, the prepared module's
  hash, wasmtime version and engine fingerprint, layer and app hashes, snapshot type, the
  runtime selection, creation time; ``asgi_app`` (``{"main", "path"}``) when the guest ASGI
  adapter has that app loaded (:func:`loaded_app`: a restore need not load it again).
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import wasmtime

from pyworkers.runtime import vfs as V
from pyworkers.runtime.engine import config_fingerprint, wasmtime_version
from pyworkers.runtime.wasmbin import GLOBAL_EXPORT_PREFIX
from pyworkers.snapshot.format import FORMAT_VERSION, write_snapshot

SNAPSHOT_TYPES = ("baseline", "package", "dedicated")


def _global_value(v: Any) -> Any:
    return v if not isinstance(v, float) else float(v)


def _node_meta(node: V.Node) -> dict:
    return {"ino": node.ino, "mode": node.mode, "mtime": node.mtime}


def _tmp_tree(node: V.MemDir) -> dict:
    """The writable tree: per entry its data (``file``, base64) or children (``dir``) and its
    inode number, permission bits and modification time (a restore gives them back: SQLite,
    for one, refuses to write a database whose inode changed)."""
    out: dict[str, Any] = {}
    for name, child in node.children.items():
        if isinstance(child, V.MemDir):
            out[name] = {"dir": _tmp_tree(child), **_node_meta(child)}
        elif isinstance(child, V.MemFile):
            out[name] = {"file": base64.b64encode(bytes(child.data)).decode(), **_node_meta(child)}
    return out


def host_state(iso) -> dict:
    """The host side of an isolate as JSON-able data."""
    fs, host = iso.fs, iso.host
    open_files: dict[int, int] = {}
    fds = {}
    files = []
    orphans = []
    for fd, of in sorted(host.fds.items()):
        if isinstance(of, str):
            fds[str(fd)] = {"stdio": of}
            continue
        if not hasattr(of, "node"):  # a host stream (serve channel, socket)
            from pyworkers.snapshot.format import SnapshotError
            dest = getattr(of, "destination", None)
            what = f"{type(of).__name__}" + (f" connected to {dest}" if dest else "")
            raise SnapshotError(f"fd {fd} is a host stream ({what}) open at snapshot "
                                "time: connections cannot be captured; open it after start-up")
        key = id(of)
        if key not in open_files:
            open_files[key] = len(files)
            entry = {"path": of.path, "flags": of.flags, "pos": of.pos, "refs": of.refs}
            node = of.node
            if node.writable and getattr(node, "fs", None) is fs.tmpfs:
                entry["ino"] = node.ino  # /tmp nodes are reopened by identity, not by name
                if isinstance(node, V.MemFile) and node.nlink == 0 \
                        and all(o["ino"] != node.ino for o in orphans):
                    orphans.append({"file": base64.b64encode(bytes(node.data)).decode(),
                                    **_node_meta(node)})
            files.append(entry)
        fds[str(fd)] = {"file": open_files[key]}
    return {
        "cwd": fs.cwd,
        "environ": dict(host.environ),
        "tmp": _tmp_tree(fs.root.children["tmp"]),  # type: ignore[arg-type]
        "tmp_cap": fs.tmpfs.cap,
        "tmp_root": _node_meta(fs.root.children["tmp"]),
        "tmp_next_ino": fs.tmpfs.next_ino,
        "tmp_orphans": orphans,
        "fds": fds,
        "files": files,
        "dispatch": iso._dispatch,
        "cstrs": dict(iso._cstrs),
        "count_args_ptr": iso._count_args_ptr,
        "monotonic_ns": host.monotonic_ns(),
        "entropy_calls": host.entropy_calls,
        "entropy_bytes": host.entropy_bytes,
        "guest_protocol": getattr(iso, "guest_protocol", 1),
    }


def capture_state(iso) -> tuple[bytes, dict]:
    """``(memory image, state)`` of a live, idle isolate (no request in flight)."""
    rt = iso.runtime
    store = iso.store
    globals_ = {}
    for idx in rt.mutable_globals:
        globals_[str(idx)] = _global_value(iso._export(f"{GLOBAL_EXPORT_PREFIX}{idx}").value(store))
    libs = []
    for lib in iso.linker.loaded:
        lg = {}
        for name, ex in lib.instance.exports(store).items():
            if name.startswith(GLOBAL_EXPORT_PREFIX) and isinstance(ex, wasmtime.Global):
                lg[name[len(GLOBAL_EXPORT_PREFIX):]] = _global_value(ex.value(store))
        libs.append({"path": lib.name, "sha256": lib.sha256, "memory_base": lib.memory_base,
                     "memory_size": lib.memory_size, "table_base": lib.table_base,
                     "table_size": lib.table_size, "handles": lib.handles, "global": lib.is_global,
                     "globals": lg})
    state = {
        "globals": globals_,
        "table": {"size": iso.table.size(store), "log": [[i, list(o)] for i, o in iso.table_log]},
        "libs": libs,
        "got": {name: g.value(store) for name, g in iso.linker.got.items()},
        "got_required": sorted(iso.linker.got_required),
        "func_slots": [[owner, name, idx] for (owner, name), idx in iso.linker.func_slots.items()],
        "host": host_state(iso),
    }
    image = iso.mem.read(0, iso.memory_size())
    return image, state


def loaded_app(iso) -> dict | None:
    """``{"main": "module:attribute", "path": "/app"}`` when ``iso``'s guest ASGI adapter has
    that app loaded (the isolate's :attr:`~pyworkers.runtime.isolate.Isolate.loaded_app`,
    checked in the guest: the adapter's app is the object ``main`` names and ``path`` is on
    ``sys.path``), else ``None`` (no load yet, a guest helper too old to check, or guest code
    changed the app since)."""
    app = getattr(iso, "loaded_app", None)
    if app is None or getattr(iso, "guest_protocol", 1) < 2:
        return None
    main, path = app
    if iso.call("_pyworkers_guest:app_loaded", main, path) is not True:
        return None
    return {"main": main, "path": path}


def take_snapshot(iso, out_path: str | os.PathLike, *, snapshot_type: str = "dedicated",
                  selection: Any = None, layer_hash: str | None = None, app_hash: str | None = None,
                  layers: dict[str, str] | None = None, extra: dict | None = None,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Snapshot ``iso`` (idle, between requests) into ``out_path`` atomically.

    ``snapshot_type`` is ``baseline``, ``package`` or ``dedicated``; ``selection`` a
    ``RuntimeSelection`` (recorded as JSON); ``layer_hash``/``app_hash`` identify the
    site-packages layer and the app files a restore must mount; ``layers`` maps guest paths of
    read-only layers to a description (recorded for humans). Returns the metadata written,
    including ``sizes`` (bytes) and ``timings`` (ms). Raises ``ValueError`` for an unknown type
    or a dead isolate.
    """
    if snapshot_type not in SNAPSHOT_TYPES:
        raise ValueError(f"unknown snapshot type {snapshot_type!r}: use one of {', '.join(SNAPSHOT_TYPES)}")
    if iso.dead:
        raise ValueError(f"cannot snapshot a dead isolate ({iso.dead})")
    t0 = time.perf_counter()
    asgi_app = loaded_app(iso)
    reply, _out, _err = iso.request({"op": "prepare_snapshot"})
    with iso._entered():
        image, state = capture_state(iso)
    t1 = time.perf_counter()
    rt = iso.runtime
    meta = {
        "format_version": FORMAT_VERSION,
        "snapshot_type": snapshot_type,
        "release": rt.release.pyodide_version,
        "python_version": rt.release.python_version,
        "build_sha256": rt.installed.wasm_sha256,
        "stdlib_sha256": rt.stdlib_sha256,
        "wasmtime_version": wasmtime_version(),
        "engine": config_fingerprint(),
        "layer_hash": layer_hash,
        "app_hash": app_hash,
        "layers": {k: v for k, v in (layers or {}).items()},
        "selection": selection.to_json() if hasattr(selection, "to_json") else selection,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "memory_size": len(image),
        "side_modules": [{k: lib[k] for k in ("path", "sha256", "memory_base", "table_base")}
                         for lib in state["libs"]],
        "entropy": {"calls": state["host"]["entropy_calls"], "bytes": state["host"]["entropy_bytes"]},
        **(extra or {}),
    }
    if asgi_app is not None:
        meta["asgi_app"] = asgi_app
    if progress:
        progress(f"captured {len(image) / 2**20:.1f} MiB of linear memory in {(t1 - t0) * 1000:.0f} ms")
    meta = write_snapshot(out_path, meta, {
        "memory": (image, True),
        "state": (json.dumps(state, sort_keys=True).encode(), True),
    })
    t2 = time.perf_counter()
    size = Path(out_path).stat().st_size
    if progress:
        progress(f"wrote {out_path} ({size / 2**20:.1f} MiB, zstd) in {(t2 - t1) * 1000:.0f} ms")
    meta["sizes"] = {"memory_raw": len(image), "file": size,
                     "memory_compressed": next(s["length"] for s in meta["sections"] if s["name"] == "memory")}
    meta["timings"] = {"capture_ms": round((t1 - t0) * 1000, 1), "write_ms": round((t2 - t1) * 1000, 1)}
    return meta
