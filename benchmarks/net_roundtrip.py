"""Latency of the guest's network path against native Python, same machine, same server.

``python -m pyworkers.benchmarks.net_roundtrip [--n 2000] [--json]`` starts a TCP echo server
on 127.0.0.1 (in a child process), then measures, in an isolate (Pyodide 314.0.7 on
wasmtime, egress allowing 127.0.0.1) and in this Python process: a 64-byte ``send`` + ``recv``
on a connected socket, and ``connect`` + ``send`` + ``recv`` + ``close`` of a new connection.
Reports p50/p99 in microseconds and the guest's added latency (guest p50 - native p50).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_CODE = """
import socket, time
def measure(port, n):
    s = socket.create_connection(("127.0.0.1", port))
    msg = b"x" * 64
    rt = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        s.sendall(msg)
        got = 0
        while got < 64:
            got += len(s.recv(64))
        rt.append(time.perf_counter_ns() - t0)
    s.close()
    cx = []
    for _ in range(max(1, n // 10)):
        t0 = time.perf_counter_ns()
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(msg)
        got = 0
        while got < 64:
            got += len(c.recv(64))
        c.close()
        cx.append(time.perf_counter_ns() - t0)
    return rt, cx
"""


_ECHO = """
import socket, sys, threading
srv = socket.create_server(("127.0.0.1", 0), backlog=128)
print(srv.getsockname()[1], flush=True)
def serve(c):
    with c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := c.recv(65536):
            c.sendall(data)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def _echo_server() -> tuple[subprocess.Popen, int]:
    """An echo server in its own process (so its threads never wait for our GIL)."""
    p = subprocess.Popen([sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
    return p, int(p.stdout.readline())


def _stats(ns: list[int]) -> dict:
    q = statistics.quantiles(ns, n=100)
    return {"p50_us": round(statistics.median(ns) / 1000, 1), "p99_us": round(q[98] / 1000, 1)}


def run(n: int = 2000) -> dict:
    """Measure (see the module docstring); returns ``{"guest": ..., "native": ...,
    "added_us": ...}``."""
    from pyworkers.runtime import Isolate
    from pyworkers.runtime.egress import Policy

    srv, port = _echo_server()
    try:
        ns: dict = {}
        exec(_CODE, ns)
        native = ns["measure"](port, n)
        with Isolate("314.0.7", egress=Policy.build(allow=["127.0.0.1"])) as iso:
            iso.run(_CODE)
            iso.call("__main__:measure", port, 50)  # warm up
            guest = iso.call("__main__:measure", port, n)
    finally:
        srv.kill()
        srv.wait()
    out = {"n": n}
    for name, (rt, cx) in (("native", native), ("guest", guest)):
        out[name] = {"send_recv": _stats(list(rt)), "connect_send_recv_close": _stats(list(cx))}
    out["added_us"] = {k: round(out["guest"][k]["p50_us"] - out["native"][k]["p50_us"], 1)
                       for k in ("send_recv", "connect_send_recv_close")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = run(a.n)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for k in ("send_recv", "connect_send_recv_close"):
        g, nat = res["guest"][k], res["native"][k]
        print(f"{k:26} guest p50 {g['p50_us']:8.1f} us p99 {g['p99_us']:8.1f} us | native p50 "
              f"{nat['p50_us']:8.1f} us p99 {nat['p99_us']:8.1f} us | added {res['added_us'][k]:.1f} us")


if __name__ == "__main__":
    main()
