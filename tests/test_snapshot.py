"""Snapshots against the real runtime: capture, the file format, restore, refusals, entropy."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

from pyworkers.runtime import Isolate
from pyworkers.snapshot import Restorer, SnapshotError, read_snapshot, take_snapshot
from pyworkers.snapshot.format import HEADER

pytestmark = pytest.mark.slow

TOP_LEVEL = r'''
import msgpack, random, os, sys
from pydantic_core import SchemaValidator, ValidationError, core_schema as cs
CONFIG = {"name": "svc", "items": [1, 2, 3]}
class Model:
    kind = "model"
    def __init__(self, x): self.x = x
INSTANCE = Model(7)
PACKED = msgpack.packb({"a": [1, 2]})
VALIDATOR = SchemaValidator(cs.typed_dict_schema({"n": cs.typed_dict_field(cs.int_schema())}))
os.makedirs("/tmp/state", exist_ok=True)
with open("/tmp/state/note.txt", "w") as f:
    f.write("written before the snapshot")
KEEP_OPEN = open("/tmp/state/note.txt")
KEEP_OPEN.read(7)
'''


@pytest.fixture(scope="module")
def snapshot_file(runtime_314, native_site_packages, tmp_path_factory):
    d = tmp_path_factory.mktemp("snap")
    iso = Isolate(runtime_314, site_packages=native_site_packages)
    iso.run(TOP_LEVEL)
    path = d / "dedicated.pyws"
    meta = take_snapshot(iso, path, snapshot_type="dedicated", layer_hash="layer-1", app_hash="app-1")
    return path, meta, iso


@pytest.fixture(scope="module")
def restorer(snapshot_file, native_site_packages):
    return Restorer(snapshot_file[0], site_packages=native_site_packages, expect_type="dedicated",
                    layer_hash="layer-1", app_hash="app-1")


@pytest.mark.network
def test_round_trip_keeps_top_level_state(restorer, snapshot_file):
    _path, meta, original = snapshot_file
    iso = restorer.new_isolate()
    r = iso.run(r'''
print(CONFIG, Model.kind, INSTANCE.x, type(INSTANCE).__name__)
print(msgpack.unpackb(PACKED))
print(VALIDATOR.validate_python({"n": "41"}))
try:
    VALIDATOR.validate_python({"n": "x"})
except ValidationError as e:
    print("invalid", e.error_count())
print(KEEP_OPEN.read(), open("/tmp/state/note.txt").read()[:7])
''')
    assert r.stdout.decode().splitlines() == [
        "{'name': 'svc', 'items': [1, 2, 3]} model 7 Model",
        "{'a': [1, 2]}",
        "{'n': 41}",
        "invalid 1",
        " before the snapshot written",
    ]
    # the layout is reproduced exactly: same side modules at the same bases, same table
    assert [(lib.name, lib.memory_base, lib.table_base) for lib in iso.linker.loaded] == \
        [(lib.name, lib.memory_base, lib.table_base) for lib in original.linker.loaded]
    assert iso.table.size(iso.store) == original.table.size(original.store)
    assert len(meta["side_modules"]) == 2


@pytest.mark.network
def test_restored_memory_is_the_captured_image(restorer, snapshot_file):
    iso = restorer.new_isolate(reseed=False)
    image = restorer.snap.section("memory")
    assert iso.memory_size() == len(image)
    assert iso.mem.read(0, len(image)) == image


@pytest.mark.network
def test_isolates_do_not_share_entropy(restorer):
    a, b = restorer.new_isolate(), restorer.new_isolate()
    code = "print(random.random(), os.urandom(16).hex(), __import__('secrets').token_hex(8))"
    ra, rb = a.run(code).stdout.split(), b.run(code).stdout.split()
    assert all(x != y for x, y in zip(ra, rb)), (ra, rb)


@pytest.mark.network
def test_hundred_isolates_from_one_snapshot_all_work(restorer):
    isolates = [restorer.new_isolate() for _ in range(100)]
    for i, iso in enumerate(isolates):
        assert iso.call("__main__:VALIDATOR.validate_python", {"n": str(i)}) == {"n": i}
    # state is per isolate
    isolates[0].run("CONFIG['items'].append(99)")
    assert isolates[1].eval("CONFIG['items']") == "[1, 2, 3]"


@pytest.mark.network
def test_clock_reads_current_time_after_restore(restorer, snapshot_file):
    import time

    iso = restorer.new_isolate()
    guest_now = float(iso.eval("__import__('time').time()"))
    assert abs(guest_now - time.time()) < 5
    mono = float(iso.eval("__import__('time').monotonic()"))
    assert mono * 1e9 >= json.loads(restorer.snap.section("state"))["host"]["monotonic_ns"] / 1.0 - 1e6


def _corrupt_copy(src, dst, mutate):
    shutil.copy(src, dst)
    data = bytearray(dst.read_bytes())
    mutate(data)
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.network
def test_corrupt_truncated_and_mismatched_snapshots_are_refused(snapshot_file, native_site_packages, tmp_path):
    path = snapshot_file[0]
    truncated = tmp_path / "truncated.pyws"
    truncated.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(SnapshotError, match="truncated"):
        Restorer(truncated, site_packages=native_site_packages)

    def flip_metadata(d):
        d[HEADER.size + 10] ^= 0x01
    bad_meta = _corrupt_copy(path, tmp_path / "meta.pyws", flip_metadata)
    with pytest.raises(SnapshotError, match="metadata fails its checksum"):
        Restorer(bad_meta, site_packages=native_site_packages)

    meta = read_snapshot(path).metadata
    mem = next(s for s in meta["sections"] if s["name"] == "memory")

    def flip_memory(d):
        d[mem["offset"] + mem["length"] // 2] ^= 0xFF
    bad_mem = _corrupt_copy(path, tmp_path / "mem.pyws", flip_memory)
    with pytest.raises(SnapshotError, match=r"section 'memory' fails its checksum"):
        read_snapshot(bad_mem, verify_sections=True)
    with pytest.raises(SnapshotError) as ei:
        Restorer(bad_mem, site_packages=native_site_packages)
    assert str(bad_mem) in str(ei.value)

    with pytest.raises(SnapshotError, match="is a dedicated snapshot, expected package"):
        Restorer(path, site_packages=native_site_packages, expect_type="package")
    with pytest.raises(SnapshotError, match="layer_hash mismatch"):
        Restorer(path, site_packages=native_site_packages, layer_hash="another-layer")

    # a snapshot made for another runtime build / wasmtime version: rewrite its metadata
    from pyworkers.snapshot.format import write_snapshot

    snap = read_snapshot(path)
    for key, value, message in (("build_sha256", "0" * 64, "made for runtime build"),
                                ("wasmtime_version", "1.0.0", "made with wasmtime 1.0.0")):
        other = dict(snap.metadata, **{key: value})
        other.pop("sections")
        p = tmp_path / f"other-{key}.pyws"
        write_snapshot(p, other, {"memory": (snap.section("memory"), True),
                                  "state": (snap.section("state"), True)})
        with pytest.raises(SnapshotError, match=message):
            Restorer(p, site_packages=native_site_packages)


@pytest.mark.network
def test_side_module_must_match_the_layer(snapshot_file, native_site_packages, tmp_path):
    other = tmp_path / "sp"
    shutil.copytree(native_site_packages, other)
    so = next(other.glob("msgpack/_cmsgpack*.so"))
    so.write_bytes(so.read_bytes() + b"\0")
    with pytest.raises(SnapshotError, match="differs from the snapshot's"):
        Restorer(snapshot_file[0], site_packages=other)


def test_entropy_at_import_is_attributed_to_its_module(runtime_314, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "keyed.py").write_text("import secrets\nKEY = secrets.token_hex(16)\nimport helper\n")
    (app / "helper.py").write_text("X = 1\n")
    iso = Isolate(runtime_314, mounts={"/app": str(app)})
    iso.run("import sys; sys.path.insert(0, '/app')")
    reply, _, _ = iso.request({"op": "import_tracked", "target": "keyed:KEY"})
    modules = dict(reply["entropy_modules"])
    assert modules.get("keyed", 0) >= 1
    assert "helper" not in modules


def test_cli_inspect_and_verify(tmp_path, runtime_314):
    iso = Isolate(runtime_314)
    iso.run("X = 1")
    path = tmp_path / "b.pyws"
    take_snapshot(iso, path, snapshot_type="baseline")
    cli = [sys.executable, "-m", "pyworkers", "snapshot", "inspect"]
    r = subprocess.run(cli + [str(path), "--json", "--verify"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] is True
    assert out["metadata"]["snapshot_type"] == "baseline"
    assert {s["name"] for s in out["metadata"]["sections"]} == {"memory", "state"}
    r = subprocess.run(cli + [str(path)], capture_output=True, text=True)
    assert "type baseline" in r.stdout and "memory" in r.stdout
    meta = read_snapshot(path).metadata
    mem = next(s for s in meta["sections"] if s["name"] == "memory")
    data = bytearray(path.read_bytes())
    data[mem["offset"] + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    r = subprocess.run(cli + [str(path), "--verify"], capture_output=True, text=True)
    assert r.returncode == 1
    assert "section 'memory' fails its checksum" in r.stderr


def test_cli_create_baseline_restores(tmp_path):
    out = tmp_path / "base.pyws"
    r = subprocess.run([sys.executable, "-m", "pyworkers", "snapshot", "create", "--type", "baseline",
                        "--runtime", "314.0.7", "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "baseline snapshot" in r.stdout
    iso = Restorer(out, expect_type="baseline").new_isolate()
    assert iso.eval("'asyncio' in __import__('sys').modules") == "True"


@pytest.mark.network
def test_create_package_snapshot_imports_the_layer(tmp_path):
    from pathlib import Path

    from pyworkers.snapshot.create import create_snapshot

    app = Path(__file__).resolve().parents[1] / "examples" / "hello"
    out = tmp_path / "pkg.pyws"
    meta = create_snapshot(app, "package", out, store=tmp_path / "store")
    assert meta["snapshot_type"] == "package"
    assert "fastapi" in meta["package_modules"]
    from pyworkers.store import Store

    layer = next((Store(tmp_path / "store").root / "layers").iterdir())
    iso = Restorer(out, site_packages=layer, expect_type="package").new_isolate()
    assert iso.eval("'fastapi' in __import__('sys').modules") == "True"
    assert iso.eval("'main' in __import__('sys').modules") == "False"  # no app code in it


@pytest.mark.network
def test_pydantic_model_validation_in_restored_fastapi_deployment(tmp_path):
    from pathlib import Path

    from pyworkers.deploy import deploy
    from pyworkers.store import Store

    app = Path(__file__).resolve().parents[1] / "examples" / "fastapi-full"
    dep = deploy(app, store=tmp_path / "store", progress=lambda m: None)
    rec = dep.record
    root = Path(Store(tmp_path / "store").root)
    assert rec["snapshot"]["metadata"]["snapshot_type"] == "dedicated"
    r = Restorer(root / rec["snapshot"]["path"], site_packages=root / rec["layer"]["path"],
                 mounts={"/app": str(root / rec["app"]["path"])}, expect_type="dedicated",
                 layer_hash=rec["layer"]["hash"], app_hash=rec["app"]["hash"])
    isolates = [r.new_isolate() for _ in range(3)]
    code = r'''
import pydantic
class Item(pydantic.BaseModel):
    name: str
    price: float
    tags: list[str] = []
print(Item(name="x", price="1.5", tags=["a"]).model_dump())
try:
    Item(name="x", price="not a number")
except pydantic.ValidationError as e:
    print(e.error_count(), e.errors()[0]["loc"])
import sys
print("fastapi" in sys.modules, "httpx" in sys.modules)
'''
    for iso in isolates:
        out = iso.run(code).stdout.decode().splitlines()
        assert out == ["{'name': 'x', 'price': 1.5, 'tags': ['a']}", "1 ('price',)", "True True"]


def test_snapshot_refuses_another_stdlib_archive(tmp_path, runtime_314):
    from pyworkers.snapshot.format import write_snapshot

    iso = Isolate(runtime_314)
    path = tmp_path / "a.pyws"
    take_snapshot(iso, path, snapshot_type="baseline")
    snap = read_snapshot(path)
    assert snap.metadata["stdlib_sha256"] == runtime_314.stdlib_sha256
    other = dict(snap.metadata, stdlib_sha256="f" * 64)
    other.pop("sections")
    p = tmp_path / "b.pyws"
    write_snapshot(p, other, {"memory": (snap.section("memory"), True), "state": (snap.section("state"), True)})
    with pytest.raises(SnapshotError, match="another standard library archive"):
        Restorer(p)
