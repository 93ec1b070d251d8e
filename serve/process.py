"""Process-level pieces of ``pyworkers serve``: listening sockets bound before anything else,
and ``--workers N`` (N server processes forked on one pre-bound port, supervised)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time

from pyworkers.serve.errors import ServeError

log = logging.getLogger("pyworkers.serve")


def fork_workers(n: int, sockets: list) -> None:
    """``--workers N``: fork ``n`` server processes that inherit ``sockets`` and return in each
    of them; the parent supervises: it forwards SIGTERM/SIGINT, restarts a child that dies
    while not stopping, and exits when all are gone (with the worst child exit status). Call
    before any thread or isolate exists (``fork`` copies only the calling thread)."""
    children: dict[int, int] = {}

    def spawn(i: int) -> bool:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            return True
        children[pid] = i
        return False

    for i in range(n):
        if spawn(i):
            return
    stopping = False

    def forward(sig, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("supervising %d server processes: %s", n, ", ".join(map(str, children)))
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        i = children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        if not stopping and i is not None:
            print(f"server process {pid} exited ({code}): starting another", file=sys.stderr)
            time.sleep(0.5)
            if spawn(i):
                return
        elif code not in (0, -signal.SIGINT, -signal.SIGTERM):
            worst = max(worst, abs(code))
    for sock in sockets:
        sock.close()
    sys.exit(worst)


def listen(host: str, port: int):
    """A listening TCP socket (accepted connections wait in the backlog until uvicorn's loop
    takes them, so a client never sees "connection refused" during start-up)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP as uvicorn binds: asyncio sets TCP_NODELAY only on sockets whose proto
    # says TCP (with proto 0, Nagle + delayed ACKs add ~40 ms to every response)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


__all__ = ["fork_workers", "listen"]
