"""Pruning the store (pyworkers.prune) and leases (Store.lease): unit tests on hand-made stores,
then real deploys of examples/hello with a prune running concurrently."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyworkers.cli import main as cli
from pyworkers.prune import IMAGE_GRACE_S, prune_cache, prune_deployments
from pyworkers.store import Store, StoreError

ROOT = Path(__file__).resolve().parent.parent
LAYER_A, LAYER_B = "aa" * 32, "bb" * 32


def _record(name: str, dep_id: str, created: str, layer: str | None, pkg: str | None,
            snapshot: bool) -> dict:
    rec = {
        "format": 1, "id": dep_id, "name": name, "created": created,
        "config": {"name": name, "main": "main:app", "compatibility_date": "2026-11-15",
                   "compatibility_flags": [], "vars": {}, "source": None, "app_dir": "/src"},
        "selection": {"pyodide_version": "314.0.7", "release": "314.0.7"},
        "app": {"path": f"deployments/{dep_id}/app", "hash": "sha256:" + "0" * 64, "files": 1, "bytes": 3},
        "lock": None, "layer": None, "snapshot": None, "timings_ms": {"total": 1.0},
    }
    if layer:
        rec["layer"] = {"hash": "sha256:" + layer, "path": f"layers/{layer}", "reused": False,
                        "package_snapshot": {"path": pkg, "reused": False} if pkg else None}
    if snapshot:
        rec["snapshot"] = {"path": f"deployments/{dep_id}/snapshot.bin", "type": "dedicated", "bytes": 1}
    return rec


def publish(st: Store, name: str, n: int, layer: str | None = None, pkg: str | None = None,
            snapshot: bool = False):
    dep_id = f"{name}-{n}"
    with st.staging() as s:
        (s.deployment_dir / "app").mkdir()
        (s.deployment_dir / "app" / "main.py").write_text("app")
        if snapshot:
            from pyworkers.snapshot.format import write_snapshot

            write_snapshot(s.deployment_dir / "snapshot.bin", {"format_version": 1, "id": dep_id},
                           {"memory": (dep_id.encode() * 10, True)})
        if layer and not st.has_layer("sha256:" + layer):
            s.layer_dir.mkdir()
            (s.layer_dir / "mod.py").write_text("# layer")
        if pkg:
            p = st.root / pkg
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"package snapshot " + pkg.encode())
        return st.publish(s, _record(name, dep_id, f"2026-11-{n:02d}T00:00:00.000000Z", layer, pkg, snapshot))


def tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith((".staging", ".trash")) or rel == ".lock":
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


HOLDER = textwrap.dedent("""
    import sys
    from pyworkers.store import Store
    lease = Store(sys.argv[1]).lease(sys.argv[2], holder="test holder")
    print("held", flush=True)
    sys.stdin.read()
