"""The deploy's boot and snapshot stages: the isolate with the layer's packages imported
(:func:`package_isolate`, reusing the store's package snapshots), the check that the app's
import left no connection open, and the deployment's snapshot (:func:`take_deploy_snapshot`)."""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyworkers.deploy_errors import DeployError
from pyworkers.deploy_guest import in_app
from pyworkers.deploy_progress import DeployProgress
from pyworkers.store import Store

_SETUP = "import sys\nif '/app' not in sys.path:\n    sys.path.insert(0, '/app')\n"


#: Version of the package-snapshot key (bump when what goes into one changes).
PACKAGE_SNAPSHOT_FORMAT = 1


def package_isolate(st: Store, iso_kwargs: dict, layer_hash: str | None, layer: Path | None,
                    progress: DeployProgress) -> tuple[Any, str, dict | None]:
    """An isolate with the layer's packages imported but not the app, ``/app`` on ``sys.path``.

    The store keeps one *package snapshot* per (layer, runtime build, stdlib archive,
    environment, pyworkers' guest code) in ``package-snapshots/``: when it exists the isolate is restored from it in
    copy mode (no per-snapshot compile; ~0.1 s) instead of booting and importing every package
    again; otherwise the isolate is booted, the packages imported, and the package snapshot
    written (atomically) for the next deploy. Returns ``(isolate, summary, info)`` where
    ``info`` is ``{"path", "reused"}`` (``None`` without a layer).
    """
    from pyworkers.runtime import Isolate, Runtime
    from pyworkers.runtime.guestcode import guest_code_digest
    from pyworkers.snapshot import Restorer, SnapshotError, take_snapshot
    from pyworkers.snapshot.create import top_level_modules

    t0 = time.perf_counter()
    if layer is None:
        iso = Isolate(**iso_kwargs)
        iso.run(_SETUP, "<pyworkers deploy>")
        return iso, f"isolate up in {iso.timings.get('boot_ms', 0):.0f} ms", None
    rt = Runtime.get(iso_kwargs["release"], cache_dir=iso_kwargs.get("cache_dir"))
    key = hashlib.sha256(json.dumps({
        "format": PACKAGE_SNAPSHOT_FORMAT, "layer": layer_hash, "build": rt.installed.wasm_sha256,
        "stdlib": rt.stdlib_sha256, "env": iso_kwargs.get("env") or {},
        # the guest modules are imported in it: a pyworkers with other guest code takes it again
        "guest": guest_code_digest()}, sort_keys=True).encode()).hexdigest()
    path = st.root / "package-snapshots" / f"{key[:40]}.pyws"
    info = {"path": st.rel(path), "reused": False}
    if path.is_file():
        try:
            r = Restorer(path, site_packages=layer, mounts=iso_kwargs.get("mounts"), expect_type="package",
                         layer_hash=layer_hash, cache_dir=iso_kwargs.get("cache_dir"), copy=True)
            iso = r.new_isolate(stdout=iso_kwargs.get("stdout"), stderr=iso_kwargs.get("stderr"),
                                egress=iso_kwargs.get("egress"))
            iso.run(_SETUP + "import importlib\nimportlib.invalidate_caches()\n", "<pyworkers deploy>")
            info["reused"] = True
            return iso, (f"restored the layer's package snapshot in "
                         f"{(time.perf_counter() - t0) * 1000:.0f} ms"), info
        except SnapshotError as e:
            progress.note(f"package snapshot {path} is not usable ({e}); taking it again")
    iso = Isolate(**iso_kwargs)
    try:
        for m in top_level_modules(layer):
            iso.request({"op": "import", "name": m})  # a package that does not import alone is skipped
        path.parent.mkdir(parents=True, exist_ok=True)
        take_snapshot(iso, path, snapshot_type="package", layer_hash=layer_hash)
        iso.run(_SETUP, "<pyworkers deploy>")
    except BaseException:
        iso.close()
        raise
    return iso, (f"booted and imported the layer's packages in {time.perf_counter() - t0:.1f} s "
                 "(package snapshot taken for the next deploy)"), info


def check_no_open_connections(iso, app_copy: Path) -> None:
    """Fail the snapshot stage when the app's import left network connections open (they
    cannot be captured): name each destination and the module that opened it."""
    from pyworkers.runtime import net

    socks = net.open_sockets(iso.host)
    if not socks:
        return
    try:
        origins = iso.call("_pyworkers_guest:socket_origins")
    except Exception:  # noqa: BLE001 - the report is best effort
        origins = {}
    fd_of = {id(of): fd for fd, of in iso.host.fds.items()}
    parts = []
    for s in socks:
        mods = origins.get(fd_of.get(id(s), -1)) or []  # outermost caller first
        ours = [m for m in mods if in_app(app_copy, m)]
        if ours:
            last = max(i for i, m in enumerate(mods) if m == ours[-1])
            lib = next((m for m in mods[last + 1:] if m not in ours), None)
            who = (f"opened in app module {ours[-1]!r}, import chain {' -> '.join(ours)}"
                   + (f", through {lib}" if lib else ""))
        else:
            who = f"opened by {mods[-1]!r}" if mods else "opened at import time"
        parts.append(f"{s.destination or 'an unconnected socket'} ({who})")
    raise DeployError(
        "snapshot", f"the app's import left {len(socks)} network connection(s) open: "
        f"{'; '.join(parts)}. Connections cannot be captured in a snapshot: open them per "
        "request or in lifespan startup, and close them before the import ends")


def take_deploy_snapshot(iso, out_path: Path, *, selection, layer_hash: str | None,
                         app_hash: str, progress: DeployProgress,
                         snapshot_type: str = "dedicated") -> dict:
    """The snapshot step: write the snapshot of ``iso`` (for a dedicated one, the app's top
    level has run) to ``out_path`` and return its record (``{"path": <absolute>, "type":
    snapshot_type, "bytes", "sha256", "metadata"}``)."""
    from pyworkers.snapshot import take_snapshot

    layers = {"/app": f"app {app_hash}"}
    if layer_hash:
        layers[iso.runtime.site_packages_guest_path] = f"layer {layer_hash}"
    meta = take_snapshot(iso, out_path, snapshot_type=snapshot_type, selection=selection,
                layer_hash=layer_hash, app_hash=app_hash, layers=layers,
                progress=progress.status)
    if not out_path.is_file():
        raise DeployError("snapshot", f"take_snapshot returned but wrote no file at {out_path}")
    h = hashlib.sha256()
    with open(out_path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return {"path": out_path, "type": snapshot_type, "bytes": out_path.stat().st_size,
            "sha256": "sha256:" + h.hexdigest(), "metadata": _jsonable(meta or {})}


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, Path):
        return str(v)
    return repr(v)
