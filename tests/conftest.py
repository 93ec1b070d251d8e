"""Shared fixtures: the real runtime releases (installed once per machine into the pyworkers
cache, ``$PYWORKERS_CACHE_DIR`` or the per-user cache) and real wheels from the package index."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

WHEEL_PLATFORM = {"314.0.7": ("pyemscripten_2026_0_wasm32", "3.14")}


@pytest.fixture(scope="session")
def runtime_314():
    """The installed 314.0.7 release (installs on first use: npm pack, wasm-opt, compile)."""
    from pyworkers.runtime import Runtime

    return Runtime.get("314.0.7")


@pytest.fixture(scope="session")
def runtime_029():
    from pyworkers.runtime import Runtime

    return Runtime.get("0.29.3")


def download_wheels(dest: Path, release: str, *names: str) -> list[Path]:
    """``pip download`` the wheels of ``names`` for ``release``'s platform (no dependencies)."""
    platform, pyver = WHEEL_PLATFORM[release]
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--platform", platform, "--python-version", pyver, "--implementation", "cp",
         "-d", str(dest), *names],
        check=True, timeout=600,
    )
    return sorted(dest.glob("*.whl"))


@pytest.fixture(scope="session")
def native_site_packages(tmp_path_factory) -> Path:
    """A site-packages dir with the real msgpack and pydantic_core pyemscripten wheels (+ the
    pure-Python typing_extensions/typing-inspection pydantic_core imports)."""
    d = tmp_path_factory.mktemp("wheels")
    wheels = download_wheels(d / "dl", "314.0.7", "msgpack", "pydantic_core")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(d / "dl"),
                    "typing_extensions", "typing-inspection"], check=True, timeout=600)
    sp = d / "site-packages"
    for w in sorted((d / "dl").glob("*.whl")):
        with zipfile.ZipFile(w) as zf:
            zf.extractall(sp)
    assert any("pydantic_core" in w.name for w in wheels)
    return sp
