"""Reliability: ``time.sleep`` in the guest waits on the host without CPU (issue 17, item 2)."""
from __future__ import annotations

import threading
import time

import pytest

from pyworkers.runtime import Isolate, epoch
from pyworkers.runtime.isolate import IsolateCrashed
from pyworkers.snapshot import Restorer, take_snapshot

SLEEP = "import time\nt = time.monotonic()\ntime.sleep(2)\nprint(time.monotonic() - t)\n"


def _timed_sleep(iso: Isolate) -> tuple[float, float, float]:
    """(guest-measured seconds, host wall seconds, host CPU seconds) of a 2 s guest sleep."""
    c0, t0 = time.process_time(), time.monotonic()
    r = iso.run(SLEEP)
    return float(r.stdout), time.monotonic() - t0, time.process_time() - c0


@pytest.mark.slow
def test_guest_sleep_costs_no_host_cpu(runtime_314):
    iso = Isolate(runtime_314)
    guest, wall, cpu = _timed_sleep(iso)
    assert 2.0 <= guest < 2.3 and 2.0 <= wall < 2.5, (guest, wall)
    assert cpu < 0.2, f"host CPU during a 2 s guest sleep: {cpu:.3f} s"
    # time.sleep keeps its contract
    out = iso.run(r'''
import time
errs = []
for bad in (-1, float("nan"), "1"):
    try:
        time.sleep(bad)
    except (ValueError, TypeError) as e:
        errs.append(type(e).__name__)
t = time.monotonic(); time.sleep(0); time.sleep(0.05)
print(errs, round(time.monotonic() - t, 1))
''').stdout.decode().split("]")
    assert out[0] + "]" == "['ValueError', 'ValueError', 'TypeError']"
    assert float(out[1]) == pytest.approx(0.1, abs=0.1)
    iso.close()


@pytest.mark.slow
def test_deadline_interrupts_a_guest_sleep(runtime_314):
    iso = Isolate(runtime_314)
    iso.set_timeout(0.5)
    t0 = time.monotonic()
    with pytest.raises(IsolateCrashed, match="interrupted"):
        iso.run("import time\ntime.sleep(30)")
    assert time.monotonic() - t0 < 1.5
    # interrupt() from another thread stops it too
    iso2 = Isolate(runtime_314)
    threading.Timer(0.3, iso2.interrupt).start()
    t0 = time.monotonic()
    with pytest.raises(IsolateCrashed, match="interrupted"):
        iso2.run("import time\ntime.sleep(30)")
    assert time.monotonic() - t0 < 1.5


@pytest.mark.slow
def test_sleep_in_a_restored_snapshot_waits_on_the_host(runtime_314, tmp_path):
    iso = Isolate(runtime_314)
    iso.run("import time\nfrom time import sleep as imported_sleep\n")
    path = tmp_path / "s.pwsnap"
    take_snapshot(iso, path, snapshot_type="baseline")
    iso.close()
    restored = Restorer(path, copy=True).new_isolate()
    guest, wall, cpu = _timed_sleep(restored)
    assert 2.0 <= guest < 2.3 and cpu < 0.2, (guest, wall, cpu)
    c0 = time.process_time()
    restored.run("imported_sleep(1)")  # a reference taken before the snapshot
    assert time.process_time() - c0 < 0.1


def _sample_while(iso: Isolate, code: str, at: float) -> tuple[int, float]:
    """Run ``code`` in ``iso``; ``at`` seconds in, read how many isolates keep the epoch ticker
    running. Returns (that count, seconds until the call ended, crashed or not)."""
    seen = []
    timer = threading.Timer(at, lambda: seen.append(epoch.ticker_active()))
    t0 = time.monotonic()
    timer.start()
    try:
        iso.run(code)
    except IsolateCrashed:
        pass
    timer.join()
    return seen[0], time.monotonic() - t0


@pytest.mark.slow
def test_the_epoch_ticker_runs_only_while_armed_wasm_runs(runtime_314):
    """The process-wide epoch ticker (deadlines for running wasm) sleeps while an isolate with a
    deadline waits on the host (a guest sleep, an idle serve loop's poll), and after a deadline
    is disarmed or its isolate dies; it runs while armed wasm runs. A wall-clock deadline still
    counts the time spent waiting: the epoch stood still meanwhile, so leaving the wait re-arms
    it for the time left (a sleep of 0.4 s then a CPU loop under a 0.7 s deadline stops near
    0.7 s, not 0.4 + 0.7 s)."""
    base = epoch.ticker_active()  # isolates of earlier tests still alive in this process
    iso = Isolate(runtime_314)
    iso.run("import time")
    assert epoch.ticker_active() == base
    iso.set_timeout(5)
    assert epoch.ticker_active() == base + 1  # armed, between calls: counted
    active, _ = _sample_while(iso, "time.sleep(0.6)", 0.3)
    assert active == base, "ticking while the only armed isolate sleeps on the host"
    active, _ = _sample_while(iso, "t = time.monotonic()\nwhile time.monotonic() - t < 0.6: pass", 0.3)
    assert active == base + 1
    iso.set_timeout(None)
    assert epoch.ticker_active() == base
    # the wall deadline counts the wait
    iso.set_timeout(0.7)
    active, took = _sample_while(iso, "time.sleep(0.4)\nwhile True: pass", 0.2)
    assert active == base and iso.dead and "interrupted" in iso.dead, iso.dead
    assert 0.65 <= took < 0.95, f"a 0.7 s deadline stopped the guest after {took:.2f} s"
    assert epoch.ticker_active() == base  # a dead isolate releases its claim
    iso.close()
    # the CPU watchdog (serve's): parked in poll, nothing ticks; stuck in CPU, it trips
    iso = Isolate(runtime_314)
    iso.run("import time")
    iso.watch_cpu(0.3)
    active, took = _sample_while(iso, "time.sleep(0.5)\nprint('slept')", 0.25)
    assert active == base and not iso.dead and took < 0.9
    with pytest.raises(IsolateCrashed, match="interrupted"):
        iso.run("while True: pass")
    assert epoch.ticker_active() == base
    iso.close()
