"""pyworkers deploy end to end with tiny fixture apps (tests/data/deploy/): no package index
needed (apps without requirements, or with a local pure-Python wheel built here). Each test
boots the real 314.0.7 runtime, so they are marked slow."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyworkers.cli import main as cli
from pyworkers.compat import select
from pyworkers.deploy import STAGES, DeployError, deploy
from pyworkers.snapshot import restore_isolate
from pyworkers.store import Store

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "deploy"
RECORD_KEYS = {"format", "id", "name", "created", "pyworkers_version", "config", "selection",
               "lock", "wheels", "layer", "app", "asgi", "entropy_at_import", "warmup", "snapshot",
               "smoke", "timings_ms"}


def fixture_app(name: str, tmp_path: Path) -> Path:
    """A private copy of tests/data/deploy/<name> (the tests may change it)."""
    dest = tmp_path / "apps" / name
    shutil.copytree(DATA / name, dest)
    return dest


def build_wheel(dest_dir: Path, name: str = "tinylib", version: str = "1.0",
                greeting: str = "hi from tinylib") -> Path:
    """A minimal, valid pure-Python wheel (PEP 427: METADATA, WHEEL, RECORD with hashes)."""
    files = {
        f"{name}/__init__.py": f"def greet():\n    return {greeting!r}\n".encode(),
        f"{name}-{version}.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: pyworkers-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
    }
    rows = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append((path, f"sha256={digest}", str(len(data))))
    rows.append((f"{name}-{version}.dist-info/RECORD", "", ""))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    files[f"{name}-{version}.dist-info/RECORD"] = buf.getvalue().encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    whl = dest_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return whl


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file in the store (directories as "<dir>"), except the
    private .staging area and the .lock file (pyworkers.store: invisible to readers)."""
    out = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(".staging") or rel == ".lock":
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def staging_dirs(root: Path) -> list[Path]:
    base = root / ".staging"
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyworkers", *args], capture_output=True,
                          text=True, timeout=600, **kw)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory) -> Store:
    tmp = tmp_path_factory.mktemp("seeded")
    st = Store(tmp / "store")
    deploy(fixture_app("plain", tmp), store=st)
    return st


@pytest.fixture
def seeded(tmp_path, seeded_template) -> Store:
    """A store that already holds one deployment of worker "plain" (a copy of one made once
    per module: records hold store-relative paths, so a store can be copied)."""
    root = tmp_path / "seeded-store"
    shutil.copytree(seeded_template.root, root, symlinks=True)
    st = Store(root)
    assert [d.id for d in st.list()] == [d.id for d in seeded_template.list()]
    return st


# --------------------------------------------------------------------------- success

def test_plain_app_deploys_with_a_complete_record(tmp_path, store):
    app = fixture_app("plain", tmp_path)
    lines: list[str] = []
    dep = deploy(app, store=store, progress=lines.append)
    rec = dep.record
    assert set(rec) == RECORD_KEYS
    assert rec["format"] == 1 and rec["name"] == "plain" and dep.id.startswith("plain-")
    assert rec["selection"] == select("2026-11-15").to_json()
    assert rec["config"]["main"] == "main:app" and rec["config"]["app_dir"] == str(app.resolve())
    assert rec["lock"] is None and rec["wheels"] is None and rec["layer"] is None
    assert rec["asgi"]["object"] == "builtins.function"
    assert rec["asgi"]["adapter"] == "guest" == rec["smoke"]["adapter"]
    assert rec["app"]["files"] == 2 and rec["app"]["path"] == f"deployments/{dep.id}/app"
    assert (dep.app_dir / "main.py").read_bytes() == (app / "main.py").read_bytes()
    smoke = rec["smoke"]
    assert smoke["lifespan"] == "complete" and smoke["status"] == 200
    assert smoke["body_bytes"] == len(b"plain ok") and smoke["error"] is None
    assert set(rec["timings_ms"]) == (set(STAGES) - {"publish"}) | {"total"}
    assert all(v >= 0 for v in rec["timings_ms"].values())
    assert rec["timings_ms"]["total"] >= sum(v for k, v in rec["timings_ms"].items()
                                             if k != "total")
    snap = rec["snapshot"]
    assert snap["type"] == "dedicated" and snap["path"] == f"deployments/{dep.id}/snapshot.bin"
    assert snap["bytes"] == dep.snapshot_path.stat().st_size
    assert snap["sha256"] == "sha256:" + hashlib.sha256(
        dep.snapshot_path.read_bytes()).hexdigest()
    meta = snap["metadata"]
    assert meta["snapshot_type"] == "dedicated" and meta["app_hash"] == rec["app"]["hash"]
    assert meta["sizes"]["file"] == snap["bytes"]
    assert smoke["restored_from_snapshot"] is True
    # the published snapshot restores with the record's own kwargs
    iso = restore_isolate(dep.snapshot_path, **dep.restore_kwargs())
    try:
        assert iso.eval("sorted(k for k in __import__('sys').modules if k == 'main')") \
            == "['main']"
        assert iso.eval("'_pyworkers_deploy' in __import__('sys').modules") == "False"
        # the guest adapter is loaded: the snapshot is an isolate ready to serve
        assert iso.eval("'_pyworkers_asgi' in __import__('sys').modules") == "True"
    finally:
        iso.close()
    # progress: every stage started and finished, in order
    started = [x.split()[1] for x in lines if x.startswith("stage ")]
    assert started == list(STAGES)
    assert store.current("plain").id == dep.id
    assert json.loads((dep.dir / "deployment.json").read_text()) == rec
    assert staging_dirs(store.root) == []


