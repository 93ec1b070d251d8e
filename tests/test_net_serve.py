"""Outbound network from a served app (issue 12, through a real ``pyworkers serve``): 50
concurrent requests that each await a 200 ms upstream call are served by one isolate in under
1 s; the default egress policy refuses loopback and ``--outbound-allow`` opens it."""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import pytest

from test_serve import Server

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "data" / "net" / "upstream_app"


async def _upstream(delay: float):
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(delay)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nupstream")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def serve(tmp_path: Path, *extra: str) -> Server:
    return Server([sys.executable, "-m", "pyworkers", "serve", str(APP), "--port", "0",
                   "--max-isolates", "1", "--min-idle", "1", *extra],
                  tmp_path / "serve.log").wait_ready()


def test_fifty_upstream_calls_of_200_ms_in_one_isolate_under_a_second(tmp_path):
    s = serve(tmp_path, "--outbound-allow", "127.0.0.1:*")

    async def main():
        up = await _upstream(0.2)
        port = up.sockets[0].getsockname()[1]
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=60), timeout=30) as c:
            url = f"{s.url}/?upstream=127.0.0.1:{port}"
            await c.get(url)  # warm
            t = time.monotonic()
            rs = await asyncio.gather(*(c.get(url) for _ in range(50)))
            elapsed = time.monotonic() - t
        up.close()
        return rs, elapsed

    try:
        rs, elapsed = asyncio.run(main())
    finally:
        assert s.stop() == 0
    assert [r.status_code for r in rs] == [200] * 50 and {r.text for r in rs} == {"upstream"}
    assert elapsed < 1.0, elapsed
    assert s.text().count("isolate ready") == 1  # one isolate did it all


def test_default_policy_refuses_loopback_from_a_served_app(tmp_path):
    s = serve(tmp_path)

    async def main():
        up = await _upstream(0)
        port = up.sockets[0].getsockname()[1]
        async with httpx.AsyncClient(timeout=30) as c:
            r = await c.get(f"{s.url}/?upstream=127.0.0.1:{port}")
        up.close()
        return r

    try:
        r = asyncio.run(main())
    finally:
        assert s.stop() == 0
    assert r.status_code == 500 and r.headers["x-pyworkers-fault"] == "exception"
    assert "refused by the egress policy" in s.text() and "PermissionError" in s.text()
