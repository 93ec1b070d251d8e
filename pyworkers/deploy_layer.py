"""The deploy's site-packages layer: its content address (:func:`layer_hash`) and
:func:`build_layer`, which installs (or reuses) the layer of a set of wheels."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Version of the layer key (bump when the layer's layout changes).
LAYER_FORMAT = 2  # 2: layers carry the guest's bytecode (__pycache__)


def layer_hash(wheels: Sequence[Any]) -> str:
    """Content address of a site-packages layer: ``"sha256:<hex>"`` over :data:`LAYER_FORMAT`
    and the sorted ``(name, version, sha256)`` of its wheels (``PinnedWheel`` objects). The
    layer's files depend on nothing else, so equal hashes mean interchangeable layers."""
    doc = {"format": LAYER_FORMAT,
           "wheels": sorted([w.name, w.version, w.sha256] for w in wheels)}
    return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Layer:
    """A site-packages layer made by :func:`build_layer`."""

    hash: str  #: :func:`layer_hash` of its wheels
    path: Path  #: where it is now (to mount as site-packages)
    reused: bool  #: it already existed in ``layers_dir``
    unresolved_libraries: dict  #: ``{so: [lib]}`` of a new layer; ``{}`` when reused


def build_layer(wheels: Sequence[Any], layers_dir: Path, *, release: Any,
                staging_dir: Path | None = None, progress: Any = None) -> Layer:
    """The site-packages layer of ``wheels`` (downloaded ``CachedWheel`` objects), kept in
    ``layers_dir`` under the hex of its :func:`layer_hash`.

    An existing ``layers_dir/<hex>`` is reused. Otherwise the wheels are installed
    (:func:`pyworkers.packages.install_layer`) into ``staging_dir`` when given (a store's
    staging area, published later), else into ``layers_dir/<hex>`` itself, under a file lock
    (processes building the same layer wait for each other). A new layer then gets the
    bytecode of its modules, compiled by ``release``'s own CPython
    (:func:`pyworkers.runtime.bytecode.precompile_layer`: sandbox imports do not compile).
    Raises ``pyworkers.packages.PackagesError``.
    """
    from pyworkers.packages import install_layer

    lh = layer_hash([c.wheel for c in wheels])
    dest = Path(layers_dir) / lh.partition(":")[2]
    if dest.is_dir():
        return Layer(lh, dest, True, {})
    from pyworkers.runtime.bytecode import precompile_layer

    note = getattr(progress, "note", None)
    if staging_dir is not None:
        inst = install_layer(wheels, staging_dir, progress=progress)
        precompile_layer(staging_dir, release, progress=note)
        return Layer(lh, Path(staging_dir), False, inst.unresolved_libraries)
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{dest}.lock"):
        if dest.is_dir():  # built meanwhile by another process
            return Layer(lh, dest, True, {})
        tmp = dest.with_name(dest.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        inst = install_layer(wheels, tmp, progress=progress)
        precompile_layer(tmp, release, progress=note)
        os.replace(tmp, dest)
    return Layer(lh, dest, False, inst.unresolved_libraries)


def tree_size(root: Path) -> tuple[int, int]:
    """``(files, bytes)`` under ``root`` (symbolic links counted by their own size)."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, n)).st_size
    return files, size
