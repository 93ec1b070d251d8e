"""Smoke test of ``pyworkers bench workers`` (tiny counts; the numbers live in the README)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_workers_smoke(tmp_path):
    out = tmp_path / "w.json"
    r = subprocess.run([sys.executable, "-m", "pyworkers", "bench", "workers", "--requests",
                        "40", "--clients", "4", "--rounds", "1", "-q", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert set(res["results"]) == {"1", "2"}
    for n in ("1", "2"):
        for server in ("pyworkers", "native"):
            s = res["results"][n][server]
            assert s["requests"] == 40 and s["statuses"] == {"200": 40} and s["rps"] > 0
    assert "pyworkers req/s" not in r.stderr and "workers" in r.stdout
