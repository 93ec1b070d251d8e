"""``pyworkers serve --workers N``: N server processes on one port (issue 13)."""
from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from test_serve import Server

pytestmark = pytest.mark.slow

PLAIN = Path(__file__).parent / "data" / "serve" / "plain"


def test_two_server_processes_share_the_port_and_stop_on_sigterm(tmp_path):
    s = Server([sys.executable, "-m", "pyworkers", "serve", str(PLAIN), "--port", "0",
                "--workers", "2", "--min-idle", "1", "--max-isolates", "1"], tmp_path / "serve.log").wait_ready()
    try:
        s.wait_log(r"(?s)\[process \d+\].*\[process \d+\]", timeout=120)  # both are up
        pids = set(re.findall(r"\[process (\d+)\]", s.text()))
        assert len(pids) == 2
        tokens = set()
        for _ in range(40):  # a new connection each time: the kernel spreads them
            r = httpx.get(s.url + "/version", timeout=30, headers={"connection": "close"})
            assert r.status_code == 200
            tokens.add(r.text.split()[1])
        # development mode boots each isolate (a fresh import-time TOKEN), one isolate per
        # process (--max-isolates 1): two tokens = both processes answered
        assert len(tokens) == 2, tokens
    finally:
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) == 0
    assert s.text().count("Application shutdown complete.") == 2
