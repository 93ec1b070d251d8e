"""A deployment as an OCI artifact: push it from a store, pull it into another.

Layout (OCI image manifest v1.1 used for an artifact, as its "Guidelines for Artifact Usage"
recommend: ``artifactType`` set, the empty config descriptor)::

    {"schemaVersion": 2,
     "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.pyworkers.deployment.v1",
     "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": <sha256 of {}>,
                "size": 2},
     "layers": [<descriptor per part, in this order>],
     "annotations": {"org.opencontainers.image.created": <record "created">,
                     "io.pyworkers.deployment.id": <id>, "io.pyworkers.worker": <name>,
                     "io.pyworkers.runtime": <Pyodide version>}}

==========================================================  ===================================
layer media type                                            content
==========================================================  ===================================
``application/vnd.pyworkers.deployment.record.v1+json``     ``deployment.json`` as stored
``application/vnd.pyworkers.app.v1.tar+zstd``               the app copy (``app/``)
``application/vnd.pyworkers.lock.v1+toml``                  ``pylock.toml`` (if the app has one)
``application/vnd.pyworkers.site-packages.v1.tar+zstd``     the site-packages layer (if any)
``application/vnd.pyworkers.snapshot.v1``                   ``snapshot.bin`` (if one was taken;
                                                            its sections are zstd already)
==========================================================  ===================================

Each descriptor carries ``org.opencontainers.image.title`` (the file name) and, for the app and
the site-packages layer, ``io.pyworkers.hash`` (the store's content hash of that part).

Tarballs are reproducible so that equal content gives an equal digest and a registry stores and
a push uploads it once: entries in sorted (depth-first, by name) order, POSIX pax format, owner
0:0 with empty names, modes 0644/0755. The app's tar has mtime 0 (its hash covers content only);
the site-packages tar keeps each file's mtime in whole seconds, because the layer's ``.pyc``
files are validated against their source's mtime (:mod:`pyworkers.runtime.bytecode`). zstd
level 3, one frame, no content size.

Pulling checks every blob's sha256 (and size) as it streams (:meth:`RegistryClient.get_blob`),
the manifest's digest, and then the record against what arrived: the app's content hash is
recomputed (the algorithm of :func:`pyworkers.deploy.copy_app`), the snapshot's sha256 must be
the record's, the record's paths must be the store's canonical ones. Archives are unpacked with
``tarfile``'s ``data`` filter (no absolute paths, no ``..``, no links leading out, no devices).
The deployment is published with :meth:`pyworkers.store.Store.publish` (atomic: a pull that
fails or is killed leaves the store as it was); one already in the store is not pulled again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard

from pyworkers.registry.client import OCI_MANIFEST, RegistryClient, sha256_bytes, sha256_file
from pyworkers.registry.errors import DigestMismatch, RegistryError
from pyworkers.registry.reference import DIGEST_RE, Reference
from pyworkers.store import RECORD, RECORD_FORMAT, Deployment, Store, StoreError

__all__ = ["ARTIFACT_TYPE", "MEDIA_TYPES", "PushResult", "PullResult", "push_deployment",
           "pull_deployment", "fetch_manifest", "prepare_snapshot", "tree_hash"]

ARTIFACT_TYPE = "application/vnd.pyworkers.deployment.v1"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY_DATA = b"{}"
#: role -> layer media type (see the module docstring).
MEDIA_TYPES = {
    "record": "application/vnd.pyworkers.deployment.record.v1+json",
    "app": "application/vnd.pyworkers.app.v1.tar+zstd",
    "lock": "application/vnd.pyworkers.lock.v1+toml",
    "site-packages": "application/vnd.pyworkers.site-packages.v1.tar+zstd",
    "snapshot": "application/vnd.pyworkers.snapshot.v1",
}
_ROLE_OF = {v: k for k, v in MEDIA_TYPES.items()}
TITLE = "org.opencontainers.image.title"
SNAPSHOT_FILE = "snapshot.bin"
LOCK_FILE = "pylock.toml"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Largest record blob accepted (bytes).
MAX_RECORD = 16 << 20
#: Largest manifest accepted (bytes).
MAX_MANIFEST = 4 << 20
ZSTD_LEVEL = 3


# --------------------------------------------------------------------------- tarballs

def _entries(root: Path, rel: str = "") -> list[tuple[str, Path]]:
    out = []
    for child in sorted((root / rel).iterdir() if rel else root.iterdir(), key=lambda p: p.name):
        r = f"{rel}{child.name}"
        out.append((r, child))
        if child.is_dir() and not child.is_symlink():
            out += _entries(root, r + "/")
    return out


def write_tarball(src: Path, out: Path, *, keep_mtime: bool) -> None:
    """Write the reproducible ``tar+zstd`` of directory ``src`` to ``out`` (layout: module
    docstring). Raises ``OSError``; files other than regular files, directories and symbolic
    links are refused with :class:`RegistryError`."""
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    with open(out, "wb") as f, cctx.stream_writer(f, closefd=False) as zw, \
            tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in _entries(src):
            st = os.lstat(path)
            ti = tarfile.TarInfo(rel)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mtime = int(st.st_mtime) if keep_mtime else 0
            if stat.S_ISLNK(st.st_mode):
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
                tar.addfile(ti)
            elif stat.S_ISDIR(st.st_mode):
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            elif stat.S_ISREG(st.st_mode):
                ti.size = st.st_size
                ti.mode = 0o755 if st.st_mode & 0o111 else 0o644
                with open(path, "rb") as fh:
                    tar.addfile(ti, fh)
            else:
                raise RegistryError(f"{path}: not a regular file, directory or link: cannot "
                                    "be pushed")


def extract_tarball(blob: Path, dest: Path) -> None:
    """Unpack a ``tar+zstd`` blob into ``dest`` (created) with ``tarfile``'s ``data`` filter.
    Raises :class:`RegistryError` for an archive that is not one or that tries to escape."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with open(blob, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as zr, \
                tarfile.open(fileobj=zr, mode="r|") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as e:
        raise RegistryError(f"{blob.name}: not a valid tar+zstd archive ({e})") from None


