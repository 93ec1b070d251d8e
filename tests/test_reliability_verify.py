"""Reliability: deployments are verified (issue 17, item 8): ``verify_deployment``, ``pyworkers
deployments verify`` and a rollback that refuses a corrupt target."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from test_deploy import build_wheel, fixture_app, run_cli

from pyworkers.deploy import deploy
from pyworkers.store import Store, StoreError
from pyworkers.verify import verify_deployment

pytestmark = pytest.mark.slow


def _flip(path, offset: int | None = None) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(size // 2 if offset is None else offset)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x5A]))


@pytest.fixture(scope="module")
def two_deployments(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    st = Store(tmp / "store")
    app = fixture_app("local-wheel", tmp)
    build_wheel(app / "wheels")
    a = deploy(app, store=st)
    (app / "main.py").write_text((app / "main.py").read_text() + "\n# changed\n")
    b = deploy(app, store=st)
    return st, a.id, b.id


@pytest.fixture
def store(tmp_path, two_deployments):
    st, a, b = two_deployments
    root = tmp_path / "store"
    shutil.copytree(st.root, root, symlinks=True)
    return Store(root), a, b


def test_healthy_deployments_verify(store):
    st, a, b = store
    assert verify_deployment(st, a) == [] and verify_deployment(st, b) == []
    r = run_cli("deployments", "verify", "--store", str(st.root), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [d["ok"] for d in out["deployments"]] == [True, True]


def test_corrupt_snapshot_is_found_and_rollback_refuses_it(store):
    st, a, b = store
    dep_a = st.get(a)
    _flip(dep_a.snapshot_path)
    problems = verify_deployment(st, a)
    assert problems and {p.part for p in problems} == {"snapshot"}
    assert any("sha256" in p.message or "checksum" in p.message for p in problems)
    assert verify_deployment(st, b) == []
    r = run_cli("deployments", "verify", a, "--store", str(st.root))
    assert r.returncode == 1 and "FAIL" in r.stdout and "snapshot" in r.stdout
    assert "failed verification" in r.stderr
    with pytest.raises(StoreError, match=f"refusing to roll back to {a}: it does not verify"):
        st.rollback("local-wheel", a)
    assert st.current_id("local-wheel") == b
    r = run_cli("deployments", "rollback", a, "--store", str(st.root))
    assert r.returncode == 1 and "does not verify" in r.stderr
    assert st.current_id("local-wheel") == b
    # the operator can still insist
    r = run_cli("deployments", "rollback", a, "--no-verify", "--store", str(st.root))
    assert r.returncode == 0, r.stderr
    assert st.current_id("local-wheel") == a


def test_corrupt_app_and_layer_files_are_found(store):
    st, a, b = store
    dep_b = st.get(b)
    main_py = dep_b.app_dir / "main.py"
    os.chmod(main_py, 0o644)
    main_py.write_text(main_py.read_text() + "\nimport os  # tampered\n")
    layer_file = dep_b.layer_dir / "tinylib" / "__init__.py"
    _flip(layer_file, 0)
    parts = {p.part for p in verify_deployment(st, b)}
    assert parts == {"app", "layer"}
    # the layer is shared: the older deployment fails too, for the layer only
    assert {p.part for p in verify_deployment(st, a)} == {"layer"}
    os.chmod(dep_b.snapshot_path, 0o644)
    os.truncate(dep_b.snapshot_path, 100)
    assert "snapshot" in {p.part for p in verify_deployment(st, b)}
    assert [p.part for p in verify_deployment(st, "no-such-deployment")] == ["record"]
