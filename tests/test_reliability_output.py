"""Reliability: guest output is cut, rate limited and never blocks (issue 17, item 4)."""
from __future__ import annotations

import threading
import time

import pytest

from pyworkers.runtime.output import (DEFAULT_MAX_LINE, LineLimiter, QueueSink, limits_from_env)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def limiter(**kw):
    lines: list[bytes] = []
    return LineLimiter(lines.append, **kw), lines


def test_lines_are_joined_across_chunks_and_cut_at_16_kib():
    lim, lines = limiter(rate=1 << 30, burst=1 << 30)
    lim.write(b"hel")
    lim.write(b"lo\nwor")
    lim.write(b"ld\n")
    assert lines == [b"hello", b"world"]
    lim.write(b"x" * 100_000)
    assert len(lim._line) == DEFAULT_MAX_LINE  # never holds more than one cut line
    lim.write(b"y" * 50_000 + b"\nafter\n")
    assert lines[2] == b"x" * DEFAULT_MAX_LINE + f" [line cut: {150_000 - DEFAULT_MAX_LINE} more bytes]".encode()
    assert lines[3] == b"after"
    assert lim.cut == 150_000 - DEFAULT_MAX_LINE
    lim.write(b"tail without newline")
    lim.flush()
    assert lines[-1] == b"tail without newline"


def test_rate_limit_drops_whole_lines_and_announces_them_once():
    clock = Clock()
    lim, lines = limiter(rate=1000, burst=2000, max_line=1000, clock=clock)
    for i in range(10):
        lim.write(b"%d" % i + b"a" * 499 + b"\n")
    assert lines == [b"%d" % i + b"a" * 499 for i in range(3)]  # 3 x 501 bytes fit in 2000
    assert lim.dropped == 7 * 501
    clock.t += 10
    lim.write(b"hello\n")
    assert lines[3:] == [f"[pyworkers] {7 * 501} bytes of output dropped (rate limit 1000 bytes/s)".encode(),
                         b"hello"]
    lim.write(b"again\n")
    assert lines[5:] == [b"again"]  # announced once
    # sustained rate: over 10 s of 1000 bytes/s, about 10 KB pass (+ the burst)
    passed = lim.emitted
    for _ in range(1000):
        clock.t += 0.01
        lim.write(b"z" * 99 + b"\n")
    assert 10_000 - 500 <= lim.emitted - passed <= 10_000 + 2000



def test_drops_are_announced_at_the_end_of_a_request_without_reopening_the_gate():
    """``announce()`` (serve calls it when a request ends) logs the pending notice at once, so
    a flood is reported even if the isolate never prints again; lines stay dropped until the
    bucket is half full, and the next episode gets its own notice."""
    clock = Clock()
    lim, lines = limiter(rate=1000, burst=2000, max_line=1000, clock=clock)
    lim.announce()
    assert lines == []  # nothing dropped, nothing to say
    for i in range(10):
        lim.write(b"%d" % i + b"a" * 499 + b"\n")
    assert len(lines) == 3
    lim.announce()
    assert lines[3:] == [f"[pyworkers] {7 * 501} bytes of output dropped (rate limit 1000 bytes/s)".encode()]
    lim.announce()
    assert len(lines) == 4  # once
    clock.t += 0.5  # 500 tokens: still under half the bucket, the gate stays closed
    lim.write(b"x\n")
    assert len(lines) == 4 and lim.dropped == 7 * 501 + 2
    clock.t += 10
    lim.write(b"hello\n")
    assert lines[4:] == [b"[pyworkers] 2 bytes of output dropped (rate limit 1000 bytes/s)", b"hello"]

def test_flood_costs_little_host_cpu_and_memory():
    clock = Clock()
    lim, lines = limiter(clock=clock)
    chunk = b"x" * 8192
    c0 = time.process_time()
    for _ in range(200 * 1024 * 1024 // 8192):  # 200 MB without a newline
        lim.write(chunk)
        clock.t += 0.0001
    lim.write(b"\n")
    many = (b"short line\n" * 745)  # ~8 KiB of short lines per chunk
    for _ in range(2_000_000 // 745):  # 2M lines
        lim.write(many)
        clock.t += 0.0001
    lim.flush()
    cpu = time.process_time() - c0
    assert cpu < 2.0, f"{cpu:.2f} s of host CPU for 220 MB of output"
    assert len(lim._line) <= DEFAULT_MAX_LINE
    total_out = sum(len(x) + 1 for x in lines)
    assert total_out < (256 << 10) + 65536 * (clock.t - 100.0) + 1, total_out  # burst + rate x elapsed
    assert lim.cut + lim.dropped > 200 << 20 and lim.dropped > 10 << 20


def test_queue_sink_never_blocks_the_writer():
    release = threading.Event()
    written: list[str] = []

    def stuck_write(text: str) -> None:
        release.wait()
        written.append(text)

    sink = QueueSink(stuck_write, prefix="[app] ", max_bytes=10_000)
    lim = LineLimiter(sink, rate=1 << 30, burst=1 << 30)
    t0 = time.monotonic()
    for i in range(10_000):
        lim.write(b"line %d\n" % i)
    assert time.monotonic() - t0 < 1.0
    assert sink.dropped > 0
    release.set()
    sink.close()
    text = "".join(written)
    assert text.startswith("[app] line 0\n")
    assert "bytes of output dropped (log sink full)" in text


def test_limits_from_env():
    assert limits_from_env({}) == {"max_line": 16384, "rate": 65536, "burst": 262144}
    assert limits_from_env({"PYWORKERS_LOG_RATE": "10"})["rate"] == 10
    with pytest.raises(ValueError, match="PYWORKERS_LOG_BURST"):
        limits_from_env({"PYWORKERS_LOG_BURST": "-1"})


@pytest.mark.slow
def test_guest_output_flood_through_a_limiter(runtime_314):
    from pyworkers.runtime import Isolate

    lines: list[bytes] = []
    lim = LineLimiter(lines.append)
    iso = Isolate(runtime_314, stdout=lim, stderr=lim)
    c0, t0 = time.process_time(), time.monotonic()
    iso.run("import sys\nfor _ in range(3200):\n    sys.stdout.write('x' * 16384)\n"
            "print()\nfor i in range(200_000):\n    print(i)\n")
    lim.flush()
    cpu, wall = time.process_time() - c0, time.monotonic() - t0
    assert len(lines[0]) < DEFAULT_MAX_LINE + 64 and b"line cut" in lines[0]
    assert sum(len(x) for x in lines) < (256 << 10) + 65536 * (wall + 1)
    assert any(b"bytes of output dropped" in x for x in lines)
    # the guest's own work dominates; the limiter adds little on top of it
    assert cpu < wall + 0.5
    iso.close()


@pytest.mark.slow
def test_default_capture_is_bounded_per_request(runtime_314):
    from pyworkers.runtime import Isolate

    iso = Isolate(runtime_314, capture_limit=1 << 20)
    r = iso.run("import sys\nfor _ in range(3200):\n    sys.stdout.write('x' * 16384)\n"
                "sys.stdout.flush()\nprint('err', file=sys.stderr)\n")
    head, _, tail = r.stdout.rpartition(b"\n[pyworkers] ")
    assert len(head) == 1 << 20 and set(head) == {ord("x")}
    assert tail == f"{3200 * 16384 - (1 << 20)} bytes of output dropped (capture limit)\n".encode()
    assert r.stderr == b"err\n"
    assert iso.run("print('next request')").stdout == b"next request\n"  # the limit is per request
    iso.close()
