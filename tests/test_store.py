"""pyworkers.store: publishing, the current pointer, rollback, crash leftovers. No runtime needed."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyworkers import store as store_mod
from pyworkers.store import Deployment, Store, StoreError, atomic_write_json, default_store_root

HEX = "ab" * 32
# the content hash of the app copy _publish stages (main.py = "app"), as copy_app computes it
APP_HASH = "sha256:" + hashlib.sha256(
    b"main.py\0" + hashlib.sha256(b"app").hexdigest().encode() + b"\n").hexdigest()


def _record(st: Store, name: str, dep_id: str, *, created: str, layer: str | None = None) -> dict:
    rec = {
        "format": 1, "id": dep_id, "name": name, "created": created,
        "config": {"name": name, "main": "main:app", "compatibility_date": "2026-11-15",
                   "compatibility_flags": [], "vars": {"K": "v"}, "source": None,
                   "app_dir": "/src"},
        "selection": {"pyodide_version": "314.0.7"},
        "app": {"path": f"deployments/{dep_id}/app", "hash": APP_HASH, "files": 1, "bytes": 3},
        "lock": None, "layer": None, "snapshot": None,
        "timings_ms": {"total": 1.0},
    }
    if layer:
        rec["layer"] = {"hash": "sha256:" + layer, "path": f"layers/{layer}", "reused": False}
    return rec


def _publish(st: Store, name: str, dep_id: str, created: str, layer: str | None = None,
             **kw) -> Deployment:
    with st.staging() as s:
        (s.deployment_dir / "app").mkdir()
        (s.deployment_dir / "app" / "main.py").write_text("app")
        if layer:
            s.layer_dir.mkdir()
            (s.layer_dir / "mod.py").write_text(f"# layer {dep_id}")
        return st.publish(s, _record(st, name, dep_id, created=created, layer=layer), **kw)


def tree(root: Path) -> dict[str, str]:
    """Relative path -> content of every file, skipping .staging and .lock (see the module
    docstring of pyworkers.store: leftovers there are invisible and collected later)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(".staging") or rel == ".lock":
            continue
        out[rel] = p.read_bytes().hex() if p.is_file() else "<dir>"
    return out


def test_publish_makes_it_current_and_readable(tmp_path):
    st = Store(tmp_path / "s")
    d1 = _publish(st, "w", "w-1", "2026-11-20T00:00:00.000000Z")
    assert st.current("w").id == "w-1"
    d2 = _publish(st, "w", "w-2", "2026-11-21T00:00:00.000000Z")
    assert st.current("w").id == "w-2"
    assert [d.id for d in st.list()] == ["w-1", "w-2"]
    assert st.get("w").id == "w-2"  # a worker name means its current deployment
    assert st.get("w-1").record == d1.record
    assert d2.app_dir == st.root / "deployments" / "w-2" / "app"
    assert (d2.app_dir / "main.py").read_text() == "app"
    on_disk = json.loads((d2.dir / "deployment.json").read_text())
    assert on_disk == d2.record
    worker = json.loads((st.root / "workers" / "w.json").read_text())
    assert worker["current"] == "w-2" and worker["deployments"] == ["w-1", "w-2"]
    # immutable: every file is read-only
    for p in d2.dir.rglob("*"):
        if p.is_file():
            assert not os.stat(p).st_mode & 0o222, p
    # nothing left in staging
    assert list((st.root / ".staging").iterdir()) == []


def test_isolate_kwargs_point_into_the_store(tmp_path):
    st = Store(tmp_path)
    d = _publish(st, "w", "w-1", "2026-11-20T00:00:00.000000Z", layer=HEX)
    kw = d.isolate_kwargs()
    assert kw == {"release": "314.0.7", "site_packages": st.root / "layers" / HEX,
                  "mounts": {"/app": st.root / "deployments" / "w-1" / "app"},
                  "env": {"K": "v"}, "cwd": "/app"}
    assert (kw["site_packages"] / "mod.py").is_file()


def test_layer_is_published_once_and_shared(tmp_path):
    st = Store(tmp_path)
    _publish(st, "a", "a-1", "2026-11-20T00:00:00.000000Z", layer=HEX)
    _publish(st, "b", "b-1", "2026-11-20T00:00:01.000000Z", layer=HEX)
    assert [p.name for p in (st.root / "layers").iterdir()] == [HEX]
    # the first publisher's files stay: the second staged copy was discarded
    assert (st.root / "layers" / HEX / "mod.py").read_text() == "# layer a-1"
    assert st.has_layer("sha256:" + HEX)
    with pytest.raises(ValueError):
        st.layer_path("md5:abc")


def test_publish_refuses_a_missing_layer_and_leaves_nothing(tmp_path):
    st = Store(tmp_path)
    _publish(st, "w", "w-1", "2026-11-20T00:00:00.000000Z")
    before = tree(st.root)
    with st.staging() as s:
        (s.deployment_dir / "app").mkdir()
        rec = _record(st, "w", "w-2", created="2026-11-21T00:00:00.000000Z", layer=HEX)
        with pytest.raises(StoreError, match="neither staged nor in the store"):
            st.publish(s, rec)
    assert tree(st.root) == before


def test_publish_refuses_an_existing_id(tmp_path):
    st = Store(tmp_path)
    _publish(st, "w", "w-1", "2026-11-20T00:00:00.000000Z")
    with pytest.raises(StoreError, match="exists already"):
        _publish(st, "w", "w-1", "2026-11-21T00:00:00.000000Z")
    assert st.current("w").created == "2026-11-20T00:00:00.000000Z"