""")


def hold_lease(st: Store, dep_id: str) -> subprocess.Popen:
    """Another process that holds a lease on ``dep_id`` until killed (as a serve process would)."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(st.root), dep_id], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_prune_keeps_current_recent_and_leased_then_the_stale_lease_goes(tmp_path):
    st = Store(tmp_path / "s")
    publish(st, "w", 1, LAYER_A, "package-snapshots/a.pyws")
    for n in range(2, 8):
        publish(st, "w", n, LAYER_B, "package-snapshots/b.pyws")
    publish(st, "other", 1)
    orphan = st.root / "package-snapshots" / "orphan.pyws"
    orphan.write_bytes(b"x")
    (st.root / "layers" / ("cc" * 32)).mkdir()
    st.rollback("w", "w-2", verify=False)  # fake records (no real files to verify)
    holder = hold_lease(st, "w-1")
    try:
        before = tree(st.root)
        dry = prune_deployments(st, keep=3, dry_run=True, images=False)
        assert tree(st.root) == before  # a dry run changes nothing
        rep = prune_deployments(st, keep=3, images=False)
        assert [d["id"] for d in rep["deployments"]] == [d["id"] for d in dry["deployments"]] == ["w-3", "w-4"]
        assert {k["id"]: k["why"] for k in rep["kept"]} == {
            "w-1": "leased", "w-2": "current", "w-5": "recent", "w-6": "recent", "w-7": "recent",
            "other-1": "current"}
        assert [x["pid"] for x in rep["leases"]["w-1"]] == [holder.pid]
        assert [x["path"] for x in rep["layers"]] == ["layers/" + "cc" * 32]
        assert [x["path"] for x in rep["package_snapshots"]] == ["package-snapshots/orphan.pyws"]
        assert rep["bytes"] > 0
        assert {d.id for d in st.list("w")} == {"w-1", "w-2", "w-5", "w-6", "w-7"}
        assert not (st.deployments_dir / "w-3").exists() and not orphan.exists()
        assert st.has_layer("sha256:" + LAYER_A) and (st.root / "package-snapshots" / "a.pyws").exists()
        assert st.current_id("w") == "w-2"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without releasing: its lease is stale and ignored
    assert st.leases() == {}
    rep = prune_deployments(st, keep=3, images=False)
    assert [d["id"] for d in rep["deployments"]] == ["w-1"] and rep["stale_leases"] == 1
    assert [x["path"] for x in rep["layers"]] == ["layers/" + LAYER_A]
    assert [x["path"] for x in rep["package_snapshots"]] == ["package-snapshots/a.pyws"]
    assert not any((st.root / "leases").rglob("*.lease"))
    assert not (st.root / ".trash").exists() or not any((st.root / ".trash").iterdir())
    assert {d.id for d in st.list()} == {"w-2", "w-5", "w-6", "w-7", "other-1"}


def test_lease_in_process_and_on_a_pruned_deployment(tmp_path):
    st = Store(tmp_path / "s")
    for n in (1, 2):
        publish(st, "w", n)
    with st.lease("w-1") as lease:
        assert lease.path.exists() and list(st.leases()) == ["w-1"]
        assert prune_deployments(st, keep=0, images=False)["deployments"] == []
    assert not lease.path.exists()
    assert [d["id"] for d in prune_deployments(st, keep=0, images=False)["deployments"]] == ["w-1"]
    with pytest.raises(StoreError, match="no deployment 'w-1'"):
        st.lease("w-1")
    with pytest.raises(ValueError):
        prune_deployments(st, keep=-1)


def test_a_deploy_in_progress_keeps_layers_and_package_snapshots(tmp_path):
    st = Store(tmp_path / "s")
    publish(st, "w", 1, LAYER_A, "package-snapshots/a.pyws")
    publish(st, "w", 2)
    with st.staging():
        rep = prune_deployments(st, keep=0, images=False)
        assert [d["id"] for d in rep["deployments"]] == ["w-1"]
        assert rep["layers"] == [] and rep["package_snapshots"] == []
        assert "deploy(s) in progress" in rep["notes"][0]
        assert st.has_layer("sha256:" + LAYER_A)
    rep = prune_deployments(st, keep=0, images=False)
    assert [x["path"] for x in rep["layers"]] == ["layers/" + LAYER_A]
    assert not st.has_layer("sha256:" + LAYER_A)


