"""The engine against the real Pyodide builds in wasmtime (issue: engine + foundation)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from pyworkers.runtime import GuestError, GuestExited, Isolate, IsolateCrashed

pytestmark = pytest.mark.slow

STDLIB_CHECK = r'''
import json, asyncio, decimal, zipfile, hashlib, datetime, io
assert json.loads(json.dumps({"a": [1, 2]})) == {"a": [1, 2]}
async def co():
    await asyncio.sleep(0.01)
    return 42
assert asyncio.run(co()) == 42
assert decimal.Decimal("1.10") + decimal.Decimal("2.20") == decimal.Decimal("3.30")
import sqlite3
con = sqlite3.connect(":memory:")
con.execute("create table t (x)"); con.executemany("insert into t values (?)", [(1,), (2,)])
assert con.execute("select sum(x) from t").fetchone() == (3,)
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z: z.writestr("a.txt", "hello")
assert zipfile.ZipFile(buf).read("a.txt") == b"hello"
assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf")
assert datetime.datetime(2026, 1, 1) + datetime.timedelta(days=1) == datetime.datetime(2026, 1, 2)
print("stdlib ok")
'''


@pytest.mark.parametrize("fixture", ["runtime_314", "runtime_029"])
def test_release_boots_and_stdlib_works(fixture, request):
    rt = request.getfixturevalue(fixture)
    iso = Isolate(rt)
    r = iso.run("import sys; print(sys.platform); print(sys.version.split()[0])")
    platform, version = r.stdout.decode().split()
    assert platform == "emscripten"
    assert version == rt.release.python_version
    check = STDLIB_CHECK
    lock = json.loads(rt.installed.lock_json.read_text())["packages"]
    if lock.get("sqlite3", {}).get("package_type") == "cpython_module":
        # 0.29.x ships sqlite3 as a separate wheel from Pyodide's CDN, not in the stdlib zip
        with pytest.raises(GuestError, match="No module named '_sqlite3'"):
            iso.run("import _sqlite3")
        check = "\n".join(ln for ln in check.splitlines() if "sqlite3" not in ln and "con." not in ln)
    assert iso.run(check).stdout == b"stdlib ok\n"


def test_every_release_in_the_table_installs_and_boots():
    from pyworkers.compat.releases import releases

    for rel in {r.pyodide_version: r for r in releases()}.values():
        iso = Isolate(rel)
        assert iso.eval("__import__('sys').version_info[:2]") == repr(tuple(map(int, rel.python_minor.split("."))))


@pytest.mark.network
def test_c_extensions_load_through_dlopen(runtime_314, native_site_packages):
    iso = Isolate(runtime_314, site_packages=native_site_packages)
    r = iso.run(
        "import msgpack\n"
        "data = {'a': [1, 2, 3], 'b': b'x'}\n"
        "assert msgpack.unpackb(msgpack.packb(data)) == data\n"
        "from msgpack import _cmsgpack\n"
        "print(_cmsgpack.__file__)\n")
    assert r.stdout.decode().strip().endswith(".so")
    r = iso.run(
        "from pydantic_core import SchemaValidator, ValidationError, core_schema as cs\n"
        "v = SchemaValidator(cs.typed_dict_schema({'n': cs.typed_dict_field(cs.int_schema()),\n"
        "                                          's': cs.typed_dict_field(cs.str_schema())}))\n"
        "print(v.validate_python({'n': '12', 's': 'x'}))\n"
        "try:\n"
        "    v.validate_python({'n': 'nope', 's': 1})\n"
        "except ValidationError as e:\n"
        "    print(e.error_count(), sorted(err['loc'][0] for err in e.errors()))\n")
    assert r.stdout.decode().splitlines() == ["{'n': 12, 's': 'x'}", "2 ['n', 's']"]
    names = [os.path.basename(lib.name) for lib in iso.linker.loaded]
    assert any(n.startswith("_cmsgpack") for n in names)
    assert any(n.startswith("_pydantic_core") for n in names)
    # side modules got distinct memory and table bases
    bases = [(lib.memory_base, lib.table_base) for lib in iso.linker.loaded]
    assert len(set(bases)) == len(bases)


def test_sandbox_escapes_fail_and_host_files_stay_untouched(runtime_314, tmp_path):
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "inside.txt").write_text("inside")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (layer / "link-out").symlink_to(secret)
    (layer / "dir-out").symlink_to(tmp_path)
    before = {p: p.read_bytes() for p in (secret, layer / "inside.txt")}
    iso = Isolate(runtime_314, mounts={"/data": str(layer)}, tmp_cap=1 << 20)
    r = iso.run(r'''
import errno, os
def outcome(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
checks = {
    "etc_passwd": outcome(lambda: open("/etc/passwd").read()),
    "dotdot": outcome(lambda: open("../../../../../../etc/passwd").read()),
    "dotdot_from_layer": outcome(lambda: open("/data/../../../" + "secret.txt").read()),
    "symlink_out": outcome(lambda: open("/data/link-out").read()),
    "symlink_dir_out": outcome(lambda: os.listdir("/data/dir-out")),
    "proc": outcome(lambda: open("/proc/self/environ").read()),
    "write_layer": outcome(lambda: open("/data/inside.txt", "w").write("pwned")),
    "create_in_layer": outcome(lambda: open("/data/new.txt", "w")),
    "unlink_layer": outcome(lambda: os.unlink("/data/inside.txt")),
    "mkdir_root": outcome(lambda: os.mkdir("/evil")),
    "read_inside": open("/data/inside.txt").read(),
}
with open("/tmp/ok.bin", "wb") as f:
    f.write(b"x" * 1000)
checks["tmp_over_cap"] = outcome(lambda: open("/tmp/big.bin", "wb").write(b"y" * (2 << 20)))
checks["listing"] = sorted(os.listdir("/data"))
print(repr(checks))
''')
    import ast

    checks = ast.literal_eval(r.stdout.decode())
    for key in ("etc_passwd", "dotdot", "dotdot_from_layer", "symlink_out", "symlink_dir_out", "proc"):
        assert checks[key] == "ENOENT", key
    for key in ("write_layer", "create_in_layer", "unlink_layer"):
        assert checks[key] == "EROFS", key
    assert checks["mkdir_root"] in ("EROFS", "EACCES")
    assert checks["read_inside"] == "inside"
    assert checks["tmp_over_cap"] == "ENOSPC"
    assert checks["listing"] == ["inside.txt"]  # links that point out are not there at all
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in layer.iterdir()) == ["dir-out", "inside.txt", "link-out"]


def test_uncaught_exception_carries_guest_traceback_and_isolate_survives(runtime_314):
    iso = Isolate(runtime_314)
    with pytest.raises(GuestError) as ei:
        iso.run("def handler():\n    raise KeyError('missing-key')\nhandler()\n", filename="app.py")
    e = ei.value
    assert e.type_name == "KeyError"
    assert "missing-key" in e.message
    assert 'File "app.py", line 2, in handler' in e.traceback
    assert "_pyworkers_guest" not in e.traceback
    assert iso.run("print('still alive')").stdout == b"still alive\n"


def test_system_exit_reports_status(runtime_314):
    iso = Isolate(runtime_314)
    assert iso.run("import sys; sys.exit(7)").exit_code == 7
    assert iso.run("print('after')").stdout == b"after\n"


@pytest.mark.parametrize("code,expect", [
    ("import os; os.abort()", "abort"),
    ("import sys\nsys.setrecursionlimit(10**6)\nclass A:\n    def __repr__(self): return repr(A())\nrepr(A())",
     "call stack exhausted"),
])
def test_trap_kills_only_that_isolate(runtime_314, code, expect):
    bystander = Isolate(runtime_314)
    bystander.run("x = 41")
    victim = Isolate(runtime_314)
    with pytest.raises(IsolateCrashed) as ei:
        victim.run(code)
    assert expect in str(ei.value)
    assert victim.dead
    with pytest.raises(IsolateCrashed):
        victim.run("1")
    assert bystander.eval("x + 1") == "42"
    assert Isolate(runtime_314).eval("1 + 1") == "2"


def test_stdout_stderr_go_to_per_isolate_sinks(runtime_314, capfd):
    got = {"a": [], "b": []}
    a = Isolate(runtime_314, stdout=got["a"].append, stderr=got["a"].append)
    b = Isolate(runtime_314, stdout=got["b"].append, stderr=got["b"].append)
    a.run("import sys; print('from a'); print('err a', file=sys.stderr)")
    b.run("print('from b')")
    assert b"".join(got["a"]) == b"from a\nerr a\n"
    assert b"".join(got["b"]) == b"from b\n"
    out, err = capfd.readouterr()
    assert "from a" not in out + err and "from b" not in out + err


def test_js_module_is_refused_clearly(runtime_314):
    iso = Isolate(runtime_314)
    with pytest.raises(GuestError) as ei:
        iso.run("import js")
    assert ei.value.type_name == "ImportError"
    assert "not available in pyworkers" in ei.value.message


def test_c_api_calls_do_not_leak(runtime_314):
    iso = Isolate(runtime_314)
    iso.run("import sys\ndef echo(x):\n    return x\n")
    iso.call("__main__:echo", "warm-up")
    blocks0 = int(iso.eval("sys.getallocatedblocks()"))
    mem0 = iso.memory_size()
    for i in range(10_000):
        assert iso.call("__main__:echo", i) == i
    blocks1 = int(iso.eval("sys.getallocatedblocks()"))
    assert blocks1 - blocks0 < 100, (blocks0, blocks1)
    assert iso.memory_size() == mem0


def test_isolates_run_in_threads(runtime_314):
    errors = []

    def work(n):
        try:
            iso = Isolate(runtime_314)
            assert iso.eval(f"sum(range({n}))") == str(sum(range(n)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(1000 * i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_cli_python_behaves_like_python(tmp_path):
    env = dict(os.environ)
    cli = [sys.executable, "-m", "pyworkers"]
    r = subprocess.run(cli + ["python", "-c", "import sys; print(sys.platform, sys.argv[1:])", "a"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "emscripten ['a']\n"
    r = subprocess.run(cli + ["python", "-c", "raise SystemExit(4)"], capture_output=True, text=True, env=env)
    assert r.returncode == 4
    r = subprocess.run(cli + ["python", "-c", "1/0"], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "ZeroDivisionError" in r.stderr and r.stdout == ""
    script = tmp_path / "prog.py"
    script.write_text("import sys\nprint(__name__, sys.argv)\n")
    r = subprocess.run(cli + ["python", str(script), "x"], capture_output=True, text=True, env=env)
    assert r.stdout == "__main__ ['/app/prog.py', 'x']\n", r.stderr
    r = subprocess.run(cli + ["python", "--runtime", "1.2.3", "-c", "1"], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and r.stderr.startswith("error: unknown runtime release '1.2.3'")


def test_timeout_interrupts_a_hang_and_only_that_isolate(runtime_314):
    import time

    other = Isolate(runtime_314)
    hung = Isolate(runtime_314)
    hung.set_timeout(0.3)
    t0 = time.perf_counter()
    with pytest.raises(IsolateCrashed, match="interrupted"):
        hung.run("while True:\n    pass\n")
    assert time.perf_counter() - t0 < 5
    other.set_timeout(5)
    assert other.eval("sum(range(10))") == "45"
    other.set_timeout(None)


def test_memory_limit_stops_a_memory_bomb(runtime_314):
    bystander = Isolate(runtime_314)
    iso = Isolate(runtime_314, memory_limit=64 << 20)
    # a bomb whose memory is released again is an ordinary MemoryError in the guest
    with pytest.raises(GuestError) as ei:
        iso.run("def bomb():\n    blocks = []\n    while True:\n        blocks.append(bytearray(1 << 20))\nbomb()\n")
    assert ei.value.type_name == "MemoryError"
    assert iso.eval("1 + 1") == "2"
    assert iso.at_memory_limit  # linear memory never shrinks: flagged for replacement
    # one that keeps the memory: still a MemoryError, and the isolate reports it is full
    with pytest.raises(GuestError) as ei:
        iso.run("blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 20))\n")
    assert ei.value.type_name == "MemoryError"
    assert iso.at_memory_limit
    assert iso.memory_size() <= 64 << 20
    assert bystander.eval("2 + 2") == "4"


def test_concurrent_host_errors_stay_with_their_isolate(runtime_314):
    results: dict[str, list] = {"abort": [], "exit": []}

    def work(kind: str) -> None:
        for _ in range(8):
            iso = Isolate(runtime_314)
            try:
                iso.run("import os; os.abort()" if kind == "abort" else "import os; os._exit(3)")
            except (IsolateCrashed, GuestExited) as e:
                results[kind].append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in ("abort", "exit")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results["abort"]) == 8 and all(isinstance(e, IsolateCrashed) for e in results["abort"])
    assert len(results["exit"]) == 8 and all(isinstance(e, GuestExited) and e.code == 3 for e in results["exit"])


def test_host_side_waits_honour_the_deadline_and_interrupt(runtime_314):
    import time

    iso = Isolate(runtime_314)
    iso.run("import select")
    iso.set_timeout(0.3)
    t0 = time.perf_counter()
    with pytest.raises(IsolateCrashed, match="time limit exceeded"):
        iso.run("select.select([], [], [], 30)")  # a 30 s host-side poll
    assert time.perf_counter() - t0 < 5
    other = Isolate(runtime_314)
    other.run("import select")
    threading.Timer(0.3, other.interrupt).start()
    t0 = time.perf_counter()
    with pytest.raises(IsolateCrashed, match="interrupted"):
        other.run("select.select([], [], [], 30)")
    assert time.perf_counter() - t0 < 5


@pytest.mark.slow
def test_zoneinfo_works_without_a_tzdata_layer():
    """No site-packages layer (an app without requirements): zoneinfo still finds an IANA
    database (the host's, mounted read-only); with a layer, the lock's tzdata wheel is used."""
    import os

    if not os.path.isdir("/usr/share/zoneinfo/Europe"):
        pytest.skip("this host has no /usr/share/zoneinfo (Debian package tzdata)")
    with Isolate("314.0.7") as iso:
        out = iso.eval("__import__('datetime').datetime(2026, 1, 15, 12, tzinfo="
                       "__import__('datetime').timezone.utc).astimezone("
                       "__import__('zoneinfo').ZoneInfo('Europe/Paris')).isoformat()")
    assert out == "'2026-01-15T13:00:00+01:00'"