def test_get_by_prefix_and_errors(tmp_path):
    st = Store(tmp_path)
    _publish(st, "w", "w-20261120-aaa", "2026-11-20T00:00:00.000000Z")
    _publish(st, "w", "w-20261120-abb", "2026-11-20T00:00:01.000000Z")
    assert st.get("w-20261120-ab").id == "w-20261120-abb"
    with pytest.raises(StoreError, match="matches 2 deployments"):
        st.get("w-20261120-a")
    with pytest.raises(StoreError, match="no deployment or worker 'nope'"):
        st.get("nope")


def test_rollback_moves_only_the_pointer(tmp_path):
    st = Store(tmp_path)
    for i in (1, 2, 3):
        _publish(st, "w", f"w-{i}", f"2026-11-2{i}T00:00:00.000000Z")
    records = {d.id: (d.dir / "deployment.json").read_bytes() for d in st.list()}
    old, new = st.rollback("w")
    assert (old.id, new.id) == ("w-3", "w-2")
    assert st.current("w").id == "w-2"
    old, new = st.rollback("w")
    assert (old.id, new.id) == ("w-2", "w-1")
    with pytest.raises(StoreError, match="oldest deployment"):
        st.rollback("w")
    old, new = st.rollback("w", "w-3")
    assert st.current("w").id == "w-3"
    assert {d.id: (d.dir / "deployment.json").read_bytes() for d in st.list()} == records
    assert [d.id for d in st.list("w")] == ["w-1", "w-2", "w-3"]


def test_rollback_errors_name_the_fix(tmp_path):
    st = Store(tmp_path)
    _publish(st, "a", "a-1", "2026-11-20T00:00:00.000000Z")
    _publish(st, "b", "b-1", "2026-11-20T00:00:00.000000Z")
    with pytest.raises(StoreError, match="belongs to worker 'b'"):
        st.rollback("a", "b-1")
    with pytest.raises(StoreError, match="no worker 'c'"):
        st.rollback("c")


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    p = tmp_path / "w.json"
    atomic_write_json(p, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(p, {"v": 2})
    assert json.loads(p.read_text()) == {"v": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["w.json"]


def test_failed_worker_file_write_unpublishes(tmp_path, monkeypatch):
    st = Store(tmp_path)
    _publish(st, "w", "w-1", "2026-11-20T00:00:00.000000Z")
    before = tree(st.root)
    real = store_mod.atomic_write_json

    def fail_on_worker_file(path, data):
        if path.parent.name == "workers":
            raise OSError("disk full")
        return real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write_json", fail_on_worker_file)
    with pytest.raises(OSError):
        _publish(st, "w", "w-2", "2026-11-21T00:00:00.000000Z")
    assert tree(st.root) == before


def test_garbage_collection_spares_live_staging(tmp_path):
    st = Store(tmp_path)
    _publish(st, "w", "w-1", "2026-11-20T00:00:00.000000Z")
    live = st.staging()
    # an abandoned staging dir (no lock held) and an unlisted deployment dir
    dead = st.root / ".staging" / "deploy-dead"
    (dead / "deployment").mkdir(parents=True)
    orphan = st.root / "deployments" / "w-orphan"
    orphan.mkdir()
    removed = st.collect_garbage()
    assert set(removed) == {dead, orphan}
    assert live.path.is_dir() and st.current("w").id == "w-1"
    live.close()
    assert not live.path.exists()


def test_sigkilled_owner_leaves_collectable_staging(tmp_path):
    """A process killed with SIGKILL while it holds a staging dir: the store's visible state is
    unchanged and the next collect_garbage removes the leftover (the kernel dropped the lock)."""
    st = Store(tmp_path / "s")
    _publish(st, "w", "w-1", "2026-11-20T00:00:00.000000Z")
    before = tree(st.root)
    code = textwrap.dedent(f"""
        import sys, time
        from pyworkers.store import Store
        s = Store({str(st.root)!r}).staging()
        (s.deployment_dir / "big").write_bytes(b"x" * 100000)
        print(s.path, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        staged = Path(proc.stdout.readline().strip())
        assert staged.is_dir()
        assert st.collect_garbage() == []  # still alive: kept
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert tree(st.root) == before
    assert staged.is_dir()  # the leftover exists until collected
    assert st.collect_garbage() == [staged]
    assert list((st.root / ".staging").iterdir()) == []


def test_default_root_and_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("PYWORKERS_STORE", str(tmp_path / "env-store"))
    assert default_store_root() == (tmp_path / "env-store").resolve()
    assert Store().root == (tmp_path / "env-store").resolve()
    assert Store(tmp_path / "explicit").root == (tmp_path / "explicit").resolve()
    monkeypatch.delenv("PYWORKERS_STORE")
    assert default_store_root().parts[-2:] == ("pyworkers", "deployments")


def test_damaged_records_are_reported(tmp_path):
    st = Store(tmp_path)
    d = _publish(st, "w", "w-1", "2026-11-20T00:00:00.000000Z")
    rec = d.dir / "deployment.json"
    os.chmod(rec, 0o644)
    rec.write_text("{not json")
    with pytest.raises(StoreError, match="cannot read the deployment record"):
        st.current("w")
    rec.write_text(json.dumps({"format": 99}))
    with pytest.raises(StoreError, match="unknown record format"):
        st.list()


def test_store_path_must_be_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(StoreError, match="must be a directory"):
        Store(f)


def test_new_ids_are_unique_and_sortable(tmp_path):
    st = Store(tmp_path)
    ids = {st.new_id("w") for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("w-") and i[2:10].isdigit() for i in ids)
