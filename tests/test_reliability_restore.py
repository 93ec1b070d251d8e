"""Reliability: restored host state is indistinguishable from the captured one (issue 17,
item 7): inode and device numbers, offsets, modes of /tmp files, unlinked-but-open files, and
SQLite on /tmp keeps writing after a restore."""
from __future__ import annotations

import ast

import pytest

from pyworkers.runtime import Isolate
from pyworkers.runtime import vfs as V
from pyworkers.snapshot import Restorer, take_snapshot

APP = '''
import os, sqlite3
conn = sqlite3.connect("/tmp/app.db")
conn.execute("create table if not exists t (x integer)")
conn.execute("insert into t values (0)")
conn.commit()
log = open("/tmp/log.txt", "w+")
log.write("hello world")
log.flush()
os.chmod("/tmp/log.txt", 0o600)
os.mkdir("/tmp/d")
os.chmod("/tmp/d", 0o700)
gone = open("/tmp/gone.bin", "w+b")
gone.write(b"orphan bytes")
gone.flush()
os.unlink("/tmp/gone.bin")
'''

PROBE = r'''
import os, stat
def st(p):
    s = os.stat(p)
    return [s.st_ino, s.st_dev, stat.S_IMODE(s.st_mode), s.st_size, s.st_mtime_ns]
gs = os.fstat(app.gone.fileno())
state = {
    "db": st("/tmp/app.db"), "log": st("/tmp/log.txt"), "d": st("/tmp/d"), "tmp": st("/tmp"),
    "app_py": st("/app/app.py")[:2],
    "log_pos": os.lseek(app.log.fileno(), 0, os.SEEK_CUR),
    "gone": [gs.st_ino, gs.st_nlink, gs.st_size, os.lseek(app.gone.fileno(), 0, os.SEEK_CUR)],
    "listing": sorted(os.listdir("/tmp")),
}
print(repr(state))
'''


@pytest.mark.slow
def test_tmp_state_and_sqlite_survive_snapshot_restore(runtime_314, tmp_path):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(APP)
    iso = Isolate(runtime_314, mounts={"/app": str(app_dir)}, cwd="/app")
    iso.run("import sys\nsys.path.insert(0, '/app')\nimport app\n")
    before = ast.literal_eval(iso.run(PROBE).stdout.decode())
    used = iso.fs.tmpfs.used
    path = tmp_path / "s.pwsnap"
    take_snapshot(iso, path, snapshot_type="dedicated")
    iso.close()
    restored = Restorer(path, mounts={"/app": str(app_dir)}, copy=True).new_isolate()
    after = ast.literal_eval(restored.run(PROBE).stdout.decode())
    assert after == before
    assert before["log"][2] == 0o600 and before["d"][2] == 0o700
    assert before["gone"][1] == 0 and before["gone"][2] == len(b"orphan bytes")
    assert restored.fs.tmpfs.used == used  # the unlinked file is still charged
    out = restored.run(r'''
import app
app.conn.execute("insert into t values (1)")
app.conn.commit()
app.log.write("!")
app.log.seek(0)
app.gone.seek(0)
print(repr([app.conn.execute("select count(*) from t").fetchone()[0], app.log.read(), app.gone.read()]))
''').stdout.decode()
    assert ast.literal_eval(out) == [2, "hello world!", b"orphan bytes"]
    # closing the last descriptor of the unlinked file releases its bytes
    used = restored.fs.tmpfs.used
    restored.run("import app\napp.gone.close()")
    assert restored.fs.tmpfs.used == used - len(b"orphan bytes") - V.NODE_COST
    restored.close()