def test_vars_reach_the_top_level_and_cli_overrides_the_file(tmp_path, store):
    app = fixture_app("needs-var", tmp_path)
    with pytest.raises(DeployError, match="MODE must be 'production', got 'staging'"):
        deploy(app, store=store)
    dep = deploy(app, store=store, vars={"MODE": "production"})
    assert dep.record["config"]["vars"] == {"MODE": "production"}
    assert dep.record["smoke"]["status"] == 204


def test_local_wheel_second_deploy_reuses_lock_wheels_and_layer(tmp_path, store, capsys):
    app = fixture_app("local-wheel", tmp_path)
    build_wheel(app / "wheels")
    first = deploy(app, store=store).record
    assert [p["name"] for p in first["lock"]["packages"]] == ["tinylib"]
    assert first["lock"]["reused"] is False and first["layer"]["reused"] is False
    assert first["smoke"]["status"] == 200
    assert first["smoke"]["body_bytes"] == len(b"hi from tinylib")
    second = deploy(app, store=store).record
    assert second["lock"]["reused"] is True and second["lock"]["seed"] == "previous"
    assert second["wheels"] == {**first["wheels"], "cached": 1, "downloaded": 0}
    assert second["layer"]["reused"] is True
    assert second["layer"]["hash"] == first["layer"]["hash"]
    assert [p.name for p in (store.root / "layers").iterdir()] == [
        first["layer"]["hash"].split(":")[1]]
    t1, t2 = first["timings_ms"], second["timings_ms"]
    pkg = lambda t: t["resolve"] + t["download"] + t["layer"]  # noqa: E731
    with capsys.disabled():
        print(f"\n[local-wheel] first deploy {t1['total']:.0f} ms, second {t2['total']:.0f} ms "
              f"({t1['total'] / t2['total']:.2f}x); resolve+download+layer {pkg(t1):.0f} -> "
              f"{pkg(t2):.0f} ms")
    # A code change reuses the packages but is a new app.
    (app / "main.py").write_text((app / "main.py").read_text() + "\n# changed\n")
    third = deploy(app, store=store).record
    assert third["app"]["hash"] != second["app"]["hash"]
    assert third["lock"]["reused"] is True and third["layer"]["reused"] is True
    # A new wheel (other content) is a new resolution and a new layer.
    build_wheel(app / "wheels", greeting="changed greeting")
    fourth = deploy(app, store=store).record
    assert fourth["lock"]["reused"] is False and fourth["layer"]["reused"] is False
    assert fourth["layer"]["hash"] != first["layer"]["hash"]
    assert fourth["smoke"]["body_bytes"] == len(b"changed greeting")


def test_an_apps_own_pylock_is_reused(tmp_path, store):
    app = fixture_app("local-wheel", tmp_path)
    build_wheel(app / "wheels")
    r = run_cli("resolve", str(app), "--no-download")
    assert r.returncode == 0, r.stderr
    assert (app / "pylock.toml").is_file()
    rec = deploy(app, store=store).record
    assert rec["lock"]["reused"] is True and rec["lock"]["seed"] == "app"


# --------------------------------------------------------------------------- failures

