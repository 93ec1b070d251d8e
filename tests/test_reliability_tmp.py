"""Reliability: the writable /tmp cap holds against a hostile guest (issue 17, item 1).

Each bypass found in the issue is tried against a real isolate with a small cap; the guest must
get ENOSPC/EINVAL and the host's RSS must not grow by more than a few caps' worth.
"""
from __future__ import annotations

import ast
import os

import pytest

from pyworkers.runtime import Isolate
from pyworkers.runtime import vfs as V

CAP = 4 << 20


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _run(iso: Isolate, code: str) -> dict:
    return ast.literal_eval(iso.run(code).stdout.decode())


FILL = r'''
import errno, os
def fill(path_prefix, keep_open, unlink):
    """Write 1 MiB files until an error; returns (files written, errno name)."""
    fds, n = [], 0
    for i in range(300):   # 300 MiB if nothing stops it
        try:
            fd = os.open(f"{path_prefix}{i}", os.O_CREAT | os.O_RDWR)
            os.write(fd, b"x" * (1 << 20))
        except OSError as e:
            return n, errno.errorcode[e.errno], fds
        n += 1
        if unlink:
            os.unlink(f"{path_prefix}{i}")
        if keep_open:
            fds.append(fd)
        else:
            os.close(fd)
    return n, "ok", fds
'''


@pytest.mark.slow
def test_unlinked_open_files_count_until_last_close(runtime_314):
    iso = Isolate(runtime_314, tmp_cap=CAP)
    rss0 = _rss()
    out = _run(iso, FILL + r'''
n, err, fds = fill("/tmp/f", keep_open=True, unlink=True)
st = os.fstat(fds[0])
for fd in fds:
    os.close(fd)
# everything was released at the last close: the cap is free again
n2, err2, fds2 = fill("/tmp/g", keep_open=False, unlink=False)
print(repr({"n": n, "err": err, "nlink": st.st_nlink, "n2": n2, "err2": err2}))
''')
    grown = _rss() - rss0
    assert out["err"] == "ENOSPC" and out["n"] <= 4, out
    assert out["nlink"] == 0
    assert out["err2"] == "ENOSPC" and out["n2"] >= 3, out
    assert iso.fs.tmpfs.used <= CAP
    assert grown < 64 << 20, f"host RSS grew by {grown >> 20} MiB"
    # the dup'd descriptor keeps the bytes until its last reference closes
    out = _run(iso, r'''
import errno, os
for name in os.listdir("/tmp"):
    os.unlink("/tmp/" + name)
fd = os.open("/tmp/d", os.O_CREAT | os.O_RDWR)
os.write(fd, b"y" * (3 << 20))
fd2 = os.dup(fd)
os.unlink("/tmp/d")
os.close(fd)
try:
    open("/tmp/e", "wb").write(b"z" * (2 << 20))
    first = "ok"
except OSError as e:
    first = errno.errorcode[e.errno]
os.close(fd2)
open("/tmp/e", "wb").write(b"z" * (2 << 20))
print(repr({"first": first}))
''')
    assert out == {"first": "ENOSPC"}
    iso.close()


@pytest.mark.slow
def test_negative_truncate_and_offsets_are_einval(runtime_314):
    iso = Isolate(runtime_314, tmp_cap=CAP)
    rss0 = _rss()
    out = _run(iso, FILL + r'''
def err(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
fd = os.open("/tmp/t", os.O_CREAT | os.O_RDWR)
os.write(fd, b"abc")
res = {
    "ftruncate_neg": err(lambda: os.ftruncate(fd, -2**40)),
    "truncate_neg": err(lambda: os.truncate("/tmp/t", -1)),
    "pwrite_neg": err(lambda: os.pwrite(fd, b"x" * 100, -2**40)),
    "pwrite_neg_small": err(lambda: os.pwrite(fd, b"x" * 100, -1)),
    "pread_neg": err(lambda: os.pread(fd, 10, -5)),
    "ftruncate_huge": err(lambda: os.ftruncate(fd, 2**40)),
    "ftruncate_past_cap": err(lambda: os.ftruncate(fd, CAP + 1)),
    "pwrite_far": err(lambda: os.pwrite(fd, b"x", 2**40)),
}
res["content"] = os.pread(fd, 10, 0)
os.close(fd)
# the cap is intact after all that: filling stops at it
res["fill"] = fill("/tmp/f", keep_open=False, unlink=False)[:2]
print(repr(res))
'''.replace("CAP", str(CAP)))
    grown = _rss() - rss0
    for key in ("ftruncate_neg", "truncate_neg", "pwrite_neg", "pwrite_neg_small", "pread_neg"):
        assert out[key] == "EINVAL", (key, out)
    for key in ("ftruncate_huge", "ftruncate_past_cap", "pwrite_far"):
        assert out[key] in ("ENOSPC", "EFBIG"), (key, out)
    assert out["content"] == b"abc"
    n, e = out["fill"]
    assert e == "ENOSPC" and n <= 4
    assert 0 <= iso.fs.tmpfs.used <= CAP
    assert grown < 64 << 20, f"host RSS grew by {grown >> 20} MiB"
    iso.close()


