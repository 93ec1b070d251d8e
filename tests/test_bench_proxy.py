"""`pyworkers bench proxy` (issue 12) with tiny counts: the upstream, `pyworkers serve` (httpx
resolved from the package index in development mode) and native uvicorn all start, every
proxied request returns the upstream's body, and the socket round trips are measured."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.timeout(240)
def test_bench_proxy_smoke(tmp_path):
    from pyworkers.benchmarks import proxy

    out = tmp_path / "p.json"
    r = subprocess.run([sys.executable, "-m", "pyworkers", "bench", "proxy", "--clients", "3",
                        "--requests", "12", "--rounds", "2", "--delay-ms", "20",
                        "--roundtrip-n", "50", "--json", "-o", str(out)],
                       capture_output=True, text=True, timeout=230, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["kind"] == proxy.KIND and json.loads(out.read_text()) == res
    for server in ("pyworkers", "native"):
        p = res["proxy"][server]
        assert p["statuses"] == {"200": 12}, (server, p)
        assert p["latency_ms"]["n"] == 12
        assert p["latency_ms"]["min"] >= 18.0  # every request waited on the 20 ms upstream
        assert res["servers"][server]["httpx"]  # the app imported httpx in both
    assert res["proxy"]["ratio"]["rps_pyworkers_over_native"] > 0
    rt = res["roundtrip"]
    assert rt["n"] == 50
    for k in ("send_recv", "connect_send_recv_close"):
        assert rt["guest"][k]["p50_us"] > 0 and rt["native"][k]["p50_us"] > 0
    text = proxy.format_table(res)
    assert "pyw/native" in text and "connect+send+recv+close" in text