FAILURES = [
    # fixture, stage, message part, detail parts (the app's traceback from the sandbox)
    ("import-error", "import", "No module named 'pyworkers_missing_dependency'",
     ['File "/app/main.py", line 1, in <module>', 'File "/app/helpers.py", line 1, in <module>',
      "ModuleNotFoundError: No module named 'pyworkers_missing_dependency'"]),
    ("top-level-error", "import", "ValueError: DATABASE_URL is not configured",
     ['File "/app/main.py", line 3, in <module>', 'File "/app/settings.py", line 2, in '
      "load_settings", "ValueError: DATABASE_URL is not configured (top-level failure marker "
      "7f3a)"]),
    ("syntax-error", "import", "SyntaxError: expected ':'",
     ['File "/app/main.py", line 1', "SyntaxError: expected ':'"]),
    ("not-asgi", "import", "main:app is the function main.app with signature (environ, "
     "start_response)", []),
    ("missing-attr", "import", "has no attribute 'app': did you mean main = \"main:api\"?", []),
    ("lifespan-fails", "smoke", "lifespan startup failed: cannot reach the database "
     "(lifespan marker 91c2)", []),
    ("unresolvable", "resolve", "pyworkers-no-such-project-7f3a", []),
]


@pytest.mark.parametrize("fixture,stage,message,detail", FAILURES, ids=[f[0] for f in FAILURES])
def test_failing_apps_fail_with_their_traceback_and_write_nothing(tmp_path, seeded, fixture,
                                                                   stage, message, detail):
    before = tree(seeded.root)
    with pytest.raises(DeployError) as ei:
        deploy(fixture_app(fixture, tmp_path), store=seeded, name="plain")
    e = ei.value
    assert e.stage == stage
    assert message in e.message
    for part in detail:
        assert part in e.detail
    assert "<pyworkers deploy>" not in e.detail and "importlib" not in e.detail
    assert tree(seeded.root) == before
    assert staging_dirs(seeded.root) == []
    assert len(seeded.list()) == 1


def test_a_failing_snapshot_step_writes_nothing(tmp_path, seeded, monkeypatch):
    import pyworkers.snapshot

    def broken_take(iso, out_path, **kw):
        Path(out_path).write_bytes(b"half a snapshot")
        raise RuntimeError("disk went away (marker 3b8e)")

    monkeypatch.setattr(pyworkers.snapshot, "take_snapshot", broken_take)
    before = tree(seeded.root)
    with pytest.raises(DeployError) as ei:
        deploy(fixture_app("plain", tmp_path), store=seeded)
    assert ei.value.stage == "snapshot"
    assert "RuntimeError during the snapshot stage: disk went away (marker 3b8e)" in \
        ei.value.message
    assert "broken_take" in ei.value.detail  # the host traceback, for the bug report
    assert tree(seeded.root) == before and staging_dirs(seeded.root) == []


def test_cli_failure_prints_traceback_then_error_on_stderr(tmp_path, seeded):
    before = tree(seeded.root)
    r = run_cli("deploy", str(fixture_app("top-level-error", tmp_path)), "--store",
                str(seeded.root), "--json")
    assert r.returncode == 1 and r.stdout == ""
    err = r.stderr
    tb = err.index("Traceback (most recent call last):")
    line = err.index("error: deploy failed (import): importing 'main' (the app's top level) "
                     "raised ValueError: DATABASE_URL is not configured")
    assert tb < line
    assert 'File "/app/settings.py", line 2, in load_settings' in err[tb:line]
    assert tree(seeded.root) == before


# --------------------------------------------------------------------------- SIGKILL

@pytest.mark.parametrize("fixture,stage", [("slow-import", "import"),
                                           ("slow-lifespan", "smoke")])
