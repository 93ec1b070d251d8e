"""Real deploys of examples/hello and examples/fastapi-full: requirements resolved against the
real package index (network), the real runtime (slow). Each example is deployed twice into a
fresh store; the second deploy must reuse the resolution, the cached wheels and the
site-packages layer. The speed-up is printed (timings are reported, not asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyworkers.compat import select
from pyworkers.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.network]

EXAMPLES = Path(__file__).parent.parent / "examples"


def _deploy_json(app: Path, store: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "pyworkers", "deploy", str(app), "--store",
                        str(store), "--json"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("example,must_have", [
    ("hello", {"fastapi", "starlette", "pydantic", "pydantic-core"}),
    ("fastapi-full", {"fastapi", "starlette", "pydantic", "pydantic-core", "httpx"}),
])
def test_example_deploys_and_redeploys_faster(tmp_path, capsys, example, must_have):
    store = tmp_path / "store"
    first = _deploy_json(EXAMPLES / example, store)
    assert first["name"] == example
    assert first["selection"] == select("2026-11-15").to_json()
    names = {p["name"] for p in first["lock"]["packages"]}
    assert must_have <= names, names
    core = next(p for p in first["lock"]["packages"] if p["name"] == "pydantic-core")
    assert core["wheel"].endswith(f"-{first['selection']['platform_tag']}.whl")
    assert first["layer"]["files"] > 100 and first["layer"]["bytes"] > 1 << 20
    assert first["asgi"]["object"] == "fastapi.applications.FastAPI"
    assert first["smoke"]["lifespan"] == "complete" and first["smoke"]["status"] == 200
    assert first["smoke"]["error"] is None
    if first["snapshot"] is not None:
        assert first["snapshot"]["bytes"] > 1 << 20
        assert first["snapshot"]["metadata"]["layer_hash"] == first["layer"]["hash"]

    second = _deploy_json(EXAMPLES / example, store)
    assert second["lock"]["reused"] is True and second["lock"]["seed"] == "previous"
    assert second["lock"]["packages"] == first["lock"]["packages"]
    assert second["wheels"]["downloaded"] == 0
    assert second["wheels"]["cached"] == second["wheels"]["count"] == len(names)
    assert second["layer"]["reused"] is True and second["layer"]["hash"] == first["layer"]["hash"]
    assert second["app"]["hash"] == first["app"]["hash"]
    assert second["smoke"]["status"] == 200

    st = Store(store)
    assert [d.id for d in st.list(example)] == [first["id"], second["id"]]
    assert st.current_id(example) == second["id"]
    assert len(list((store / "layers").iterdir())) == 1
    shown = subprocess.run([sys.executable, "-m", "pyworkers", "deployments", "show", example,
                            "--store", str(store)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for label in ("runtime", "lock", "layer", "snapshot", "timings"):
        assert any(line.startswith(label) for line in shown.stdout.splitlines()), label

    if second["snapshot"] is not None:
        _check_primed(st, example)

    t1, t2 = first["timings_ms"], second["timings_ms"]
    pkg = lambda t: t["resolve"] + t["download"] + t["layer"]  # noqa: E731
    with capsys.disabled():
        print(f"\n[{example}] first: " + " ".join(f"{k}={v:.0f}" for k, v in t1.items()))
        print(f"[{example}] second: " + " ".join(f"{k}={v:.0f}" for k, v in t2.items()))
        print(f"[{example}] total {t1['total']:.0f} -> {t2['total']:.0f} ms "
              f"({t1['total'] / t2['total']:.2f}x); resolve+download+layer {pkg(t1):.0f} -> "
              f"{pkg(t2):.0f} ms ({pkg(t1) / max(pkg(t2), 0.1):.1f}x)")


def _check_primed(st: Store, name: str) -> None:
    """What ``_pyworkers_asgi.prime`` did before the snapshot is in a restored isolate, with no
    request served: the lazily imported modules and FastAPI's endpoint-context cache (one entry
    per endpoint, so no first request reads a source file)."""
    from pyworkers.serve.targets import deployment_target

    _id, factory = deployment_target(st, name, memory_limit=512 << 20)
    iso = factory(stdout=lambda b: None, stderr=lambda b: None)
    try:
        mods = iso.eval("sorted(m for m in ('pyworkers_env', 'fastapi.telemetry._runtime', "
                        "'_pyworkers_serve', 'asyncio') if m in __import__('sys').modules)")
        assert mods == repr(sorted(["pyworkers_env", "fastapi.telemetry._runtime",
                                    "_pyworkers_serve", "asyncio"])), mods
        cached, endpoints = eval(iso.eval(
            "(len(__import__('fastapi.routing').routing._endpoint_context_cache), "
            "sum(1 for r in __import__('_pyworkers_asgi')._routes(__import__('_pyworkers_asgi')"
            "._app) if getattr(getattr(r, 'dependant', None), 'call', None)))"))
        assert endpoints >= 2 and cached == endpoints, (cached, endpoints)
    finally:
        iso.close()
