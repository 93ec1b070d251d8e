"""Reliability: ``time.sleep`` in the guest waits on the host without CPU (issue 17, item 2)."""
from __future__ import annotations

import time

import pytest

from pyworkers.runtime import Isolate
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
    import threading

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