def tree_hash(root: Path) -> str:
    """``"sha256:<hex>"`` over every file under ``root``: relative POSIX path and sha256 of
    content, depth-first in name order (the app hash of :func:`pyworkers.deploy.copy_app`)."""
    h = hashlib.sha256()
    for rel, path in _entries(root):
        if path.is_file() and not path.is_symlink():
            h.update(rel.encode() + b"\0" + sha256_file(path)[0][7:].encode() + b"\n")
    return "sha256:" + h.hexdigest()


# --------------------------------------------------------------------------- push

@dataclasses.dataclass
class _Blob:
    role: str
    media_type: str
    digest: str
    size: int
    source: bytes | Path
    annotations: dict

    def descriptor(self) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = self.annotations
        return d


def _file_blob(role: str, path: Path, title: str, extra: dict | None = None) -> _Blob:
    digest, size = sha256_file(path)
    return _Blob(role, MEDIA_TYPES[role], digest, size, path, {TITLE: title, **(extra or {})})


@dataclasses.dataclass
class PushResult:
    """What :func:`push_deployment` did: ``reference`` (``oci://host/repo:tag``), ``digest``
    (of the manifest), ``deployment`` (id), ``blobs`` (``[{"role", "mediaType", "digest",
    "size", "uploaded": bool}]``, config included as role ``"config"``), ``uploaded_bytes``
    and ``seconds`` (wall time, including building the tarballs)."""

    reference: str
    digest: str
    deployment: str
    blobs: list[dict]
    uploaded_bytes: int
    seconds: float

    def to_json(self) -> dict:
        """A JSON-ready dict of the fields."""
        return dataclasses.asdict(self)


def _blobs_of(dep: Deployment, tmp: Path) -> list[_Blob]:
    rec = dep.record
    record_bytes = (dep.dir / RECORD).read_bytes()
    blobs = [_Blob("record", MEDIA_TYPES["record"], sha256_bytes(record_bytes), len(record_bytes),
                   record_bytes, {TITLE: RECORD})]
    app_tar = tmp / "app.tar.zst"
    write_tarball(dep.app_dir, app_tar, keep_mtime=False)
    blobs.append(_file_blob("app", app_tar, "app.tar.zst", {"io.pyworkers.hash": rec["app"]["hash"]}))
    if dep.lock_path is not None:
        blobs.append(_file_blob("lock", dep.lock_path, LOCK_FILE))
    if dep.layer_dir is not None:
        layer_tar = tmp / "site-packages.tar.zst"
        write_tarball(dep.layer_dir, layer_tar, keep_mtime=True)
        blobs.append(_file_blob("site-packages", layer_tar, "site-packages.tar.zst",
                                {"io.pyworkers.hash": rec["layer"]["hash"]}))
    if dep.snapshot_path is not None:
        blobs.append(_file_blob("snapshot", dep.snapshot_path, SNAPSHOT_FILE))
    return blobs


