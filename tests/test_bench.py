"""``pyworkers bench`` (the cold-start benchmark, issue 8): the report, ``bench compare`` and the
plot from synthetic results (fast), and one real ``--runs 1`` smoke run of the hello workload
(slow, network: deploys, pip-installs a native pydantic-core, starts servers and node)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyworkers.benchmarks import report, results
from pyworkers.benchmarks.common import summary
from pyworkers.cli import main

MACHINE = {"cpu": "Test CPU", "cores": 2, "os": "Linux 6", "arch": "x86_64", "python": "3.12.1",
           "wasmtime": "50.0.1", "pyworkers": "0.1.0", "commit": None, "node": "20.0.0",
           "runtime": {"release": "python_workers_20260610", "pyodide": "314.0.7",
                       "python": "3.14.2"}, "date": "2026-01-01T00:00:00Z"}


def fake_result(scale: float = 1.0, node: bool = True) -> dict:
    base = {"no_snapshot": 4000, "snapshot_restore": 20, "prewarmed": 5, "native_uvicorn": 1500,
            "pyodide_node": 600}
    modes = {}
    for key, number, label in results.MODES:
        e = {"number": number, "label": label}
        if key == "pyodide_node" and not node:
            e["skipped"] = "node is not installed (not on PATH)"
        else:
            xs = [base[key] * scale * (1 + i / 10) for i in range(5)]
            e.update(samples_ms=xs, summary=summary(xs), phases_p50_ms={},
                     statuses=[200])
        if key == "pyodide_node":
            e.update(workload="starlette_app", path="/", note=results.PYODIDE_SNAPSHOT_NOTE)
        modes[key] = e
    res = {"format": results.FORMAT, "kind": results.KIND, "machine": MACHINE,
           "workload": {"name": "reference", "about": "x", "app": "examples/fastapi-full",
                        "path": "/items/1"},
           "method": {"runs": 5, "warmup": 1}, "modes": modes,
           "deploy": {"timings_ms": {"import": 5000.0, "total": 18000.0},
                      "image_module_compile_ms": 10000.0},
           "snapshot": {"memory_raw_bytes": 45 << 20, "memory_compressed_bytes": 11 << 20,
                        "file_bytes": 11 << 20, "compression": "zstd", "side_modules": []},
           "restorer_open_ms": 20.0, "published": results.PUBLISHED,
           "warm": {"skipped": "skipped on request (--skip)"},
           "memory": {"counts": {"1": {"rss_per_isolate_bytes": 20 << 20,
                                       "pss_per_isolate_bytes": 6 << 20,
                                       "private_dirty_per_isolate_bytes": 5 << 20}}},
           "wall_s": 100.0}
    res["ratios_to_mode2"] = results.ratios(res)
    res["peers"] = results.peer_ratios(res)
    return res


def test_summary_nearest_rank():
    s = summary([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["n"], s["p50"], s["p99"], s["min"], s["max"], s["mean"]) == (5, 3.0, 5.0, 1.0, 5.0, 3.0)


def test_report_shows_all_modes_ratios_and_peers():
    res = fake_result()
    assert res["ratios_to_mode2"]["snapshot_restore"] == {"p50": 1.0, "mean": 1.0}
    assert res["ratios_to_mode2"]["native_uvicorn"]["p50"] == 75.0
    assert res["peers"]["pyodide_node"]["speedup_p50"] == 30.0
    cf = res["peers"]["published_not_measured_here"]["Cloudflare Python Workers"]
    assert cf["speedup_mean"] == round(1027 / 24.0, 1)
    text = report.format_table(res)
    for _, number, label in results.MODES:
        assert f"{number} {label}" in text
    assert "p50 / mode 2" in text and "75x" in text
    assert "pure-Python stand-in" in text and "NOT measured here" in text
    skipped = report.format_table(fake_result(node=False))
    assert "skipped" in skipped and "node is not installed" in skipped
    md = report.cold_table(res, markdown=True)
    assert md[0].startswith("| mode |") and len(md) == 2 + len(results.MODES)


def test_compare_cli(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(fake_result()))
    b.write_text(json.dumps(fake_result(scale=2.0, node=False)))
    r = CliRunner().invoke(main, ["bench", "compare", str(a), str(b)])
    assert r.exit_code == 0, r.output
    assert "2 pyworkers, snapshot restore" in r.output and "2.00x" in r.output
    r = CliRunner().invoke(main, ["bench", "compare", str(a), str(b), "--json"])
    c = json.loads(r.output)
    rows = {row["mode"]: row for row in c["modes"]}
    assert rows["snapshot_restore"]["b_over_a_p50"] == 2.0
    assert rows["pyodide_node"]["b_p50"] is None
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = CliRunner().invoke(main, ["bench", "compare", str(a), str(bad)])
    assert r.exit_code == 1 and "not a `pyworkers bench --json` result" in r.output


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from pyworkers.benchmarks import plot

    out = tmp_path / "p.png"
    plot.plot_result(fake_result(node=False), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.timeout(900)
def test_bench_runs_1_smoke(tmp_path):
    """The real benchmark, once per mode, on the hello workload."""
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "pyworkers", "bench", "--workload", "hello",
                        "--runs", "1", "--warmup", "0", "--requests", "20", "--json",
                        "-o", str(out)], capture_output=True, text=True, timeout=900,
                       cwd=tmp_path, env={**os.environ})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert json.loads(out.read_text())["modes"].keys() == res["modes"].keys()
    assert list(res["modes"]) == list(results.MODE_KEYS)
    for key in ("no_snapshot", "snapshot_restore", "prewarmed", "native_uvicorn"):
        e = res["modes"][key]
        assert "skipped" not in e, e
        assert e["summary"]["n"] == 1 and e["statuses"] == [200]
    node = res["modes"]["pyodide_node"]
    assert ("skipped" in node) or (node["summary"]["n"] == 1 and node["statuses"] == [200])
    assert res["modes"]["prewarmed"]["summary"]["p50"] < res["modes"]["no_snapshot"]["summary"]["p50"]
    assert res["warm"]["pyworkers"]["statuses"] == {"200": 40}
    assert res["warm"]["native"]["statuses"] == {"200": 40}
    assert set(res["memory"]["counts"]) == {"1", "8", "32"}
    assert res["snapshot"]["memory_raw_bytes"] > res["snapshot"]["memory_compressed_bytes"] > 0
    assert res["machine"]["wasmtime"] and res["machine"]["cpu"]
    text = report.format_table(res)
    assert "5 peer: Pyodide in Node" in text
    assert Path(out).stat().st_size < 200_000


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bench_concurrency_smoke(tmp_path):
    """`pyworkers bench concurrency` with tiny counts (issue 11): both servers (pyworkers
    serve --max-isolates 1, native uvicorn) answer every request of every endpoint."""
    from pyworkers.benchmarks import concurrency

    out = tmp_path / "c.json"
    r = subprocess.run([sys.executable, "-m", "pyworkers", "bench", "concurrency", "--clients",
                        "4", "--requests", "40", "--sync-requests", "4", "--rounds", "2",
                        "--json", "-o", str(out)], capture_output=True, text=True, timeout=170,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["kind"] == concurrency.KIND and json.loads(out.read_text()) == res
    assert list(res["endpoints"]) == ["io", "def_inline", "def_threadpool"]
    for key, n in (("io", 40), ("def_inline", 4), ("def_threadpool", 4)):
        e = res["endpoints"][key]
        for server in ("pyworkers", "native"):
            assert e[server]["statuses"] == {"200": n}, (key, server, e[server])
            assert e[server]["latency_ms"]["n"] == n
            assert e[server]["latency_ms"]["min"] >= 45.0  # every endpoint waits 50 ms
        assert e["ratio"]["rps_pyworkers_over_native"] > 0
    assert res["endpoints"]["io"]["ideal_rps"] == {"pyworkers": 80.0, "native": 80.0}
    text = concurrency.format_table(res)
    assert "def_threadpool" in text and "pyw/native" in text
