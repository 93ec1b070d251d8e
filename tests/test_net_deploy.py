"""Outbound network through deploy: the ``[outbound]`` policy reaches the deployed app's
request handler (deploy's smoke request and a restored isolate serving through the guest ASGI
adapter), ``egress_policy`` for serve, and a connection left open by the app's import fails the
deploy naming the destination and the module."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from _net import http_server
from pyworkers.deploy import DeployError, deploy, egress_policy
from pyworkers.store import Store

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "deploy"


def _app(name: str, tmp_path: Path, outbound: str | None = None) -> Path:
    dest = tmp_path / "apps" / name
    shutil.copytree(DATA / name, dest)
    if outbound is not None:
        with open(dest / "pyworkers.toml", "a") as f:
            f.write("\n[outbound]\n" + outbound)
    return dest


def _get(dep, path: str, egress) -> tuple[int, bytes]:
    """One request through a restored isolate and serve's own worker and request path."""
    import asyncio
    from functools import partial

    from pyworkers.serve import with_app
    from pyworkers.serve.oneshot import request, start_worker
    from pyworkers.snapshot import Restorer

    r = Restorer(dep.snapshot_path, **dep.restore_kwargs())
    factory = with_app(partial(r.new_isolate, egress=egress), dep.record["config"]["main"])

    async def go():
        w = await start_worker(factory, "net-test", startup_timeout=30)
        try:
            resp = await request(w, "GET", path, timeout=30)
        finally:
            await w.stop(0, 5)
        return resp.status, resp.body

    return asyncio.run(go())


def test_a_deployed_apps_handler_reaches_an_allowed_upstream(tmp_path):
    with http_server() as port:
        app = _app("outbound_app", tmp_path, 'allow = ["127.0.0.1"]\n')
        dep = deploy(app, store=Store(tmp_path / "store"), vars={"UPSTREAM": f"127.0.0.1:{port}"},
                     progress=lambda m: None)
        assert dep.record["config"]["outbound"] == {"allow": ["127.0.0.1"]}
        assert dep.record["smoke"]["status"] == 200  # deploy's own request went out
        pol = egress_policy(dep)
        assert pol.check("127.0.0.1", port).allowed
        assert _get(dep, "/from-handler", pol) == (200, b"upstream said: hello from /from-handler")
        # a server override (serve --outbound-deny) wins over the deployment's allow rule
        denied = egress_policy(dep, deny=[f"127.0.0.1:{port}"])
        status, body = _get(dep, "/x", denied)
        assert status == 403
        assert body.decode().startswith("PermissionError: [Errno ")
        assert f"127.0.0.1:{port} refused by the egress policy: deny rule '127.0.0.1:{port}'" in body.decode()


def test_without_outbound_the_default_policy_refuses_loopback(tmp_path):
    with http_server() as port:
        app = _app("outbound_app", tmp_path)
        dep = deploy(app, store=Store(tmp_path / "store"), vars={"UPSTREAM": f"127.0.0.1:{port}"},
                     progress=lambda m: None)
        assert dep.record["smoke"]["status"] == 403
        status, body = _get(dep, "/", egress_policy(dep))
        assert status == 403 and b"default policy: loopback address" in body
        # serve can open it per server (serve --outbound-allow)
        status, body = _get(dep, "/", egress_policy(dep, allow=["127.0.0.1"]))
        assert (status, body) == (200, b"upstream said: hello from /")


def test_a_connection_open_at_import_fails_the_deploy(tmp_path):
    with http_server() as port:
        app = _app("connect_at_import", tmp_path)
        store = Store(tmp_path / "store")
        with pytest.raises(DeployError) as ei:
            deploy(app, store=store, vars={"UPSTREAM": f"127.0.0.1:{port}"}, progress=lambda m: None)
        e = ei.value
        assert e.stage == "snapshot"
        assert (f"127.0.0.1:{port} (opened in app module 'db', import chain main -> db, "
                "through socket)") in e.message, e.message
        assert "Connections cannot be captured in a snapshot" in e.message
        assert store.list() == []
