"""``warmup`` in pyworkers.toml: requests deploy sends to the app before the snapshot, so every
restored isolate starts with what they left in memory (real deploys in the real runtime)."""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyworkers.cli import main as cli
from pyworkers.config import ConfigError, load_worker_config
from pyworkers.deploy import DeployError, deploy
from pyworkers.serve.oneshot import request, start_worker
from pyworkers.serve.targets import deployment_factory
from pyworkers.store import Store

DATA = Path(__file__).parent / "data" / "deploy"


def _app(tmp_path: Path, warmup: str | None = None) -> Path:
    dest = tmp_path / "apps" / "warmup"
    shutil.copytree(DATA / "warmup", dest)
    if warmup is not None:
        cfg = dest / "pyworkers.toml"
        cfg.write_text("\n".join(ln for ln in cfg.read_text().splitlines()
                                 if not ln.startswith("warmup")) + f"\nwarmup = {warmup}\n")
    return dest


def test_warmup_config_is_validated(tmp_path):
    app = _app(tmp_path)
    assert load_worker_config(app).warmup == (("GET", "/count?n=1"), ("HEAD", "/count"),
                                              ("GET", "/linger"))
    for bad, needle in (('["POST /items"]', "only GET and HEAD"),
                        ('["items"]', "is not a request"),
                        ('"/items"', "must be an array"),
                        ('["/a"] * 1', "not valid TOML"),
                        (str(["/x"] * 17).replace("'", '"'), "at most 16")):
        with pytest.raises(ConfigError, match=needle) as e:
            load_worker_config(_app(tmp_path / bad.replace("/", "_")[:20], bad))
        assert "pyworkers.toml" in str(e.value) and ("warmup" in str(e.value) or "TOML" in str(e.value))


@pytest.mark.slow
def test_warmup_requests_run_before_the_snapshot(tmp_path):
    """Three warm-up requests (GET with a query, HEAD, one leaving a task behind): the record
    lists them, the task is cancelled with a warning, and a restored isolate starts with the
    app's counter at 3 and no lifespan state from deploy; its first served request is the 4th."""
    st = Store(tmp_path / "store")
    lines: list[str] = []
    dep = deploy(_app(tmp_path), store=st, progress=lines.append)
    assert [(w["method"], w["target"], w["status"]) for w in dep.record["warmup"]] == [
        ("GET", "/count?n=1", 200), ("HEAD", "/count", 200), ("GET", "/linger", 200)]
    assert all(w["ms"] > 0 for w in dep.record["warmup"])
    assert dep.record["warmup"][1]["bytes"] == 0 < dep.record["warmup"][0]["bytes"]
    text = "\n".join(lines)
    assert "warm-up GET /count?n=1 -> 200" in text
    assert "lingering-task" in text and "cancelled before the snapshot" in text
    shown = CliRunner().invoke(cli, ["deployments", "show", dep.id, "--store", str(st.root)])
    assert shown.exit_code == 0, shown.output
    assert "warm-up      GET /count?n=1 -> 200 in" in shown.output
    assert "             HEAD /count -> 200 in" in shown.output

    async def first_request() -> bytes:
        w = await start_worker(deployment_factory(dep, memory_limit=None))
        try:
            r = await request(w, "GET", "/count?n=9")
            return r.body
        finally:
            await w.stop(0.0, 10.0)

    body = asyncio.run(first_request()).decode()
    # 3 warm-ups in the snapshot, then this one; lifespan ran in this isolate only
    assert body.startswith("4 GET n=9 lifespan=True agents=pyworkers-warmup,pyworkers-warmup,"
                           "pyworkers-warmup,"), body


@pytest.mark.slow
@pytest.mark.parametrize("path,needle", [
    ("/boom", "status 500"),
    ("/raise", "RuntimeError: warm-up breaks here"),
])
def test_a_failing_warmup_request_fails_the_deploy_and_writes_nothing(tmp_path, path, needle):
    st = Store(tmp_path / "store")
    with pytest.raises(DeployError) as e:
        deploy(_app(tmp_path, f'["/count", "{path}"]'), store=st)
    msg = str(e.value)
    assert e.value.stage == "snapshot" and f"warmup: GET {path} failed" in msg and needle in msg, msg
    assert "pyworkers.toml" in msg
    if path == "/raise":
        assert "Traceback" in e.value.detail and "warm-up breaks here" in e.value.detail
    assert st.list() == []


@pytest.mark.slow
def test_a_refused_warmup_request_is_a_warning(tmp_path):
    st = Store(tmp_path / "store")
    lines: list[str] = []
    dep = deploy(_app(tmp_path, '["/forbidden"]'), store=st, progress=lines.append)
    assert [w["status"] for w in dep.record["warmup"]] == [403]
    assert any("warm-up GET /forbidden answered 403" in x for x in lines), lines
