"""Verify a published deployment's files against its record, before anything trusts them.

:func:`verify_deployment` re-checks what a deployment needs to be served:

- the record (``deployment.json``) is readable and names its worker;
- the snapshot file: size and whole-file sha256 as recorded, then the file's own header and
  per-section checksums (:meth:`pyworkers.snapshot.format.SnapshotFile.verify_checksums`) and
  that it was taken for this deployment's layer and app hashes;
- the app copy: every file re-hashed, the tree hash recomputed exactly as
  :func:`pyworkers.app_files.copy_app` made it (relative POSIX path + sha256, walk order), file
  count and bytes as recorded;
- the site-packages layer: present, a layer manifest, and every file listed in each
  ``*.dist-info/RECORD`` with the recorded sha256 and size (PEP 376/427's RECORD);
- the lock file exists when the record has one.

It reads files in 1 MiB chunks (host memory stays flat) and never raises for a damaged
deployment: it returns a list of :class:`Problem` (empty: the deployment verifies). The serve
layer can call it before switching to a deployment; ``deployments rollback`` refuses a target
that does not verify; ``pyworkers deployments verify`` prints the problems.
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import os
from pathlib import Path

__all__ = ["Problem", "verify_deployment", "verify_loaded"]

CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a deployment: ``part`` (``record``, ``snapshot``, ``app``,
    ``layer``, ``lock``), ``path`` (the file or directory, absolute) and a one-line
    ``message``."""

    part: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.part}: {self.path}: {self.message}"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def verify_deployment(store, ref: str) -> list[Problem]:
    """Check deployment ``ref`` (an id, a unique id prefix or a worker name) of ``store`` (a
    :class:`pyworkers.store.Store`). Returns the problems found, ``[]`` when it verifies; a
    deployment that cannot even be found or read is one ``record`` problem."""
    from pyworkers.store import StoreError

    try:
        dep = store.get(ref)
    except StoreError as e:
        return [Problem("record", str(store.root / "deployments" / ref), str(e))]
    except (OSError, KeyError, TypeError, ValueError) as e:
        return [Problem("record", str(store.root / "deployments" / ref), f"unreadable record ({e})")]
    return verify_loaded(dep)


def verify_loaded(dep) -> list[Problem]:
    """:func:`verify_deployment` for an already loaded :class:`pyworkers.store.Deployment`."""
    problems: list[Problem] = []
    rec = dep.record
    for key in ("id", "name", "app", "selection"):
        if key not in rec:
            problems.append(Problem("record", str(dep.dir / "deployment.json"), f"lacks {key!r}"))
    if problems:
        return problems
    for check in (_check_snapshot, _check_app, _check_layer, _check_lock):
        try:
            problems += check(dep)
        except (OSError, KeyError, TypeError, ValueError) as e:  # a damaged record or file
            problems.append(Problem(check.__name__[len("_check_"):], str(dep.dir),
                                    f"cannot be checked: {type(e).__name__}: {e}"))
    return problems


def _check_snapshot(dep) -> list[Problem]:
    snap = dep.record.get("snapshot")
    if not snap:
        return []
    path = dep.snapshot_path
    if not path.is_file():
        return [Problem("snapshot", str(path), "missing")]
    out = []
    digest, size = _sha256_file(path)
    if snap.get("bytes") is not None and size != snap["bytes"]:
        out.append(Problem("snapshot", str(path), f"{size} bytes, the record says {snap['bytes']}"))
    want = str(snap.get("sha256") or "")
    if want and want.removeprefix("sha256:") != digest:
        out.append(Problem("snapshot", str(path), f"sha256 {digest[:16]}... differs from the "
                                                  f"record's {want.removeprefix('sha256:')[:16]}..."))
    from pyworkers.snapshot.format import SnapshotError, read_snapshot

    try:
        sf = read_snapshot(path)
        sf.verify_checksums()
    except SnapshotError as e:
        msg = str(e)
        out.append(Problem("snapshot", str(path), msg.split(": ", 1)[1] if msg.startswith(str(path)) else msg))
        return out
    meta = sf.metadata
    layer = dep.record.get("layer")
    if meta.get("app_hash") not in (None, dep.record["app"]["hash"]):
        out.append(Problem("snapshot", str(path), "taken for another app copy "
                                                  f"({str(meta.get('app_hash'))[:23]}...)"))
    if layer and meta.get("layer_hash") not in (None, layer["hash"]):
        out.append(Problem("snapshot", str(path), "taken for another layer "
                                                  f"({str(meta.get('layer_hash'))[:23]}...)"))
    return out


def _check_app(dep) -> list[Problem]:
    app = dep.record["app"]
    root = dep.app_dir
    if not root.is_dir():
        return [Problem("app", str(root), "missing")]
    out: list[Problem] = []
    entries: list[tuple[str, str]] = []
    total = 0

    def walk(d: Path, rel: str) -> None:
        nonlocal total
        for name in sorted(os.listdir(d)):
            p = d / name
            r = f"{rel}{name}"
            if p.is_symlink():
                out.append(Problem("app", str(p), "is a symbolic link (the copy holds none)"))
            elif p.is_dir():
                walk(p, r + "/")
            elif p.is_file():
                digest, n = _sha256_file(p)
                entries.append((r, digest))
                total += n

    walk(root, "")
    h = hashlib.sha256()
    for r, digest in entries:
        h.update(r.encode() + b"\0" + digest.encode() + b"\n")
    got = "sha256:" + h.hexdigest()
    if got != app.get("hash"):
        out.append(Problem("app", str(root), f"content hash {got[:23]}... differs from the record's "
                                             f"{str(app.get('hash'))[:23]}... ({len(entries)} files, "
                                             f"{total} bytes; recorded {app.get('files')}, {app.get('bytes')})"))
    return out


def _check_layer(dep) -> list[Problem]:
    layer = dep.record.get("layer")
    if not layer:
        return []
    root = dep.layer_dir
    if not root.is_dir():
        return [Problem("layer", str(root), "missing")]
    out: list[Problem] = []
    if not (root / ".pyworkers-layer.json").is_file():
        out.append(Problem("layer", str(root), "has no .pyworkers-layer.json manifest"))
    records = sorted(root.glob("*.dist-info/RECORD"))
    if not records:
        out.append(Problem("layer", str(root), "has no *.dist-info/RECORD: cannot check its files"))
    for rec_path in records:
        try:
            rows = list(csv.reader(io.StringIO(rec_path.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            out.append(Problem("layer", str(rec_path), f"unreadable ({e})"))
            continue
        for row in rows:
            if len(row) < 2 or not row[1]:
                continue
            p = root / row[0]
            algo, _, want = row[1].partition("=")
            if algo != "sha256":
                continue
            if not p.is_file():
                out.append(Problem("layer", str(p), f"missing (listed in {rec_path.relative_to(root)})"))
                continue
            digest, n = _sha256_file(p)
            got = base64.urlsafe_b64encode(bytes.fromhex(digest)).rstrip(b"=").decode()
            if got != want or (len(row) > 2 and row[2].isdigit() and int(row[2]) != n):
                out.append(Problem("layer", str(p), f"differs from {rec_path.relative_to(root)} "
                                                    "(sha256 or size)"))
    return out


def _check_lock(dep) -> list[Problem]:
    path = dep.lock_path
    if path is not None and not path.is_file():
        return [Problem("lock", str(path), "missing")]
    return []
