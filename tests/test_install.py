"""Installing runtime releases: integrity, missing tools, corrupted caches, concurrency."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyworkers.compat.releases import get_release
from pyworkers.runtime import engine, install


def _installed_root() -> Path:
    return install.ensure_release("314.0.7").root.parent.parent


def test_unknown_version_is_one_clear_line():
    from pyworkers.compat.releases import UnknownReleaseError

    with pytest.raises(UnknownReleaseError) as ei:
        install.ensure_release("3.1.4")
    assert "unknown runtime release '3.1.4'" in str(ei.value) and "\n" not in str(ei.value)


def test_missing_npm_names_the_cause_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(install.MissingToolError) as ei:
        install.ensure_release("314.0.7", cache_dir=tmp_path / "cache")
    assert "`npm` was not found on PATH" in str(ei.value)
    assert not (tmp_path / "cache" / "releases" / "314.0.7" / "package").exists()


@pytest.mark.network
def test_integrity_mismatch_is_refused_and_deleted(tmp_path):
    bad = dataclasses.replace(get_release("0.29.3"), npm_integrity="sha512-" + "A" * 86 + "==")
    with pytest.raises(install.IntegrityError) as ei:
        install.ensure_release(bad, cache_dir=tmp_path)
    assert "integrity mismatch" in str(ei.value)
    assert not list(tmp_path.rglob("*.tgz"))
    assert not (tmp_path / "releases" / "0.29.3" / "package").exists()


@pytest.mark.slow
def test_corrupted_compiled_module_is_rebuilt_not_used(tmp_path):
    src = _installed_root()
    root = tmp_path / "cache"
    shutil.copytree(src / "releases" / "314.0.7", root / "releases" / "314.0.7")
    shutil.copytree(src / "tools", root / "tools")
    first = install.ensure_release("314.0.7", cache_dir=root)  # compiles into the copy
    data = bytearray(first.cwasm.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.cwasm.write_bytes(bytes(data))
    with pytest.raises(engine.CorruptCacheError):
        engine.verify_cwasm(first.cwasm)
    assert not first.cwasm.exists()  # deleted, never used
    again = install.ensure_release("314.0.7", cache_dir=root)
    engine.verify_cwasm(again.cwasm)


@pytest.mark.slow
def test_corrupted_package_file_is_rebuilt_with_verify(tmp_path):
    src = _installed_root()
    root = tmp_path / "cache"
    shutil.copytree(src / "releases" / "314.0.7", root / "releases" / "314.0.7")
    shutil.copytree(src / "tools", root / "tools")
    shutil.copytree(src / "compiled", root / "compiled")
    stdlib = root / "releases" / "314.0.7" / "package" / "python_stdlib.zip"
    good = stdlib.read_bytes()
    stdlib.write_bytes(good[:100] + b"\0" * (len(good) - 100))  # same size: only a hash finds it
    install.ensure_release("314.0.7", cache_dir=root, verify=True)
    assert stdlib.read_bytes() == good


@pytest.mark.slow
@pytest.mark.network
def test_concurrent_installs_into_one_fresh_cache(tmp_path):
    code = ("import sys; from pyworkers.runtime.install import ensure_release; "
            "r = ensure_release('0.29.3', cache_dir=sys.argv[1]); print(r.cwasm)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    assert install.is_installed("0.29.3", cache_dir=tmp_path)
    manifest = json.loads((tmp_path / "releases" / "0.29.3" / "package.manifest.json").read_text())
    assert set(manifest) == set(install.PACKAGE_FILES)


def test_cli_runtimes_install_reports_and_is_idempotent():
    r = subprocess.run([sys.executable, "-m", "pyworkers", "runtimes", "install", "314.0.7"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("314.0.7 (Python 3.14.2) installed at ")
    r = subprocess.run([sys.executable, "-m", "pyworkers", "runtimes", "install", "9.9.9"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error: unknown runtime release")