@pytest.mark.slow
def test_many_empty_files_and_dirs_count_against_the_cap(runtime_314):
    iso = Isolate(runtime_314, tmp_cap=1 << 20)
    out = _run(iso, r'''
import errno, os
made = 0
try:
    for i in range(100000):
        os.mkdir(f"/tmp/d{i}")
        made += 1
except OSError as e:
    res = errno.errorcode[e.errno]
try:
    open("/tmp/" + "n" * 300, "w")
    long_name = "ok"
except OSError as e:
    long_name = errno.errorcode[e.errno]
print(repr({"made": made, "err": res, "long_name": long_name}))
''')
    assert out["err"] == "ENOSPC" and out["made"] <= (1 << 20) // V.NODE_COST
    assert out["long_name"] == "ENAMETOOLONG"
    iso.close()


@pytest.mark.slow
def test_rename_onto_itself_keeps_the_file(runtime_314):
    iso = Isolate(runtime_314, tmp_cap=CAP)
    out = _run(iso, r'''
import errno, os
open("/tmp/x", "w").write("keep me")
os.rename("/tmp/x", "/tmp/x")
os.mkdir("/tmp/d")
os.rename("/tmp/d", "/tmp/d")
try:
    os.rename("/tmp/d", "/tmp/d/sub")
    into_self = "ok"
except OSError as e:
    into_self = errno.errorcode[e.errno]
open("/tmp/y", "w").write("other")
os.rename("/tmp/y", "/tmp/x")   # replaces x: its bytes are released
print(repr({"x": open("/tmp/x").read(), "ls": sorted(os.listdir("/tmp")), "into_self": into_self}))
''')
    assert out == {"x": "other", "ls": ["d", "x"], "into_self": "EINVAL"}
    assert iso.fs.tmpfs.used == 2 * V.NODE_COST + len("other")
    iso.close()


@pytest.mark.slow
def test_layer_file_swapped_for_a_symlink_after_lookup_is_not_followed(runtime_314, tmp_path):
    layer = tmp_path / "layer"
    (layer / "sub").mkdir(parents=True)
    (layer / "a.txt").write_text("inside a")
    (layer / "sub" / "b.txt").write_text("inside b")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.txt").write_text("SECRET b")
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET a")
    iso = Isolate(runtime_314, mounts={"/data": str(layer)}, tmp_cap=CAP)
    first = _run(iso, r'''
import os
print(repr([os.stat("/data/a.txt").st_size, os.stat("/data/sub/b.txt").st_size,
            open("/data/a.txt").read(), open("/data/sub/b.txt").read()]))
''')
    assert first == [8, 8, "inside a", "inside b"]
    # the host swaps a file and a directory for symlinks pointing out of the layer
    (layer / "a.txt").unlink()
    (layer / "a.txt").symlink_to(secret)
    os.rename(layer / "sub", tmp_path / "sub-moved")
    (layer / "sub").symlink_to(outside)
    out = _run(iso, r'''
import errno, os
def read(p):
    try:
        return open(p).read()
    except OSError as e:
        return errno.errorcode[e.errno]
print(repr([read("/data/a.txt"), read("/data/sub/b.txt")]))
''')
    assert out == ["ENOENT", "ENOENT"]
    iso.close()


def test_vfs_inode_and_device_numbers_are_deterministic(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("x = 1")
    a = V.VFS({"/lib/sp": str(tmp_path)})
    b = V.VFS({"/lib/sp": str(tmp_path)})
    b.lookup("/lib/sp/pkg")  # another lookup order
    for p in ("/", "/tmp", "/dev/null", "/lib/sp", "/lib/sp/pkg/m.py", "/lib/sp/pkg"):
        sa, sb = a.lookup(p).stat(), b.lookup(p).stat()
        assert (sa["ino"], sa["dev"]) == (sb["ino"], sb["dev"]), p
    assert a.lookup("/tmp").stat()["dev"] != a.lookup("/lib/sp").stat()["dev"]