def test_image_modules_nothing_references_are_removed(tmp_path):
    from pyworkers.snapshot.restore import image_module_path, image_modules_dir

    st = Store(tmp_path / "s")
    cache = tmp_path / "cache"
    d1 = publish(st, "w", 1, snapshot=True)
    d2 = publish(st, "w", 2, snapshot=True)
    mods = image_modules_dir(cache)
    mods.mkdir(parents=True)
    old = time.time() - IMAGE_GRACE_S - 60

    def module(path: Path, age: float | None = old) -> Path:
        path.write_bytes(b"cwasm")
        path.with_suffix(".json").write_text("{}")
        if age:
            for p in (path, path.with_suffix(".json")):
                os.utime(p, (age, age))
        return path

    m1 = module(image_module_path(d1.snapshot_path, cache))
    m2 = module(image_module_path(d2.snapshot_path, cache))
    stray = module(mods / ("snapshot-" + "1" * 24 + ".cwasm"))
    fresh = module(mods / ("snapshot-" + "2" * 24 + ".cwasm"), age=None)
    assert prune_cache([st], cache_dir=cache, dry_run=True)["image_modules"] == [
        {"path": str(stray), "bytes": 7}]
    assert stray.exists()
    rep = prune_deployments(st, keep=1, cache_dir=cache)
    assert [d["id"] for d in rep["deployments"]] == ["w-1"]
    assert sorted(x["path"] for x in rep["image_modules"]) == sorted([str(m1), str(stray)])
    assert not m1.exists() and not m1.with_suffix(".json").exists() and not stray.exists()
    assert m2.exists() and fresh.exists()
    # the CLI: JSON on stdout
    r = CliRunner().invoke(cli, ["cache", "prune", "--store", str(st.root), "--cache-dir", str(cache), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["image_modules"] == []


def test_cli_prune_dry_run_and_json(tmp_path):
    st = Store(tmp_path / "s")
    for n in range(1, 4):
        publish(st, "w", n)
    r = CliRunner().invoke(cli, ["deployments", "prune", "--keep", "1", "--dry-run", "--store", str(st.root)])
    assert r.exit_code == 0, r.output
    assert "would remove deployment w-1" in r.stdout and "would remove deployment w-2" in r.stdout
    assert len(st.list()) == 3
    r = CliRunner().invoke(cli, ["deployments", "prune", "--keep", "1", "--store", str(st.root), "--json",
                                 "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert [d["id"] for d in data["deployments"]] == ["w-1", "w-2"] and data["store"] == str(st.root)
    assert [d.id for d in st.list()] == ["w-3"]
    r = CliRunner().invoke(cli, ["deployments", "prune", "--keep", "-1", "--store", str(st.root)])
    assert r.exit_code == 2


# --------------------------------------------------------------------------- real deploys

@pytest.mark.slow
@pytest.mark.network
def test_prune_during_real_deploys_leaves_current_and_leased_deployments_working(tmp_path):
    from pyworkers.deploy import deploy
    from pyworkers.snapshot import restore_isolate

    st = Store(tmp_path / "store")
    hello = ROOT / "examples" / "hello"
    d1 = deploy(hello, store=st)
    d2 = deploy(hello, store=st)
    holder = hold_lease(st, d1.id)  # d1 is "served" by another process
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pyworkers", "deploy", str(hello), "--store",
                                 str(st.root), "--json", "-q"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        reports = []
        stop = threading.Event()

        def prune_loop():
            while not stop.is_set():
                reports.append(prune_deployments(st, keep=0, cache_dir=tmp_path / "cache"))
                time.sleep(0.05)

        t = threading.Thread(target=prune_loop)
        t.start()
        try:
            out, err = proc.communicate(timeout=900)
        finally:
            stop.set()
            t.join()
        assert proc.returncode == 0, err
        d3 = json.loads(out)["id"]
        assert len(reports) > 3  # pruning really ran during the deploy
        final = prune_deployments(st, keep=0, cache_dir=tmp_path / "cache")
        assert st.current_id("hello") == d3
        assert {d.id for d in st.list()} == {d1.id, d3}  # d2: neither current nor leased
        removed = [d["id"] for r in reports + [final] for d in r["deployments"]]
        assert removed == [d2.id]
        # what remains is complete: the current and the leased deployment restore and answer
        for dep in (st.get(d3), st.get(d1.id)):
            assert dep.layer_dir.is_dir() and dep.app_dir.is_dir()
            iso = restore_isolate(dep.snapshot_path, **dep.restore_kwargs())
            assert iso.eval("__import__('fastapi').__name__") == "'fastapi'"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    rep = prune_deployments(st, keep=0, cache_dir=tmp_path / "cache")
    assert [d["id"] for d in rep["deployments"]] == [d1.id]
    assert st.current_id("hello") == d3 and st.get(d3).layer_dir.is_dir()