def push_deployment(client: RegistryClient, ref: Reference, dep: Deployment, *,
                    progress: Callable[[str], None] | None = None) -> PushResult:
    """Push deployment ``dep`` to ``ref``'s repository and point ``ref.tag`` (default: the
    worker's name) at it.

    Every blob is checked with ``HEAD`` first and uploaded only when the registry lacks it, so
    parts shared with earlier pushes (the site-packages layer, an unchanged app or lock) cost
    one request each. Raises :class:`RegistryError` (and its subclasses) naming the registry.
    """
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    if ref.digest:
        raise RegistryError(f"{ref}: push to a tag (oci://HOST/REPO:TAG), not to a digest")
    ref = ref if ref.tag else ref.with_tag(dep.name)
    with tempfile.TemporaryDirectory(prefix="pyworkers-push-") as td:
        blobs = _blobs_of(dep, Path(td))
        config = _Blob("config", EMPTY_CONFIG, sha256_bytes(EMPTY_DATA), len(EMPTY_DATA),
                       EMPTY_DATA, {})
        rows = []
        uploaded = 0
        for b in [config, *blobs]:
            have = client.blob_exists(ref.repository, b.digest)
            if not have:
                say(f"uploading {b.role} ({b.size} bytes, {b.digest[:19]})")
                client.upload_blob(ref.repository, b.digest, b.size, b.source)
                uploaded += b.size
            else:
                say(f"{b.role} already in the registry ({b.digest[:19]})")
            rows.append({"role": b.role, "mediaType": b.media_type, "digest": b.digest,
                         "size": b.size, "uploaded": not have})
    rec = dep.record
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": config.descriptor(),
        "layers": [b.descriptor() for b in blobs],
        "annotations": {"org.opencontainers.image.created": rec["created"],
                        "io.pyworkers.deployment.id": dep.id,
                        "io.pyworkers.worker": dep.name,
                        "io.pyworkers.runtime": rec["selection"]["pyodide_version"]},
    }
    data = json.dumps(manifest, separators=(",", ":")).encode()
    digest = client.put_manifest(ref.repository, ref.tag, data)
    say(f"{ref} -> {digest}")
    return PushResult(str(ref), digest, dep.id, rows, uploaded,
                      round(time.perf_counter() - t0, 3))


# --------------------------------------------------------------------------- pull

def fetch_manifest(client: RegistryClient, ref: Reference) -> tuple[dict, str]:
    """``(manifest, digest)`` of ``ref`` (its digest if given, else its tag), checked to be a
    pyworkers deployment with well-formed descriptors. Raises :class:`RegistryError`."""
    if not ref.reference:
        raise RegistryError(f"{ref}: give a tag or a digest (oci://HOST/REPO:TAG or "
                            "oci://HOST/REPO@sha256:...)")
    data, digest = client.get_manifest(ref.repository, ref.reference)
    if len(data) > MAX_MANIFEST:
        raise RegistryError(f"{ref}: manifest of {len(data)} bytes is too large")
    try:
        m = json.loads(data)
    except ValueError:
        raise RegistryError(f"{ref}: the manifest is not JSON") from None
    kind = m.get("artifactType") or (m.get("config") or {}).get("mediaType")
    if m.get("schemaVersion") != 2 or kind != ARTIFACT_TYPE:
        raise RegistryError(f"{ref} is not a pyworkers deployment (artifact type {kind!r}, "
                            f"expected {ARTIFACT_TYPE})")
    seen = set()
    for d in m.get("layers") or []:
        role = _ROLE_OF.get(d.get("mediaType"))
        if role is None:
            raise RegistryError(f"{ref}: unknown layer media type {d.get('mediaType')!r}: a newer "
                                "pyworkers pushed it; upgrade pyworkers")
        if role in seen or not DIGEST_RE.fullmatch(str(d.get("digest"))) \
                or not isinstance(d.get("size"), int) or d["size"] < 0:
            raise RegistryError(f"{ref}: malformed {role} descriptor in the manifest")
        seen.add(role)
    for role in ("record", "app"):
        if role not in seen:
            raise RegistryError(f"{ref}: the manifest has no {role} layer")
    return m, digest


def _layer(m: dict, role: str) -> dict | None:
    return next((d for d in m["layers"] if d["mediaType"] == MEDIA_TYPES[role]), None)


