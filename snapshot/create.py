"""``pyworkers snapshot create``: the three snapshot types from an app directory.

- ``baseline``: the runtime booted and the standard library modules a web app needs imported
  (no user files, no packages: shareable by every app on the release);
- ``package``: baseline plus the app's site-packages layer with every package's top-level
  modules imported (shareable by apps with the same lock);
- ``dedicated``: the app's whole top level executed and ``main`` built (what deploy takes).

The layer and the app copy come from the deploy pipeline (:func:`pyworkers.deploy.deploy`, run
into a temporary store unless one is given), so resolution, wheels and layers are the same
content-addressed ones a deploy uses.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

#: Standard-library modules imported into a baseline snapshot.
BASELINE_MODULES = ("asyncio", "json", "re", "typing", "dataclasses", "datetime", "decimal", "enum",
                    "functools", "http", "inspect", "io", "logging", "pathlib", "urllib.parse", "uuid",
                    "email.message", "base64", "hashlib", "collections", "contextlib", "traceback")


def top_level_modules(layer: str | os.PathLike) -> list[str]:
    """Importable top-level names of the distributions installed in ``layer``
    (``top_level.txt`` when present, else the first component of each ``RECORD`` path)."""
    layer = Path(layer)
    names: set[str] = set()
    for dist in layer.glob("*.dist-info"):
        tl = dist / "top_level.txt"
        if tl.exists():
            names.update(n.strip() for n in tl.read_text().splitlines() if n.strip())
            continue
        rec = dist / "RECORD"
        if not rec.exists():
            continue
        for line in rec.read_text().splitlines():
            first = line.split(",", 1)[0].split("/", 1)[0]
            if first.endswith((".dist-info", ".data")) or first in ("..", "__pycache__", "bin"):
                continue
            if first.endswith(".py"):
                names.add(first[:-3])
            elif "/" in line.split(",", 1)[0] and (layer / first / "__init__.py").exists():
                names.add(first)
    return sorted(n for n in names if n.isidentifier() and not n.startswith("_"))


def create_snapshot(app_dir: str | os.PathLike | None, snapshot_type: str, out: str | os.PathLike, *,
                    release: str | None = None, store: str | os.PathLike | None = None,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Create a snapshot of ``snapshot_type`` into ``out``; returns its metadata.

    ``app_dir`` is required for ``package`` and ``dedicated``. Raises ``ValueError`` for a bad
    type or a missing app directory, :class:`pyworkers.deploy.DeployError` when the app fails,
    and ``GuestError`` (with the guest traceback) when an import fails.
    """
    from pyworkers.runtime import Isolate
    from pyworkers.snapshot import SNAPSHOT_TYPES, take_snapshot

    say = progress or (lambda m: None)
    if snapshot_type not in SNAPSHOT_TYPES:
        raise ValueError(f"unknown snapshot type {snapshot_type!r}: use one of {', '.join(SNAPSHOT_TYPES)}")
    if snapshot_type == "baseline":
        selection = None
        if app_dir is not None and release is None:
            from pyworkers.config import load_worker_config

            selection = load_worker_config(Path(app_dir)).runtime_selection()
            release = selection.release.pyodide_version
        iso = Isolate(release)
        say(f"warming the standard library ({len(BASELINE_MODULES)} modules)")
        iso.run("\n".join(f"import {m}" for m in BASELINE_MODULES))
        return take_snapshot(iso, out, snapshot_type="baseline", selection=selection, progress=say)
    if app_dir is None:
        raise ValueError(f"a {snapshot_type} snapshot needs an app directory")
    from pyworkers.deploy import deploy
    from pyworkers.store import Store

    tmp = None
    if store is None:
        tmp = tempfile.TemporaryDirectory(prefix="pyworkers-snapshot-")
        store = tmp.name
    try:
        dep = deploy(app_dir, store=store, progress=say)
        rec = dep.record
        root = Path(Store(store).root)
        if snapshot_type == "dedicated":
            src = root / rec["snapshot"]["path"]
            tmp_out = Path(out).with_name(f".{Path(out).name}.tmp{os.getpid()}")
            shutil.copyfile(src, tmp_out)
            os.replace(tmp_out, out)
            return rec["snapshot"]["metadata"]
        from pyworkers.compat import RuntimeSelection

        sel = RuntimeSelection.from_json(rec["selection"])
        layer = root / rec["layer"]["path"] if rec.get("layer") else None
        iso = Isolate(sel.release, site_packages=layer)
        iso.run("\n".join(f"import {m}" for m in BASELINE_MODULES))
        mods = top_level_modules(layer) if layer else []
        say(f"importing {len(mods)} top-level package modules: {', '.join(mods)}")
        failed = []
        for m in mods:
            reply, _o, _e = iso.request({"op": "import", "name": m})
            if not reply.get("ok"):
                failed.append(f"{m} ({reply.get('type')}: {reply.get('message')})")
        if failed:
            say(f"skipped modules that do not import on their own: {'; '.join(failed)}")
        return take_snapshot(iso, out, snapshot_type="package", selection=sel,
                             layer_hash=rec["layer"]["hash"] if layer else None,
                             extra={"package_modules": [m for m in mods if not any(f.startswith(m + " ") for f in failed)]},
                             progress=say)
    finally:
        if tmp is not None:
            tmp.cleanup()
