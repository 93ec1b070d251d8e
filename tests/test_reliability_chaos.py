"""Chaos (issue 17, item 9): ``pyworkers deploy`` of examples/hello killed with SIGKILL at 10
random moments. After each kill ``deployments list`` works, every visible deployment verifies
(no half deployment is ever visible), and later deploys succeed and clear the leftovers.

Kill moments: half of them at the start of a random stage (plus 0-250 ms), half at a uniformly
random time over a whole deploy. The seed is printed (``PYWORKERS_CHAOS_SEED`` replays it).
Needs the package index once (fastapi for the first deploy; later deploys reuse its lock).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pyworkers.deploy import STAGES
from pyworkers.store import Store
from pyworkers.verify import verify_deployment

pytestmark = [pytest.mark.slow, pytest.mark.network]

HELLO = Path(__file__).resolve().parents[1] / "examples" / "hello"


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyworkers", *args]


def _listed(store: Path) -> list[str]:
    r = subprocess.run(_cmd("deployments", "list", "--store", str(store), "--json"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"deployments list failed after a kill: {r.stderr}"
    return [d["id"] for d in json.loads(r.stdout)["deployments"]]


def _deploy_killed(app: Path, store: Path, *, stage: str | None, delay: float) -> tuple[bool, str]:
    """Run a deploy and SIGKILL it ``delay`` s after ``-> stage`` (or after the start when
    ``stage`` is None). Returns (whether it had finished before the kill, the stage reached)."""
    proc = subprocess.Popen(_cmd("deploy", str(app), "--store", str(store)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    reached = {"stage": "start"}
    hit = threading.Event()

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            if line.startswith("-> "):
                reached["stage"] = line[3:].strip()
                if reached["stage"] == stage:
                    hit.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        if stage is not None:
            while not hit.wait(0.05):
                if proc.poll() is not None:
                    break
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    t.join(5)
    return finished and proc.returncode == 0, reached["stage"]


def test_sigkill_at_random_moments_never_shows_a_half_deployment(tmp_path):
    seed = int(os.environ.get("PYWORKERS_CHAOS_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    print(f"\nchaos seed {seed}")
    app = tmp_path / "hello"
    shutil.copytree(HELLO, app)
    store = tmp_path / "store"
    t0 = time.monotonic()
    first = subprocess.run(_cmd("deploy", str(app), "--store", str(store), "-q"),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    whole = time.monotonic() - t0
    expected = _listed(store)
    assert len(expected) == 1
    st = Store(store)
    log = []
    for i in range(10):
        (app / "main.py").write_text((app / "main.py").read_text() + f"\n# chaos {i}\n")
        if i % 2 == 0:
            stage, delay = rng.choice(STAGES[1:]), rng.uniform(0, 0.25)
        else:
            stage, delay = None, rng.uniform(0, whole)
        finished, reached = _deploy_killed(app, store, stage=stage, delay=delay)
        log.append((stage or "time", round(delay, 2), reached, "finished" if finished else "killed"))
        listed = _listed(store)
        if finished:
            assert len(listed) == len(expected) + 1
        else:
            # a killed deploy either published (the kill came after the commit point) or not
            assert listed[:len(expected)] == expected and len(listed) - len(expected) in (0, 1)
        for dep_id in listed[len(expected):]:
            assert verify_deployment(st, dep_id) == [], f"half deployment {dep_id} visible"
        expected = listed
    print("kills:", log)
    # the next deploy succeeds and removes what the killed ones left behind
    (app / "main.py").write_text((app / "main.py").read_text() + "\n# final\n")
    final = subprocess.run(_cmd("deploy", str(app), "--store", str(store), "--json", "-q"),
                           capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    listed = _listed(store)
    assert listed[:-1] == expected and listed[-1] == json.loads(final.stdout)["id"]
    assert not [p for p in (store / ".staging").iterdir() if p.is_dir()]
    assert sorted(p.name for p in (store / "deployments").iterdir()) == sorted(listed)
    for dep_id in listed:
        assert verify_deployment(st, dep_id) == []