def test_sigkill_mid_deploy_leaves_the_store_as_it_was(tmp_path, seeded, fixture, stage):
    before = tree(seeded.root)
    listed = run_cli("deployments", "list", "--store", str(seeded.root), "--json").stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyworkers", "deploy", str(fixture_app(fixture, tmp_path)),
         "--store", str(seeded.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.strip() == f"-> {stage}":
                break
        assert seen and seen[-1].strip() == f"-> {stage}", "".join(seen)
        time.sleep(1.5)  # well inside the stage: the app's top level / lifespan sleeps 600 s
        assert proc.poll() is None, "the deploy ended before it was killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    assert tree(seeded.root) == before
    left = staging_dirs(seeded.root)
    assert len(left) == 1, "the killed deploy should have had a staging directory"
    assert (left[0] / "deployment" / "app" / "main.py").is_file()
    if stage == "smoke":
        assert (left[0] / "deployment" / "snapshot.bin").is_file()
    assert run_cli("deployments", "list", "--store", str(seeded.root),
                   "--json").stdout == listed
    # the next deploy removes the leftover and publishes normally
    dep = deploy(fixture_app("plain", tmp_path / "again"), store=seeded)
    assert staging_dirs(seeded.root) == []
    assert [d.id for d in seeded.list()][-1] == dep.id and len(seeded.list()) == 2


def test_concurrent_deploys_both_publish(tmp_path, store):
    app = fixture_app("plain", tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "pyworkers", "deploy", str(app), "--store",
                               str(store.root), "--json", "-q"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    ids = {json.loads(o[0])["id"] for o in outs}
    assert len(ids) == 2
    assert {d.id for d in store.list("plain")} == ids
    assert store.current_id("plain") in ids
    assert staging_dirs(store.root) == []


# --------------------------------------------------------------------------- CLI

def test_cli_deploy_json_prints_the_record(tmp_path, store):
    r = run_cli("deploy", str(fixture_app("plain", tmp_path)), "--store", str(store.root),
                "--json", "--var", "EXTRA=1")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)  # stdout is exactly one JSON document
    assert set(data) == RECORD_KEYS | {"store"}
    assert data["store"] == str(store.root)
    assert data["config"]["vars"] == {"EXTRA": "1"}
    dep = store.get(data["id"])
    assert {k: v for k, v in data.items() if k != "store"} == dep.record
    # progress went to stderr, stage by stage
    for s in STAGES:
        assert f"-> {s}" in r.stderr
        assert f"  ok  {s}" in r.stderr
    shown = CliRunner().invoke(cli, ["deployments", "show", data["id"], "--store",
                                     str(store.root), "--json"])
    assert shown.exit_code == 0
    assert json.loads(shown.stdout) == {**data, "current": True}


def test_cli_bad_var_is_a_user_error(tmp_path, store):
    r = CliRunner().invoke(cli, ["deploy", str(fixture_app("plain", tmp_path)), "--store",
                                 str(store.root), "--var", "NOEQUALS"])
    assert r.exit_code == 1 and "--var 'NOEQUALS': write it as KEY=VALUE" in r.stderr
    assert not store.root.exists()


def test_cli_list_show_rollback(tmp_path, store):
    app = fixture_app("plain", tmp_path)
    d1 = deploy(app, store=store)
    d2 = deploy(app, store=store)
    runner = CliRunner()
    args = ["--store", str(store.root)]
    out = runner.invoke(cli, ["deployments", "list", *args])
    assert out.exit_code == 0
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == [d1.id, "*"] and rows[1][1] == d2.id
    js = json.loads(runner.invoke(cli, ["deployments", "list", *args, "--json"]).stdout)
    assert [(d["id"], d["current"]) for d in js["deployments"]] == [(d1.id, False),
                                                                    (d2.id, True)]
    show = runner.invoke(cli, ["deployments", "show", "plain", *args])
    assert show.exit_code == 0
    for label in ("deployment", "runtime", "lock", "layer", "snapshot", "smoke", "timings"):
        assert any(line.startswith(label) for line in show.stdout.splitlines()), label
    assert f"{d2.id}  (current)" in show.stdout

    rb = runner.invoke(cli, ["deployments", "rollback", *args, "--json"])
    assert rb.exit_code == 0, rb.stderr
    assert json.loads(rb.stdout) == {"name": "plain", "previous": d2.id, "current": d1.id}
    assert store.current_id("plain") == d1.id
    again = runner.invoke(cli, ["deployments", "rollback", *args])
    assert again.exit_code == 1 and "nothing earlier to roll back to" in again.stderr
    fwd = runner.invoke(cli, ["deployments", "rollback", d2.id, *args])
    assert fwd.exit_code == 0 and store.current_id("plain") == d2.id
    assert f"plain: current is now {d2.id} (was {d1.id})" in fwd.stdout
    missing = runner.invoke(cli, ["deployments", "show", "nope", *args])
    assert missing.exit_code == 1 and "no deployment or worker 'nope'" in missing.stderr
