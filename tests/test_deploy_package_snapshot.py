"""A redeploy starts from the layer's package snapshot instead of importing every package again."""
from pathlib import Path

import pytest

from pyworkers.deploy import deploy
from pyworkers.snapshot import read_snapshot
from pyworkers.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.network]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_second_deploy_reuses_lock_wheels_layer_and_package_snapshot(tmp_path):
    store = tmp_path / "store"
    first = deploy(EXAMPLES / "fastapi-full", store=store, progress=lambda m: None).record
    second = deploy(EXAMPLES / "fastapi-full", store=store, progress=lambda m: None).record
    pkg1, pkg2 = first["layer"]["package_snapshot"], second["layer"]["package_snapshot"]
    assert pkg1["reused"] is False and pkg2["reused"] is True and pkg1["path"] == pkg2["path"]
    assert second["lock"]["reused"] and second["layer"]["reused"] and second["wheels"]["downloaded"] == 0
    meta = read_snapshot(Store(store).root / pkg2["path"]).metadata
    assert meta["snapshot_type"] == "package" and meta["layer_hash"] == second["layer"]["hash"]
    # the redeployed app works: its dedicated snapshot restored and answered the smoke test
    assert second["smoke"]["status"] == 200 and second["snapshot"]["type"] == "dedicated"
    t1, t2 = first["timings_ms"], second["timings_ms"]
    print(f"\n[package snapshot] boot+import {t1['boot'] + t1['import']:.0f} -> "
          f"{t2['boot'] + t2['import']:.0f} ms; resolve+download+layer "
          f"{t1['resolve'] + t1['download'] + t1['layer']:.0f} -> "
          f"{t2['resolve'] + t2['download'] + t2['layer']:.0f} ms; total {t1['total']:.0f} -> {t2['total']:.0f} ms")