def _check_record(rec: Any, ref: Reference) -> None:
    bad = f"{ref}: the deployment record "
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise RegistryError(bad + f"has format {rec.get('format') if isinstance(rec, dict) else None!r}, "
                            f"this pyworkers reads {RECORD_FORMAT}: use a matching version")
    dep_id, name = rec.get("id"), rec.get("name")
    if not isinstance(dep_id, str) or not _ID_RE.fullmatch(dep_id) or not isinstance(name, str) \
            or not _NAME_RE.fullmatch(name) or not dep_id.startswith(name + "-"):
        raise RegistryError(bad + f"has an invalid id/name ({dep_id!r}, {name!r})")
    want = {"app": f"deployments/{dep_id}/app", "lock": f"deployments/{dep_id}/{LOCK_FILE}",
            "snapshot": f"deployments/{dep_id}/{SNAPSHOT_FILE}"}
    for key, path in want.items():
        part = rec.get(key)
        if part is not None and (not isinstance(part, dict) or part.get("path") != path):
            raise RegistryError(bad + f"names {key} path {part.get('path') if isinstance(part, dict) else part!r}, "
                                f"expected {path}")
    if not isinstance(rec.get("app"), dict) or not str(rec["app"].get("hash", "")).startswith("sha256:"):
        raise RegistryError(bad + "has no app hash")
    layer = rec.get("layer")
    if layer is not None:
        h = str(layer.get("hash", ""))
        if not DIGEST_RE.fullmatch(h) or layer.get("path") != f"layers/{h[7:]}":
            raise RegistryError(bad + f"names an invalid layer ({h!r}, {layer.get('path')!r})")


