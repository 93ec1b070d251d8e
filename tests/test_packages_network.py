"""pyworkers.packages against the real package index (the URL comes from the user's pip
configuration). Marked ``network``; CI runs them."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest

from pyworkers.compat import select
from pyworkers.packages import (ConflictError, HashMismatchError, NoCompatibleWheelError,
                                download, install_layer, resolve)
from pyworkers.packages.release_lock import default_package_base_url

pytestmark = pytest.mark.network

DATA = Path(__file__).parent / "data" / "packages"
LOCK314 = DATA / "pyodide-lock-314.json"
APP = ["fastapi", "pydantic", "httpx", "jinja2", "python-multipart"]
UNREACHABLE = "http://127.0.0.1:9/pyodide/"


def _cdn_reachable(version: str) -> bool:
    url = default_package_base_url(version)
    if not url:
        return False
    try:
        httpx.head(url + "micropip-0.11.1-py3-none-any.whl", timeout=10)
        return True
    except httpx.HTTPError:
        return False


def test_314_resolves_fastapi_set_with_pydantic_cores_pyemscripten_wheel(tmp_path):
    sel = select("2026-11-15")
    assert sel.release.pyodide_version == "314.0.7"
    notes: list[str] = []
    res = resolve(["fastapi", "pydantic", "httpx", "python-multipart"], sel,
                  pyodide_lock=LOCK314, cache_dir=tmp_path, progress=notes.append)
    names = {w.name for w in res.wheels}
    assert {"fastapi", "pydantic", "pydantic-core", "httpx", "python-multipart",
            "starlette"} <= names
    core = res.get("pydantic-core")
    assert core.filename.endswith("-cp314-cp314-pyemscripten_2026_0_wasm32.whl")
    assert all(re.fullmatch(r"[0-9a-f]{64}", w.sha256) for w in res.wheels)
    assert all(w.source in ("lock", "index") for w in res.wheels)
    if not _cdn_reachable("314.0.7"):
        assert len([n for n in notes if "base URL is unreachable" in n]) == 1
        assert all(w.source == "index" for w in res.wheels)
        cutoff = sel.package_set_date.isoformat()
        assert all(w.upload_time.date().isoformat() < cutoff for w in res.wheels)
    got = download(res, tmp_path)
    for cw in got:
        assert hashlib.sha256(cw.path.read_bytes()).hexdigest() == cw.wheel.sha256
    layer = install_layer(got, tmp_path / "site-packages")
    assert list((layer.path / "pydantic_core").glob("_pydantic_core*.so"))
    assert (layer.path / "fastapi" / "__init__.py").is_file()
    assert (layer.path / "pydantic_core-" f"{core.version}.dist-info" / "INSTALLER").is_file()


def test_314_with_jinja2_needs_markupsafe_from_the_release_lock(tmp_path):
    """markupsafe publishes no wasm wheel on the index: only the release lock has one."""
    if _cdn_reachable("314.0.7"):
        res = resolve(APP, "314.0.7", pyodide_lock=LOCK314, cache_dir=tmp_path)
        assert res.get("markupsafe").source == "lock"
        assert res.get("jinja2") is not None
    else:
        with pytest.raises(NoCompatibleWheelError) as ei:
            resolve(APP, "314.0.7", pyodide_lock=LOCK314, cache_dir=tmp_path)
        assert ei.value.projects == ("markupsafe",)
        assert str(ei.value).startswith("markupsafe: no wheel for Pyodide 314.0.7 "
                                        "(pyemscripten_2026_0_wasm32)")
        assert "the release lock pins markupsafe" in ei.value.detail


def test_0293_fails_on_pydantic_core(tmp_path):
    sel = select("2025-10-15")
    assert sel.release.pyodide_version == "0.29.3"
    with pytest.raises(NoCompatibleWheelError) as ei:
        resolve(APP, sel, pyodide_lock=None, cache_dir=tmp_path)
    e = ei.value
    assert "pydantic-core" in e.projects
    text = str(e) + "\n" + e.detail
    assert re.search(r"pydantic-core: no wheel for Pyodide 0\.29\.3 \(pyodide_2025_0_wasm32\)",
                     text)
    assert "\n" not in str(e)


def test_0293_with_unreachable_lock_falls_back_once_then_fails_on_pydantic_core(tmp_path):
    notes: list[str] = []
    with pytest.raises(NoCompatibleWheelError) as ei:
        resolve(["fastapi", "pydantic", "httpx", "python-multipart"], "0.29.3",
                pyodide_lock=DATA / "pyodide-lock-0.29.3.json", package_base_url=UNREACHABLE,
                cache_dir=tmp_path, progress=notes.append)
    assert ei.value.projects == ("pydantic-core",)
    assert len([n for n in notes if "base URL is unreachable" in n]) == 1


def test_markers_file_skips_foo(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text('foo; sys_platform == "win32"\nidna\n')
    res = resolve(req, "314.0.7", cache_dir=tmp_path)
    assert [w.name for w in res.wheels] == ["idna"]
    assert res.skipped and res.skipped[0].startswith("foo (requirements.txt:1)")


def test_conflict_chain_against_the_index(tmp_path):
    with pytest.raises(ConflictError) as ei:
        resolve(["fastapi==0.136.1", "starlette<0.40"], "314.0.7", cache_dir=tmp_path)
    msg = str(ei.value)
    assert "starlette" in msg and "<requirements>:2 requires starlette<0.40" in msg
    assert "fastapi 0.136.1 (<requirements>:1) requires starlette" in msg


def test_hash_mismatch_deletes_the_download(tmp_path):
    import dataclasses

    res = resolve(["idna"], "314.0.7", cache_dir=tmp_path)
    bad = dataclasses.replace(res, wheels=tuple(dataclasses.replace(w, sha256="0" * 64)
                                                for w in res.wheels))
    with pytest.raises(HashMismatchError):
        download(bad, tmp_path)
    left = [p for p in (tmp_path / "packages" / "wheels").rglob("*.whl")]
    assert left == []


def test_lock_reuse_without_network(tmp_path):
    lock = tmp_path / "pylock.toml"
    first = resolve(["httpx"], "314.0.7", cache_dir=tmp_path, lock_path=lock)

    def refuse(request):
        raise AssertionError(f"network used: {request.url}")

    again = resolve(["httpx"], "314.0.7", cache_dir=tmp_path, lock_path=lock,
                    transport=httpx.MockTransport(refuse))
    assert again.reused and again.wheels == first.wheels


def test_cli_resolve_json(tmp_path):
    from click.testing import CliRunner

    from pyworkers.cli import main

    (tmp_path / "requirements.txt").write_text("pydantic\n")
    r = CliRunner().invoke(main, ["resolve", "-r", str(tmp_path / "requirements.txt"),
                                  "--compatibility-date", "2026-11-15", "--no-release-lock",
                                  "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert r.exit_code == 0, r.output
    out = {x["name"]: x for x in json.loads(r.stdout)}
    assert out["pydantic-core"]["wheel"].endswith("pyemscripten_2026_0_wasm32.whl")
    assert out["pydantic-core"]["source"] == "index"
    assert (tmp_path / "pylock.toml").is_file()


@pytest.mark.slow
def test_installed_layer_imports_in_the_sandbox(tmp_path):
    """Issue must-show: resolve + install a layer for 314.0.7, then
    `pyworkers python --site-packages LAYER -c "import fastapi, pydantic; print(pydantic.VERSION)"`."""
    import subprocess
    import sys

    from pyworkers.packages import install_layer, resolve

    res = resolve(["fastapi", "pydantic"], "314.0.7", package_base_url=None)
    layer = tmp_path / "layer"
    install_layer(res, layer)
    r = subprocess.run([sys.executable, "-m", "pyworkers", "python", "--runtime", "314.0.7",
                        "--site-packages", str(layer), "-c",
                        "import fastapi, pydantic; print(pydantic.VERSION)"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == res.get("pydantic").version
