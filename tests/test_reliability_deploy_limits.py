"""Reliability: deploy-time limits (issue 17, item 5): zip bombs, oversized wheels and app
directories, streamed copies, kept modification times, symbolic links."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pyworkers.packages import InstallLimits, LayerError
from pyworkers.packages.install import install_wheel

REPO = Path(__file__).resolve().parents[1]


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def run_measured(args: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``python -m pyworkers *args`` under a fresh intermediate process that reports the
    command's own peak RSS (KiB): ``RUSAGE_CHILDREN`` of this test process would also count
    every earlier child of the test session."""
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:])\n"
             "sys.stderr.write('\\npeak-rss-kib %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.exit(r.returncode)\n")
    r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "pyworkers", *args],
                       capture_output=True, text=True, timeout=300)
    peak = int(r.stderr.rsplit("peak-rss-kib ", 1)[1].split()[0])
    return r, peak


def bomb_wheel(path: Path, name: str, big: int) -> Path:
    """A valid-looking wheel whose ``name/zeros.bin`` inflates to ``big`` bytes of zeros
    (written in 1 MiB chunks, so building it needs no memory). RECORD lists the right hash."""
    di = f"{name}-1.0.dist-info"
    sha = hashlib.sha256()
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open(f"{name}/zeros.bin", "w", force_zip64=True) as f:
            left = big
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                sha.update(chunk[:n])
                left -= n
        files = {f"{name}/__init__.py": b"", f"{di}/METADATA": f"Name: {name}\nVersion: 1.0\n".encode(),
                 f"{di}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
        rows = [[f"{name}/zeros.bin", "sha256=" + base64.urlsafe_b64encode(sha.digest()).rstrip(b"=").decode(),
                 str(big)]]
        for n, data in files.items():
            zf.writestr(n, data)
            rows.append([n, "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode(),
                         str(len(data))])
        rows.append([f"{di}/RECORD", "", ""])
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        zf.writestr(f"{di}/RECORD", buf.getvalue())
    return path


@pytest.fixture(scope="module")
def two_gib_bomb(tmp_path_factory) -> Path:
    return bomb_wheel(tmp_path_factory.mktemp("bomb") / "bomb-1.0-py3-none-any.whl", "bomb", 2 << 30)


def test_two_mb_zip_bomb_wheel_is_refused_before_writing(two_gib_bomb, tmp_path):
    assert two_gib_bomb.stat().st_size < 3 << 20
    root = tmp_path / "layer"
    root.mkdir()
    rss0 = _rss()
    with pytest.raises(LayerError) as ei:
        install_wheel(two_gib_bomb, root, "bomb")
    msg = str(ei.value)
    assert msg.startswith("bomb-1.0-py3-none-any.whl: ") and "PYWORKERS_WHEEL_MAX_" in msg, msg
    assert "\n" not in msg
    assert list(root.iterdir()) == []
    assert _rss() - rss0 < 32 << 20
    # under a size limit that allows 2 GiB, the ratio check still refuses it
    with pytest.raises(LayerError, match=r"ratio \d+, limit 100\): refusing a likely zip bomb"):
        install_wheel(two_gib_bomb, root, "bomb", limits=InstallLimits(max_wheel_bytes=4 << 30))
    assert list(root.iterdir()) == []


def test_wheel_file_count_layer_size_and_legit_install(tmp_path):
    small = bomb_wheel(tmp_path / "ok-1.0-py3-none-any.whl", "ok", 1000)
    root = tmp_path / "layer"
    root.mkdir()
    assert install_wheel(small, root, "ok") == 6
    assert (root / "ok" / "zeros.bin").read_bytes() == bytes(1000)
    root2 = tmp_path / "layer2"
    root2.mkdir()
    with pytest.raises(LayerError, match="5 files, more than the limit of 3 per wheel"):
        install_wheel(small, root2, "ok", limits=InstallLimits(max_wheel_files=3))
    with pytest.raises(LayerError, match="PYWORKERS_LAYER_MAX_BYTES"):
        install_wheel(small, root2, "ok", budget=[500])
    with pytest.raises(LayerError, match="PYWORKERS_WHEEL_MAX_RATIO"):
        InstallLimits.from_env({"PYWORKERS_WHEEL_MAX_RATIO": "zero"})
    assert InstallLimits.from_env({"PYWORKERS_WHEEL_MAX_FILES": "7"}).max_wheel_files == 7


# --------------------------------------------------------------------------- app directory

from pyworkers.deploy import DeployError, copy_app  # noqa: E402


def test_huge_sparse_file_in_the_app_is_refused_without_reading_it(tmp_path):
    src = tmp_path / "app"
    src.mkdir()
    (src / "main.py").write_text("app = 1\n")
    with open(src / "huge.bin", "wb") as f:
        f.truncate(2 << 30)  # 2 GiB, sparse: costs no disk
    rss0 = _rss()
    with pytest.raises(DeployError) as ei:
        copy_app(src, tmp_path / "copy")
    assert ei.value.stage == "app"
    assert "huge.bin" in ei.value.message and "PYWORKERS_APP_MAX_BYTES" in ei.value.message
    assert _rss() - rss0 < 32 << 20
    assert not (tmp_path / "copy").exists() or not any((tmp_path / "copy").rglob("*.bin"))


def test_app_copy_is_streamed_and_keeps_modification_times(tmp_path):
    src = tmp_path / "app"
    (src / "static").mkdir(parents=True)
    (src / "main.py").write_text("app = 1\n")
    big = src / "static" / "big.bin"
    with open(big, "wb") as f:
        for i in range(64):
            f.write(os.urandom(1 << 20))
    os.utime(src / "main.py", ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    rss0 = _rss()
    info = copy_app(src, tmp_path / "c1")
    assert _rss() - rss0 < 32 << 20  # 64 MiB copied in chunks
    assert info["files"] == 2 and info["bytes"] == (64 << 20) + 8
    for rel in ("main.py", "static/big.bin"):
        assert os.stat(tmp_path / "c1" / rel).st_mtime_ns == os.stat(src / rel).st_mtime_ns
    assert (tmp_path / "c1" / "static" / "big.bin").read_bytes() == big.read_bytes()
    # a redeploy of the same files gives the same times (static Last-Modified/ETag hold)
    copy_app(src, tmp_path / "c2")
    assert os.stat(tmp_path / "c2" / "main.py").st_mtime_ns == 1_600_000_000_123_456_789


def test_app_file_count_limit(tmp_path, monkeypatch):
    src = tmp_path / "app"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.py").write_text("")
    monkeypatch.setenv("PYWORKERS_APP_MAX_FILES", "3")
    with pytest.raises(DeployError, match="more than 3 files.*PYWORKERS_APP_MAX_FILES"):
        copy_app(src, tmp_path / "copy")


def test_symlinks_noted_loops_and_links_out_refused(tmp_path):
    src = tmp_path / "app"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text("app = 1\n")
    (src / "alias.py").symlink_to("main.py")
    (src / "pkg" / "up").symlink_to("..")              # a directory loop
    notes: list[str] = []
    with pytest.raises(DeployError) as ei:
        copy_app(src, tmp_path / "c1", note=notes.append)
    msg = ei.value.message
    assert "pkg/up" in msg and "loop" in msg and len(msg) < 300, msg
    (src / "pkg" / "up").unlink()
    (src / "a").symlink_to("b")
    (src / "b").symlink_to("a")                        # a link cycle
    with pytest.raises(DeployError) as ei:
        copy_app(src, tmp_path / "c2", note=notes.append)
    assert "loop" in ei.value.message and len(ei.value.message) < 300, ei.value.message
    (src / "a").unlink()
    (src / "b").unlink()
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (src / "leak").symlink_to(secret)
    with pytest.raises(DeployError, match="leak: a symbolic link to .*secret.txt, outside the app directory"):
        copy_app(src, tmp_path / "c3", note=notes.append)
    (src / "leak").unlink()
    notes.clear()
    info = copy_app(src, tmp_path / "c4", note=notes.append)
    assert info["files"] == 2
    assert (tmp_path / "c4" / "alias.py").read_text() == "app = 1\n"
    assert any("symbolic links" in n and "alias.py -> main.py" in n for n in notes), notes


def test_cli_deploy_refuses_a_sparse_file_with_low_peak_rss(tmp_path):
    app = tmp_path / "hello"
    subprocess.run(["cp", "-r", str(REPO / "examples" / "hello"), str(app)], check=True)
    with open(app / "huge.bin", "wb") as f:
        f.truncate(4 << 30)
    r, peak_kib = run_measured(["deploy", str(app), "--store", str(tmp_path / "store")])
    assert r.returncode != 0
    assert "huge.bin" in r.stderr and "PYWORKERS_APP_MAX_BYTES" in r.stderr, r.stderr
    assert peak_kib < 600 * 1024, f"peak RSS of the deploy: {peak_kib // 1024} MiB"


def test_cli_deploy_refuses_a_zip_bomb_wheel_in_the_layer_stage(two_gib_bomb, tmp_path):
    app = tmp_path / "bomb-app"
    (app / "wheels").mkdir(parents=True)
    shutil.copy(two_gib_bomb, app / "wheels" / two_gib_bomb.name)
    (app / "main.py").write_text("import bomb\n\nasync def app(scope, receive, send):\n    pass\n")
    (app / "pyworkers.toml").write_text('name = "bomb-app"\ncompatibility_date = "2026-11-15"\n')
    (app / "requirements.txt").write_text(f"--no-index\n./wheels/{two_gib_bomb.name}\n")
    store = tmp_path / "store"
    r, peak_kib = run_measured(["deploy", str(app), "--store", str(store)])
    assert r.returncode == 1, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert err and "bomb-1.0-py3-none-any.whl" in err[-1] and "PYWORKERS_WHEEL_MAX_" in err[-1], r.stderr
    assert "FAIL layer" in r.stderr
    assert not (store / "deployments").exists() or not any((store / "deployments").iterdir())
    assert peak_kib < 600 * 1024, f"peak RSS of the deploy: {peak_kib // 1024} MiB"
