"""Peer 5 of the cold-start benchmark (Pyodide in Node with its own snapshot API): prepare the
hello_asgi workload, restore it once in a fresh node process and check the first response."""
from __future__ import annotations

import pytest

from pyworkers.benchmarks import node_peer


@pytest.fixture(scope="module")
def peer_ready():
    ok, why = node_peer.available()
    if not ok and node_peer.node_path() is not None:
        # node is there: install the release (npm pack, as the other slow tests do), then re-check
        from pyworkers.runtime.install import ensure_release

        ensure_release(node_peer.RELEASE)
        ok, why = node_peer.available()
    if not ok:
        pytest.skip(why)
    return why


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_hello_asgi_restore_first_response(peer_ready, tmp_path):
    snap = node_peer.prepare("hello_asgi", tmp_path / "work")
    assert snap.is_file() and snap.stat().st_size > 1 << 20
    r = node_peer.run_once(snap)
    assert r["ok"] and r["mode"] == "run"
    assert r["status"] == 200
    assert r["body_head"] == "Hello from a raw ASGI app!"
    assert r["body_len"] == len("Hello from a raw ASGI app!")
    assert r["spawn_to_first_response_ms"] > 0
    assert 0 < r["total_ms"] <= r["spawn_to_first_response_ms"] + 50
    assert r["boot_ms"] > 0 and r["first_response_ms"] > 0


def test_summary_percentiles():
    s = node_peer.summary([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"n": 5, "median_ms": 3.0, "p50_ms": 3.0, "p99_ms": 5.0, "min_ms": 1.0,
                 "max_ms": 5.0}