@dataclasses.dataclass
class PullResult:
    """What :func:`pull_deployment` did: ``deployment`` (the local :class:`Deployment`),
    ``digest`` (manifest), ``pulled`` (``False`` when the store had it already), ``current``
    (whether it is its worker's current deployment now), ``blobs`` (``[{"role", "digest",
    "size", "downloaded": bool}]``), ``downloaded_bytes``, ``seconds`` (wall time)."""

    deployment: Deployment
    digest: str
    pulled: bool
    current: bool
    blobs: list[dict]
    downloaded_bytes: int
    seconds: float

    def to_json(self) -> dict:
        """A JSON-ready dict (the deployment as its id and worker name)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "deployment"}
        return {"deployment": self.deployment.id, "name": self.deployment.name, **d}


def _download(client: RegistryClient, repo: str, desc: dict, out: Path) -> int:
    try:
        with open(out, "wb") as f:
            return client.get_blob(repo, desc["digest"], f, size=desc["size"])
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def prepare_snapshot(record: dict, app_dir: Path, layer_dir: Path | None, snapshot: Path,
                     cache_dir: str | os.PathLike | None = None) -> float:
    """Check that the snapshot restores on this machine and build its image module (the
    per-machine compile :class:`pyworkers.snapshot.Restorer` caches), so that serving the
    deployment starts warm. Returns the milliseconds it took. Raises :class:`RegistryError`
    when the snapshot was made for another wasmtime, engine configuration, runtime build,
    layer or app."""
    from pyworkers.snapshot import Restorer, SnapshotError

    t0 = time.perf_counter()
    layer = record.get("layer")
    try:
        Restorer(snapshot, site_packages=layer_dir, mounts={"/app": app_dir},
                 expect_type=record["snapshot"]["type"], layer_hash=layer["hash"] if layer else None,
                 app_hash=record["app"]["hash"], cache_dir=cache_dir)
    except SnapshotError as e:
        raise RegistryError(f"deployment {record['id']}: its snapshot does not restore on this "
                            f"machine ({e})") from None
    return (time.perf_counter() - t0) * 1000


def pull_deployment(client: RegistryClient, ref: Reference, store: Store, *,
                    make_current: bool = True, prepare: bool = True,
                    cache_dir: str | os.PathLike | None = None, expect_name: str | None = None,
                    progress: Callable[[str], None] | None = None) -> PullResult:
    """Pull the deployment at ``ref`` (tag or digest) into ``store``.

    Verifies everything it receives (module docstring) before publishing atomically; with
    ``prepare``, also :func:`prepare_snapshot` on the staged files before publishing, so a
    snapshot this machine cannot restore is never published. ``make_current``: make it its
    worker's current deployment (with :meth:`Store.publish`, or :meth:`Store.rollback` when the
    store already has it); a worker with no deployment gets it as current either way.
    ``expect_name``: refuse (before downloading more than the record) a deployment of another
    worker.
    Raises :class:`RegistryError` (:class:`DigestMismatch` for tampered content) and
    :class:`pyworkers.store.StoreError`; on error the store is unchanged.
    """
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    m, digest = fetch_manifest(client, ref)
    repo = ref.repository
    rows: list[dict] = []
    got = 0
    rdesc = _layer(m, "record")
    if rdesc["size"] > MAX_RECORD:
        raise RegistryError(f"{ref}: record of {rdesc['size']} bytes is too large")
    with tempfile.TemporaryFile() as f:
        client.get_blob(repo, rdesc["digest"], f, size=rdesc["size"])
        f.seek(0)
        raw = f.read()
    got += len(raw)
    rows.append({"role": "record", "digest": rdesc["digest"], "size": rdesc["size"],
                 "downloaded": True})
    try:
        rec = json.loads(raw)
    except ValueError:
        raise RegistryError(f"{ref}: the deployment record is not JSON") from None
    _check_record(rec, ref)
    dep_id, name = rec["id"], rec["name"]
    if expect_name is not None and name != expect_name:
        raise RegistryError(f"{ref} holds a deployment of worker {name!r}, not {expect_name!r}: "
                            f"push {expect_name}'s deployment to it")
    for role, key in (("lock", "lock"), ("site-packages", "layer"), ("snapshot", "snapshot")):
        if (rec.get(key) is not None) != (_layer(m, role) is not None):
            raise RegistryError(f"{ref}: the record and the manifest disagree about the {role}")
    try:
        known = {d.id: d for d in store.list(name)} if name in store.names() else {}
    except StoreError as e:
        raise RegistryError(str(e)) from None
    if dep_id in known:
        cur = store.current_id(name)
        if make_current and cur != dep_id:
            store.rollback(name, dep_id)
            cur = dep_id
        say(f"{dep_id} is already in {store.root}")
        return PullResult(known[dep_id], digest, False, cur == dep_id, rows, got,
                          round(time.perf_counter() - t0, 3))
    snap = rec.get("snapshot")
    sdesc = _layer(m, "snapshot")
    if snap is not None and snap.get("sha256") != sdesc["digest"]:
        raise DigestMismatch(f"{ref}: the snapshot layer {sdesc['digest']} is not the record's "
                             f"snapshot {snap.get('sha256')}: refused")
    with store.staging() as st:
        app_desc = _layer(m, "app")
        say(f"downloading app ({app_desc['size']} bytes)")
        got += _download(client, repo, app_desc, st.path / "app.tar.zst")
        rows.append({"role": "app", "digest": app_desc["digest"], "size": app_desc["size"],
                     "downloaded": True})
        app_dir = st.deployment_dir / "app"
        extract_tarball(st.path / "app.tar.zst", app_dir)
        h = tree_hash(app_dir)
        if h != rec["app"]["hash"]:
            raise DigestMismatch(f"{ref}: the app unpacked to content {h}, the record says "
                                 f"{rec['app']['hash']}: refused")
        for role, dest in (("lock", st.deployment_dir / LOCK_FILE),
                           ("snapshot", st.deployment_dir / SNAPSHOT_FILE)):
            desc = _layer(m, role)
            if desc is not None:
                say(f"downloading {role} ({desc['size']} bytes)")
                got += _download(client, repo, desc, dest)
                rows.append({"role": role, "digest": desc["digest"], "size": desc["size"],
                             "downloaded": True})
        layer = rec.get("layer")
        layer_dir = None
        if layer is not None:
            desc = _layer(m, "site-packages")
            if store.has_layer(layer["hash"]):
                layer_dir = store.layer_path(layer["hash"])
                rows.append({"role": "site-packages", "digest": desc["digest"],
                             "size": desc["size"], "downloaded": False})
            else:
                say(f"downloading site-packages ({desc['size']} bytes)")
                got += _download(client, repo, desc, st.path / "site-packages.tar.zst")
                rows.append({"role": "site-packages", "digest": desc["digest"],
                             "size": desc["size"], "downloaded": True})
                extract_tarball(st.path / "site-packages.tar.zst", st.layer_dir)
                layer_dir = st.layer_dir
        for tmp in st.path.glob("*.tar.zst"):
            tmp.unlink()
        if prepare and snap is not None:
            say("preparing the snapshot's image module")
            ms = prepare_snapshot(rec, app_dir, layer_dir, st.deployment_dir / SNAPSHOT_FILE,
                                  cache_dir)
            say(f"snapshot ready ({ms:.0f} ms)")
        dep = store.publish(st, rec, make_current=make_current)
    return PullResult(dep, digest, True, store.current_id(name) == dep.id, rows, got,
                      round(time.perf_counter() - t0, 3))
