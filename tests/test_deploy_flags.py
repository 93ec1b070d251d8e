"""Behaviour flags that change what deploy and serve do (compat/releases.toml)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pyworkers.deploy import deploy
from pyworkers.snapshot import Restorer
from pyworkers.store import Store

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "deploy"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_no_dedicated_snapshot_takes_a_package_snapshot(tmp_path):
    store = tmp_path / "store"
    dep = deploy(DATA / "plain", store=store, flags=["no_python_dedicated_snapshot"], progress=lambda m: None)
    rec = dep.record
    assert rec["snapshot"]["type"] == "package"
    assert rec["smoke"]["status"] == 200 and rec["smoke"]["restored_from_snapshot"]
    d = Store(store).current(rec["name"])
    iso = Restorer(d.snapshot_path, **d.restore_kwargs()).new_isolate()
    assert iso.eval("'main' in __import__('sys').modules") == "False"  # the app is imported per isolate
    default = deploy(DATA / "plain", store=store, progress=lambda m: None).record
    assert default["snapshot"]["type"] == "dedicated"


@pytest.mark.network
def test_no_inline_sync_endpoints_keeps_the_thread_pool(tmp_path):
    """Without the flag a `def` endpoint runs inline (200); with `no_` it goes to Starlette's
    thread pool, which cannot start threads in the sandbox (500)."""
    from pyworkers.serve import ServeConfig, ServerApp
    from pyworkers.serve.targets import deployment_target
    import asyncio
    import httpx

    store = Store(tmp_path / "store")
    results = {}
    for flags in ([], ["no_python_inline_sync_endpoints"]):
        deploy(EXAMPLES / "fastapi-full", store=store.root, flags=flags or None, progress=lambda m: None)
        _id, factory = deployment_target(store, "fastapi-full", memory_limit=None)
        app = ServerApp({"fastapi-full": factory}, ServeConfig(min_idle=0, max_isolates=1))

        async def go():
            async with _lifespan(app):
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                    return (await c.get("/sync/sum?a=1&b=2")).status_code

        results[tuple(flags)] = asyncio.run(go())
    assert results[()] == 200
    assert results[("no_python_inline_sync_endpoints",)] == 500


class _lifespan:
    """Run an ASGI app's lifespan around a block (httpx's ASGITransport does not)."""

    def __init__(self, app):
        self.app = app

    async def __aenter__(self):
        import asyncio

        self.queue: asyncio.Queue = asyncio.Queue()
        self.sent: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.ensure_future(self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                   self.queue.get, self.sent.put))
        await self.queue.put({"type": "lifespan.startup"})
        msg = await self.sent.get()
        assert msg["type"] == "lifespan.startup.complete", msg

    async def __aexit__(self, *exc):
        await self.queue.put({"type": "lifespan.shutdown"})
        await self.sent.get()
        await self.task
