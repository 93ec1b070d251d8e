"""Reliability of ``pyworkers serve`` under hostile apps and clients (issue 17): a real
``python -m pyworkers serve APP_DIR --port 0`` subprocess on 127.0.0.1 serving the plain-ASGI app
``tests/data/reliability/hostile`` (no package index), driven with httpx and raw sockets.

One test per item: host memory for a 200 MB response; slow readers; slow posters;
``--max-body-size``; Content-Length + Transfer-Encoding (request smuggling); invalid status or
header from the app; guest output floods; idle keep-alive connections. Each is bounded in time
(well under 60 s). Host memory and CPU are read from ``/proc/<server pid>`` (Linux).
"""
from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from test_serve import Server

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "data" / "reliability" / "hostile"
MiB = 1 << 20


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def serve(tmp_path: Path, *args: str):
    """A running ``pyworkers serve APP --port 0 ARGS`` (stopped, and its exit checked, after)."""
    s = Server([sys.executable, "-m", "pyworkers", "serve", str(APP), "--host", "127.0.0.1",
                "--port", "0", *args], tmp_path / "serve.log").wait_ready(120)
    try:
        yield s
    finally:
        code = s.stop()
    assert code == 0, log_excerpt(s)


def log_excerpt(s: Server, n: int = 3000) -> str:
    """The server log without access-log lines, last ``n`` characters."""
    lines = [ln for ln in s.text().splitlines() if not re.search(r'" \d{3}( [A-Za-z ]*)?$', ln)]
    return "\n".join(lines)[-n:]


