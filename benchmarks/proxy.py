"""A proxying endpoint on one isolate vs native uvicorn: ``pyworkers bench proxy`` (issue 12).

The workload (``workloads/proxy``: plain ASGI calling an upstream with one shared
``httpx.AsyncClient``, ``requirements.txt``: ``httpx``) runs twice on this machine, both as
subprocesses on 127.0.0.1 started once per run, next to an upstream HTTP server:

- ``upstream``: an asyncio HTTP/1.1 keep-alive server in its own process (:func:`serve_upstream`)
  answering every ``GET`` with the same ``body_bytes`` (default 1024) body after ``delay_ms``
  (default 0);
- ``pyworkers``: ``python -m pyworkers serve workloads/proxy --max-isolates 1 --min-idle 1
  --outbound-allow 127.0.0.1:*`` (development mode: ``httpx`` is resolved from the package
  index and installed into the app's layer on the first run; the server is ready only after
  that, so it never counts);
- ``native``: ``python -m uvicorn main:app --app-dir workloads/proxy`` with this Python's own
  ``httpx``.

``clients`` closed-loop clients (one keep-alive HTTP/1.1 connection each, a minimal asyncio
client in this process) send ``GET /?upstream=127.0.0.1:PORT`` back to back; each response
must be 200 with the upstream's exact body. An uncounted warm-up (``2 x clients`` requests per
server), then ``rounds`` counted rounds of ``requests / rounds`` requests per server; the
servers alternate within a round and the order flips every round (interleaved, so drift hits
both alike). Latency is per request, from writing it to having read the whole response
(``time.perf_counter``, ms); requests/s is counted requests over the summed wall time of their
rounds; percentiles are nearest-rank (:func:`pyworkers.benchmarks.common.pct`).

Last, the added latency of the guest's socket path alone: one ``connect`` + ``send`` + ``recv``
(+ ``close``) and one ``send`` + ``recv`` on an open connection, in an isolate vs in this
process, from :func:`pyworkers.benchmarks.net_roundtrip.run`.

Run: ``pyworkers bench proxy [--clients 16] [--requests 1000] [--json] [-o FILE]``.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from pyworkers.benchmarks.common import (BenchError, describe_machine, short_machine_line,
                                         workload_selection)
from pyworkers.benchmarks.concurrency import Subprocess
from pyworkers.benchmarks.concurrency import measure as concurrency_measure

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "workloads" / "proxy"
FORMAT = 1
KIND = "pyworkers-bench-proxy"
SERVERS = ("pyworkers", "native")


# --------------------------------------------------------------------------- upstream

def upstream_body(size: int) -> bytes:
    """The upstream's response body: ``size`` bytes of a fixed printable pattern."""
    pattern = b"pyworkers proxy benchmark upstream body 0123456789\n"
    return (pattern * (size // len(pattern) + 1))[:size]


def serve_upstream(body_bytes: int = 1024, delay_ms: float = 0.0) -> None:
    """Run the upstream HTTP server on 127.0.0.1 until killed (the benchmark runs it in a child
    process): prints its port on stdout, then answers every request (``GET``, no request body,
    HTTP/1.1 keep-alive, ``TCP_NODELAY``) with 200 and :func:`upstream_body` (``body_bytes``)
    after ``await asyncio.sleep(delay_ms / 1000)`` when ``delay_ms > 0``."""
    import socket

    body = upstream_body(body_bytes)
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    delay = delay_ms / 1000

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if delay:
                    await asyncio.sleep(delay)
                writer.write(response)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


def start_upstream(body_bytes: int, delay_ms: float) -> tuple[subprocess.Popen, int]:
    """:func:`serve_upstream` in a child process (so it never waits for the load client's
    loop); returns (process, port). Raises :class:`BenchError` if it does not start."""
    code = (f"from pyworkers.benchmarks.proxy import serve_upstream; "
            f"serve_upstream({int(body_bytes)}, {float(delay_ms)!r})")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if not line.strip().isdigit():
        p.kill()
        p.wait()
        raise BenchError(f"the upstream server did not start (exit {p.returncode})")
    return p, int(line)


# --------------------------------------------------------------------------- servers

def server_argv(kind: str) -> tuple[list[str], str]:
    """``(argv, description)`` of the ``pyworkers`` or ``native`` server for the workload."""
    if kind == "pyworkers":
        return ([sys.executable, "-m", "pyworkers", "serve", str(WORKLOAD), "--host",
                 "127.0.0.1", "--port", "0", "--max-isolates", "1", "--min-idle", "1",
                 "--no-access-log", "--outbound-allow", "127.0.0.1:*"],
                "pyworkers serve --max-isolates 1 --outbound-allow 127.0.0.1:*")
    return ([sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(WORKLOAD), "--host",
             "127.0.0.1", "--port", "0", "--no-access-log"], "uvicorn main:app (1 process)")


# --------------------------------------------------------------------------- load

def measure(ports: dict[str, int], target: str, expected: bytes, total: int, clients: int,
            rounds: int, progress: Callable[[str], None]) -> dict[str, dict]:
    """Every server: warm-up, then ``rounds`` interleaved counted rounds
    (:func:`pyworkers.benchmarks.concurrency.measure` with the upstream's body expected).
    Returns ``{server: result}``."""
    return concurrency_measure(ports, target, total, clients, rounds, progress, expected)


# --------------------------------------------------------------------------- the run

def stderr_progress(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[bench proxy] {msg}", file=sys.stderr, flush=True)


def httpx_version(port: int) -> str | None:
    """The ``httpx`` version the server on 127.0.0.1:``port`` runs (the workload's
    ``GET /httpx-version``); None if it does not answer 200."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", "/httpx-version")
        r = c.getresponse()
        body = r.read().decode("utf-8", "replace")
        return body if r.status == 200 else None
    except OSError:
        return None
    finally:
        c.close()


def run(clients: int = 16, requests: int = 1000, *, rounds: int = 4, body_bytes: int = 1024,
        delay_ms: float = 0.0, roundtrip_n: int = 2000,
        progress: Callable[[str], None] | None = stderr_progress) -> dict:
    """Start the upstream and both servers, measure them (see the module docstring), stop them,
    then measure the socket round trips (``roundtrip_n`` send+recv, ``roundtrip_n // 10``
    connects; 0 skips them).

    Returns the result dict (``format_table`` prints it). Raises :class:`BenchError` if a
    server does not start (the log's tail included), a connection fails or a response is wrong.
    """
    say = progress or (lambda m: None)
    rounds = max(1, rounds)
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "format": FORMAT, "kind": KIND, "machine": describe_machine(workload_selection(WORKLOAD)),
        "workload": {"app": "benchmarks/workloads/proxy",
                     "about": "GET /?upstream=127.0.0.1:PORT -> httpx.AsyncClient.get(upstream) "
                              "-> its body",
                     "upstream": {"body_bytes": body_bytes, "delay_ms": delay_ms,
                                  "server": "asyncio HTTP/1.1 keep-alive, own process"}},
        "method": {"clients": clients, "requests": requests, "rounds": rounds,
                   "warmup_per_server": 2 * clients,
                   "client": "closed-loop asyncio raw HTTP/1.1 keep-alive connections in the "
                             "bench process, 127.0.0.1",
                   "order": "servers alternate within a round, order flips every round",
                   "latency": "request written -> whole response read (time.perf_counter)",
                   "percentiles": "nearest rank"},
        "servers": {}, "proxy": {},
    }
    with tempfile.TemporaryDirectory(prefix="pyworkers-bench-proxy-") as tmp:
        started: dict[str, Subprocess] = {}
        upstream = None
        try:
            upstream, up_port = start_upstream(body_bytes, delay_ms)
            for kind in SERVERS:
                argv, about = server_argv(kind)
                say(f"starting {about}")
                started[kind] = Subprocess(argv, Path(tmp) / f"{kind}.log", about)
            for s in started.values():
                s.wait_ready()
            ports = {k: s.port for k, s in started.items()}
            target = f"/?upstream=127.0.0.1:{up_port}"
            say(f"{requests} requests per server, {clients} clients, {rounds} rounds")
            res = measure(ports, target, upstream_body(body_bytes), requests, clients, rounds,
                          say)
            p, nat = res["pyworkers"], res["native"]
            res["ratio"] = {
                "rps_pyworkers_over_native": _ratio(p["rps"], nat["rps"]),
                "p50_pyworkers_over_native": _ratio(p["latency_ms"].get("p50"),
                                                    nat["latency_ms"].get("p50")),
                "p99_pyworkers_over_native": _ratio(p["latency_ms"].get("p99"),
                                                    nat["latency_ms"].get("p99"))}
            result["proxy"] = res
            for kind, s in started.items():
                result["servers"][kind] = {"about": s.about, "httpx": httpx_version(s.port),
                                           "rss_bytes_after": s.rss_bytes()}
        finally:
            for s in started.values():
                s.stop()
            if upstream is not None:
                upstream.kill()
                upstream.wait()
    if roundtrip_n > 0:
        from pyworkers.benchmarks import net_roundtrip

        say(f"socket round trips: {roundtrip_n} send+recv, {max(1, roundtrip_n // 10)} "
            "connect+send+recv+close, isolate vs native")
        result["roundtrip"] = net_roundtrip.run(roundtrip_n)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    return result


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def format_table(res: dict) -> str:
    """The result as a text table: req/s, p50/p90/p99 per server and their ratio, then the
    socket round trips (guest vs native, added p50)."""
    m = res["machine"]
    meth = res["method"]
    up = res["workload"]["upstream"]
    lines = [f"pyworkers bench proxy: {meth['clients']} clients, 1 isolate vs native uvicorn, "
             f"upstream {up['body_bytes']} B after {up['delay_ms']:g} ms, 127.0.0.1",
             short_machine_line(m),
             "",
             f"{'server':<11} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} "
             f"{'p99 ms':>8}  statuses"]
    e = res["proxy"]
    for kind in SERVERS:
        r = e[kind]
        lat = r["latency_ms"]
        st = " ".join(f"{s}x{c}" for s, c in r["statuses"].items())
        lines.append(f"{kind:<11} {r['requests']:>8} {r['rps'] or 0:>8.1f} "
                     f"{lat.get('p50', 0):>8.2f} {lat.get('p90') or 0:>8.2f} "
                     f"{lat.get('p99', 0):>8.2f}  {st}")
    ratio = e["ratio"]
    lines.append(f"{'pyw/native':<11} {'':>8} {_fmt_ratio(ratio['rps_pyworkers_over_native']):>8} "
                 f"{_fmt_ratio(ratio['p50_pyworkers_over_native']):>8} {'':>8} "
                 f"{_fmt_ratio(ratio['p99_pyworkers_over_native']):>8}")
    rt = res.get("roundtrip")
    if rt:
        lines += ["", f"socket round trip to a 127.0.0.1 echo server (64 B, n={rt['n']}):",
                  f"{'':<26} {'guest p50':>10} {'p99':>9} {'native p50':>11} {'p99':>9} "
                  f"{'added p50':>10}"]
        for k, label in (("connect_send_recv_close", "connect+send+recv+close"),
                         ("send_recv", "send+recv (open socket)")):
            g, nat = rt["guest"][k], rt["native"][k]
            lines.append(f"{label:<26} {g['p50_us']:>7.1f} us {g['p99_us']:>6.1f} us "
                         f"{nat['p50_us']:>8.1f} us {nat['p99_us']:>6.1f} us "
                         f"{rt['added_us'][k]:>7.1f} us")
    lines.append("")
    lines.append(f"workload: {res['workload']['about']}")
    lines.append("httpx: " + ", ".join(f"{k} {v.get('httpx')}"
                                       for k, v in res["servers"].items()))
    lines.append(f"wall time {res['wall_s']} s")
    return "\n".join(lines)