def port_of(s: Server) -> int:
    return int(s.url.rsplit(":", 1)[1])


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (``VmRSS``)."""
    return _status_kb(pid, "VmRSS") << 10


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads), in seconds (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """Peak RSS of ``pid`` while the ``with`` block runs, in bytes: the kernel's ``VmHWM``
    after resetting it (``echo 5 > /proc/<pid>/clear_refs``, Linux >= 4.0) together with
    ``VmRSS`` sampled every 5 ms (the only measure where the reset is not allowed)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0
        self.hwm_reset = False
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRss":
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self.hwm_reset = True
        except OSError:
            pass
        self.peak = rss(self.pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))
        if self.hwm_reset:
            self.peak = max(self.peak, _status_kb(self.pid, "VmHWM") << 10)


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the advertised window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_eof(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until the peer closes (EOF or reset) or ``timeout`` s pass: ``(closed, data)``
    (at most 64 KiB of the data is kept)."""
    end = time.monotonic() + timeout
    kept = bytearray()
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return False, bytes(kept)
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return False, bytes(kept)
        try:
            data = sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            return True, bytes(kept)
        if not data:
            return True, bytes(kept)
        if len(kept) < 65536:
            kept += data[:65536 - len(kept)]


def drain_count(sock: socket.socket, timeout: float) -> tuple[bool, int]:
    """Like :func:`read_until_eof`, counting the bytes instead: ``(closed, nbytes)``."""
    end = time.monotonic() + timeout
    n = 0
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return False, n
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return False, n
        try:
            data = sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            return True, n
        if not data:
            return True, n
        n += len(data)


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str]]]:
    """``(status, headers)`` of every HTTP/1.1 response head found in ``data``."""
    out = []
    for m in re.finditer(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n", data):
        headers = {}
        for line in m.group(2).split(b"\r\n"):
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower().decode()] = v.strip().decode()
        out.append((int(m.group(1)), headers))
    return out


def server_holds_connection(pid: int, server_port: int, client_port: int) -> bool:
    """True while process ``pid`` has an open socket for the TCP connection
    127.0.0.1:server_port <-> 127.0.0.1:client_port (``/proc/<pid>/net/tcp`` entry whose
    inode is one of the process's fds; an orphaned socket the kernel still flushes has none)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == server_port \
                    and int(remote.split(":")[1], 16) == client_port and inode in inodes:
                return True
    return False


class Prober:
    """A thread making ``GET /ok`` (and, with ``upload``, ``POST /upload`` of 10 bytes) every
    ``every`` s on fresh connections until stopped, recording ``(status, seconds)`` and
    errors: the "other clients" whose requests must keep succeeding within 1 s."""

    def __init__(self, url: str, every: float = 0.1, upload: bool = False):
        self.url, self.every, self.upload = url, every, upload
        self.results: list[tuple[str, int, float]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            what = "upload" if self.upload and i % 2 == 0 else "ok"
            t0 = time.monotonic()
            try:
                with httpx.Client(timeout=10) as c:
                    if what == "upload":
                        r = c.post(self.url + "/upload", content=b"0123456789")
                        ok = r.text == "got 10"
                    else:
                        r = c.get(self.url + "/ok")
                        ok = r.text == "ok"
                self.results.append((what, r.status_code if ok else -r.status_code,
                                     time.monotonic() - t0))
            except httpx.HTTPError as e:
                self.errors.append(f"{what} at +{t0:.1f}: {e!r}")
            self._stop.wait(self.every)

    def check(self, max_seconds: float = 1.0, min_count: int = 10) -> None:
        bad = [r for r in self.results if r[1] != 200 or r[2] > max_seconds]
        assert not self.errors, f"other clients' requests failed: {self.errors[:5]}"
        assert not bad, (f"{len(bad)} of {len(self.results)} other requests failed or took "
                         f"over {max_seconds} s: {bad[:10]}")
        assert len(self.results) >= min_count, self.results


# ----------------------------------------------------------------------------- 1. memory
def test_200_mb_response_does_not_grow_host_memory(tmp_path):
    """A 200 MB response (4 sends of 50 MB, then one single send of 200 MB) costs the host
    less than 64 MiB of RSS beyond what the isolate itself holds.

    The isolate runs inside the server process, so the guest's linear memory -- where the app
    builds the 200 MB body -- is part of the server's RSS. To measure the *host's* share, the
    same request is first made with ``send=0``: the app builds and slices the very same body
    but answers 1 byte. That control run touches the guest's pages (the first one grows RSS by
    about the body's size, which is asserted: the guest's memory really is counted), and the
    guest's allocator reuses them for the next request of the same shape, since wasm linear
    memory never shrinks. The baseline is taken after the control run, one isolate serves
    everything (``--max-isolates 1``), and the peak RSS during the real transfer (the kernel's
    VmHWM, reset just before, plus 5 ms samples) minus that baseline is what the host added:
    frames, buffers and copies of the body on its way to the socket. The server before issue
    17 peaked at about 1.7 GB here (the reply crossed as a Python repr and was parsed back)."""
    with serve(tmp_path, "--max-isolates", "1", "--min-idle", "1", "--request-timeout", "60",
               "--memory-limit", "1024") as s:
        pid = s.proc.pid
        with httpx.Client(timeout=60) as c:
            for parts in (4, 1):
                control = s.url + f"/big?mb=200&parts={parts}&send=0"
                before = rss(pid)
                assert c.get(control).content == b"y"
                grown_by_control = rss(pid) - before
                if parts == 4:  # the first one: the guest's 250 MB peak shows in the host's RSS
                    assert grown_by_control > 150 * MiB, grown_by_control
                assert c.get(control).content == b"y"
                base = rss(pid)
                with PeakRss(pid) as peak:
                    n = 0
                    with c.stream("GET", s.url + f"/big?mb=200&parts={parts}&send=1") as r:
                        assert r.status_code == 200
                        for chunk in r.iter_raw(MiB):
                            n += len(chunk)
                assert n == 200 * MiB
                growth = peak.peak - base
                print(f"parts={parts}: baseline {base / MiB:.0f} MiB, peak {peak.peak / MiB:.0f}"
                      f" MiB, host growth {growth / MiB:.1f} MiB (hwm reset: {peak.hwm_reset})")
                assert growth < 64 * MiB, (
                    f"200 MB in {parts} send(s): the server's RSS grew by {growth / MiB:.0f} "
                    f"MiB over its baseline of {base / MiB:.0f} MiB (isolate already warm)")


# ----------------------------------------------------------------------------- 2. slow readers
def test_slow_readers_are_cut_at_the_request_timeout(tmp_path):
    """Two clients open a never-ending streamed response and never read (4 KiB receive
    buffer). Other clients' requests keep succeeding within 1 s each; at ``--request-timeout
    5`` the slow ones' tasks end in the guest and the server closes their connections (it no
    longer holds a socket for them; a client reading afterwards gets EOF after what was
    already buffered)."""
    timeout = 5.0
    with serve(tmp_path, "--max-isolates", "1", "--min-idle", "1", "--request-timeout",
               str(timeout)) as s:
        pid, port = s.proc.pid, port_of(s)
        slow = [connect(port, rcvbuf=4096) for _ in range(2)]
        try:
            with Prober(s.url) as probe:
                t0 = time.monotonic()
                for sock in slow:
                    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: hostile\r\n\r\n")
                time.sleep(1.5)
                assert httpx.get(s.url + "/streams", timeout=5).text.startswith("2 "), \
                    "both streams should be running in the guest"
                # wait for the cut: tasks ended in the guest, sockets released by the server
                tasks_ended_at = released_at = None
                while time.monotonic() - t0 < timeout + 10:
                    active = httpx.get(s.url + "/streams", timeout=5).text
                    held = [server_holds_connection(pid, port, sock.getsockname()[1])
                            for sock in slow]
                    now = time.monotonic() - t0
                    if tasks_ended_at is None and active.startswith("0 "):
                        tasks_ended_at = now
                    if released_at is None and not any(held):
                        released_at = now
                    if tasks_ended_at is not None and released_at is not None:
                        break
                    time.sleep(0.2)
                time.sleep(1.0)
            probe.check()
            print(f"guest tasks ended {tasks_ended_at} s, sockets released {released_at} s "
                  "after the requests")
            assert tasks_ended_at is not None and tasks_ended_at <= timeout + 2, (
                f"the guest's stream tasks were still running {tasks_ended_at} s after the "
                f"requests ({active!r})\n{log_excerpt(s)}")
            assert released_at is not None, (
                f"{timeout + 10:.0f} s after the requests (the guest's tasks ended after "
                f"{tasks_ended_at:.1f} s), the server still holds the slow readers' "
                f"connections: {held}\n{log_excerpt(s)}")
            assert released_at <= timeout + 2, f"connections released {released_at:.1f} s after"
            ended = httpx.get(s.url + "/streams", timeout=5).text.split(" ", 1)[1].split(",")
            assert len(ended) == 2 and "returned" not in ended, ended
            for sock in slow:
                closed, n = drain_count(sock, 5)
                assert closed, "the slow reader's connection is still open"
                assert n < 64 * MiB, n  # what was buffered, not the endless stream
        finally:
            for sock in slow:
                sock.close()


# ----------------------------------------------------------------------------- 3. slow posters
def _dribble(sock: socket.socket, every: float, until: float, out: dict) -> None:
    """Send one body byte every ``every`` s; record when a response arrives and when the
    server closes the connection (EOF, reset or a failed send)."""
    data = bytearray()
    while time.monotonic() < until:
        r, _, _ = select.select([sock], [], [], every)
        if r:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                out["closed"] = time.monotonic()
                break
            data += chunk
            out.setdefault("response", time.monotonic())
            continue
        try:
            sock.send(b"a")
            out["sent"] = out.get("sent", 0) + 1
            out.setdefault("first_byte", time.monotonic())
        except (ConnectionResetError, BrokenPipeError):
            out["closed"] = time.monotonic()
            break
    out["data"] = bytes(data)


def test_slow_posters_are_cut_at_the_request_timeout(tmp_path):
    """Two clients post a 1000-byte body 1 byte every 1.5 s. Other clients' GETs and POSTs
    keep succeeding within 1 s each; the slow posters are cut within 2 s past
    ``--request-timeout 5`` counted from their first body byte (the request's dispatch):
    the connection is closed (after a 504, if the server answers)."""
    timeout = 5.0
    with serve(tmp_path, "--max-isolates", "1", "--min-idle", "1", "--request-timeout",
               str(timeout)) as s:
        port = port_of(s)
        slow = [connect(port) for _ in range(2)]
        outs: list[dict] = [{} for _ in slow]
        try:
            with Prober(s.url, upload=True) as probe:
                t0 = time.monotonic()
                threads = []
                for sock, out in zip(slow, outs):
                    sock.sendall(b"POST /upload HTTP/1.1\r\nHost: hostile\r\n"
                                 b"Content-Length: 1000\r\n\r\n")
                    threads.append(threading.Thread(target=_dribble, daemon=True,
                                                    args=(sock, 1.5, t0 + timeout + 15, out)))
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout + 20)
            probe.check()
            for out in outs:
                assert "first_byte" in out, out
                assert "closed" in out, (f"slow poster still connected after "
                                         f"{timeout + 15:.0f} s: sent {out.get('sent')} bytes, "
                                         f"got {out.get('data', b'')[:300]!r}")
                held = out["closed"] - out["first_byte"]
                assert held <= timeout + 2, f"cut {held:.1f} s after its first body byte"
                statuses = [st for st, _ in parse_responses(out["data"])]
                assert statuses in ([], [504]), statuses
            assert httpx.get(s.url + "/uploads", timeout=5).text.split()[1] == \
                str(sum(1 for r in probe.results if r[0] == "upload")), \
                "a slow poster's upload completed"
        finally:
            for sock in slow:
                sock.close()


def test_slow_poster_that_sends_only_headers_is_cut(tmp_path):
    """A client that sends a POST's headers (Content-Length: 1000) and then nothing holds no
    isolate and is cut within 2 s past ``--request-timeout 5``; other clients keep being
    served within 1 s."""
    timeout = 5.0
    with serve(tmp_path, "--max-isolates", "1", "--min-idle", "1", "--request-timeout",
               str(timeout)) as s:
        port = port_of(s)
        slow = [connect(port) for _ in range(2)]
        try:
            with Prober(s.url, upload=True) as probe:
                t0 = time.monotonic()
                for sock in slow:
                    sock.sendall(b"POST /upload HTTP/1.1\r\nHost: hostile\r\n"
                                 b"Content-Length: 1000\r\n\r\n")
                results = [read_until_eof(sock, t0 + timeout + 10 - time.monotonic())
                           for sock in slow]
                waited = time.monotonic() - t0
            probe.check()
            for closed, data in results:
                assert closed, (f"a client that sent only headers is still connected "
                                f"{waited:.1f} s later (got {data[:300]!r})")
            assert waited <= timeout + 2, f"cut {waited:.1f} s after the headers"
        finally:
            for sock in slow:
                sock.close()


# ----------------------------------------------------------------------------- 4. body size
def _uploads(url: str) -> tuple[int, int, int]:
    entered, completed, max_seen = httpx.get(url + "/uploads", timeout=10).text.split()
    return int(entered), int(completed), int(max_seen)


def test_max_body_size_answers_413_before_the_app_sees_more(tmp_path):
    """``--max-body-size 1`` (MiB): a Content-Length over it gets 413 ``too-large`` before
    the app runs (the body is not even sent); a body of exactly 1 MiB is served; a chunked
    body that grows past 1 MiB gets 413 while the app has seen at most 1 MiB of it and never
    completes."""
    with serve(tmp_path, "--max-isolates", "1", "--min-idle", "1", "--max-body-size", "1",
               "--request-timeout", "30") as s:
        port = port_of(s)
        # Content-Length over the limit: answered from the headers alone
        with connect(port) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: hostile\r\nContent-Length: %d\r\n\r\n"
                         % (2 * MiB))
            closed, data = read_until_eof(sock, 10)
        (status, headers), = parse_responses(data)
        assert (status, headers.get("x-pyworkers-fault")) == (413, "too-large"), data
        assert closed, "the connection should close after the 413 (the body was not read)"
        assert _uploads(s.url) == (0, 0, 0), "the app ran for a body over the limit"

        r = httpx.post(s.url + "/upload", content=b"b" * MiB, timeout=30)
        assert (r.status_code, r.text) == (200, f"got {MiB}")
        assert _uploads(s.url) == (1, 1, MiB)

        # chunked, no Content-Length: 64 KiB chunks until the server answers
        with connect(port) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: hostile\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n" % 65536 + b"c" * 65536 + b"\r\n"
            sent = 0
            while sent < 4 * MiB and not select.select([sock], [], [], 0.01)[0]:
                try:
                    sock.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 65536
            closed, data = read_until_eof(sock, 10)
        assert parse_responses(data), f"no response after {sent} body bytes: {data[:300]!r}"
        (status, headers), = parse_responses(data)[:1]
        assert (status, headers.get("x-pyworkers-fault")) == (413, "too-large"), data
        assert sent <= 2 * MiB, f"the server took {sent} bytes before answering"
        entered, completed, max_seen = _uploads(s.url)
        assert completed == 1, "the app completed reading a body over the limit"
        assert max_seen == MiB, f"the app saw {max_seen} bytes of a request body (limit {MiB})"


# ----------------------------------------------------------------------------- 5. CL + TE
@pytest.mark.parametrize("order", ["cl-first", "te-first"])
def test_content_length_with_transfer_encoding_is_not_smuggled(tmp_path, order):
    """A request with both Content-Length and Transfer-Encoding: chunked (RFC 9112 §6.1: the
    server MUST close the connection after responding, or reject it). The body is an empty
    chunked body followed by a pipelined ``GET /smuggled``, which a Content-Length reading (a
    proxy in front) takes as part of the body. Safe outcome: at most one response, the
    connection closed, and ``/smuggled`` never reaches the app."""
    with serve(tmp_path, "--max-isolates", "1", "--min-idle", "1") as s:
        tail = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: hostile\r\n\r\n"
        cl = b"Content-Length: %d\r\n" % len(tail)
        te = b"Transfer-Encoding: chunked\r\n"
        head = b"POST /upload HTTP/1.1\r\nHost: hostile\r\n" + (cl + te if order == "cl-first"
                                                               else te + cl) + b"\r\n"
        with connect(port_of(s)) as sock:
            sock.sendall(head + tail)
            closed, data = read_until_eof(sock, 5)
        responses = parse_responses(data)
        seen = httpx.get(s.url + "/seen", timeout=10).text.split("\n")
        assert "/smuggled" not in seen, f"the smuggled request reached the app: {data!r}"
        assert len(responses) <= 1, f"two responses on one request: {data!r}"
        assert closed, f"the connection stays open after a CL+TE request: {data!r}"
        if responses:
            assert responses[0][0] in (400, 200), data


# ----------------------------------------------------------------------------- 6. bad response
def test_invalid_status_or_header_gives_500_and_the_server_goes_on(tmp_path):
    """An app sending status 42, a header value with CR/LF (response splitting) or a header
    name with a colon gets ``RuntimeError`` in the app: the client gets 500
    ``x-pyworkers-fault: exception`` (nothing of the bad header), and the server keeps
    serving."""
    with serve(tmp_path, "--max-isolates", "1", "--min-idle", "1") as s:
        with httpx.Client(timeout=10) as c:
            for path in ("/bad-status", "/bad-header", "/bad-header-name", "/bad-status"):
                r = c.get(s.url + path)
                assert (r.status_code, r.headers.get("x-pyworkers-fault")) == (500, "exception"), \
                    (path, r.status_code, r.headers, r.text)
                assert "set-cookie" not in r.headers and "never" not in r.text
                assert c.get(s.url + "/ok").text == "ok"
        log = s.text()
        assert "Invalid HTTP status code 42" in log
        assert "Invalid HTTP header" in log


# ----------------------------------------------------------------------------- 7. output flood
def test_output_flood_is_cut_rate_limited_and_cheap(tmp_path):
    """``/flood-bytes`` prints 50 MB without a newline, ``/flood-lines`` 500,000 short lines.
    Each request finishes within 5 s and costs the server process (the guest's own printing
    included: the isolate runs in it) under 5 CPU-seconds; the log shows the cut line and a
    dropped-bytes notice when the request ends, not the flood; other requests keep being served within 1 s (a
    second isolate takes them while the first one prints)."""
    with serve(tmp_path, "--max-isolates", "2", "--min-idle", "2", "--request-timeout",
               "30") as s:
        pid = s.proc.pid
        log_before = len(s.log.read_bytes())
        costs = {}
        with Prober(s.url) as probe:
            time.sleep(0.5)
            for path in ("/flood-bytes?mb=50", "/flood-lines?n=500000"):
                c0, t0 = cpu_seconds(pid), time.monotonic()
                r = httpx.get(s.url + path, timeout=60)
                costs[path] = (time.monotonic() - t0, cpu_seconds(pid) - c0)
                print(f"{path}: {costs[path][0]:.2f} s, server CPU {costs[path][1]:.2f} s")
                assert r.text == "flooded"
            # the drop notice is logged when the flooding request ends, whichever isolate
            # takes the next request (the probe's requests race for them)
            notice = rb"\[pyworkers\] \d+ bytes of output dropped"
            deadline = time.monotonic() + 2
            while not re.search(notice, s.log.read_bytes()[log_before:]) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert re.search(notice, s.log.read_bytes()[log_before:]), "no drop notice after the flood"
            time.sleep(2.5)  # the bucket refills: the isolate prints again
            assert httpx.get(s.url + "/flood-lines?n=1", timeout=10).text == "flooded"
            time.sleep(0.5)
        probe.check()
        log = s.log.read_bytes()[log_before:]
        assert re.search(rb"x{16384} \[line cut: \d+ more bytes\]", log), log[-2000:]
        assert re.search(rb"\[pyworkers\] \d+ bytes of output dropped", log), log[-2000:]
        assert len(log) < 4 * MiB, f"{len(log)} bytes of log for the floods"
        for path, (wall, cpu) in costs.items():
            assert wall < 5, f"{path} took {wall:.1f} s (server CPU {cpu:.1f} s)"
            assert cpu < 5, f"{path} cost the server {cpu:.1f} CPU-seconds"


# ----------------------------------------------------------------------------- 8. keep-alive
def test_idle_keep_alive_connection_is_closed(tmp_path):
    """``--keep-alive-timeout 1``: a connection left idle after a response is closed by the
    server after about 1 s."""
    with serve(tmp_path, "--max-isolates", "1", "--min-idle", "1", "--keep-alive-timeout",
               "1") as s:
        with connect(port_of(s)) as sock:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: hostile\r\n\r\n")
            data = b""
            while not data.endswith(b"\r\n\r\nok"):
                r, _, _ = select.select([sock], [], [], 10)
                assert r, data
                data += sock.recv(4096)
            t0 = time.monotonic()
            closed, rest = read_until_eof(sock, 10)
            idle = time.monotonic() - t0
        assert parse_responses(data)[0][0] == 200
        assert closed and rest == b"", f"idle connection still open after {idle:.1f} s"
        assert 0.5 <= idle <= 3, f"closed after {idle:.2f} s of idleness"


def test_connection_that_never_sends_a_request_is_closed(tmp_path):
    """An idle connection on which no request ever arrives is closed too (within
    ``--keep-alive-timeout`` + 2 s here; it would otherwise be held forever)."""
    with serve(tmp_path, "--max-isolates", "1", "--min-idle", "1", "--keep-alive-timeout",
               "1") as s:
        with connect(port_of(s)) as sock:
            t0 = time.monotonic()
            closed, rest = read_until_eof(sock, 10)
            idle = time.monotonic() - t0
        assert closed, f"a connection without a request is still open after {idle:.1f} s"
        assert idle <= 3, f"closed after {idle:.2f} s"
