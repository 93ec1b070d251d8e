"""[[kv]]/[[sql]]/[[objects]]/[[crons]]/[[volumes]] in pyworkers.toml, the secret store and URL
redaction (no runtime needed)."""
from __future__ import annotations

import os
import stat

import pytest

from pyworkers.bindings import BindingsError
from pyworkers.bindings.secrets import SecretStore
from pyworkers.bindings.spec import redact
from pyworkers.config import ConfigError, load_worker_config

BASE = 'name = "w"\ncompatibility_date = "2026-11-15"\n'


def cfg(tmp_path, text):
    (tmp_path / "pyworkers.toml").write_text(BASE + text)
    return load_worker_config(tmp_path)


def test_tables_are_parsed_and_kept(tmp_path):
    c = cfg(tmp_path, '''
[vars]
A = "1"
[[kv]]
binding = "CACHE"
url = "redis://127.0.0.1:6379/0"
[[sql]]
binding = "DB"
[[objects]]
binding = "FILES"
[[crons]]
schedule = "*/5 * * * *"
path = "/tasks/cleanup"
[[volumes]]
mount = "/data/"
max_size = "2 GiB"
[[volumes]]
mount = "/logs"
max_size = 1000
''')
    assert dict(c.bindings) == {"kv": ({"binding": "CACHE", "url": "redis://127.0.0.1:6379/0"},),
                                "sql": ({"binding": "DB"},), "objects": ({"binding": "FILES"},)}
    assert c.crons == ({"schedule": "*/5 * * * *", "path": "/tasks/cleanup"},)
    assert c.volumes == ({"mount": "/data", "max_size": 2 << 30},
                         {"mount": "/logs", "max_size": 1000})


@pytest.mark.parametrize("text, message", [
    ('[[kv]]\nbinding = "C"\nttl = 1\n', "kv[0].ttl: unknown key: the keys are binding, url"),
    ('[[kv]]\nbindng = "C"\n', "kv[0].bindng: unknown key: did you mean 'binding'?"),
    ('[[sql]]\nbinding = "1DB"\n', "sql[0].binding: must be a name"),
    ('[[kv]]\nbinding = "X"\n[[sql]]\nbinding = "X"\n', "sql[0].binding: 'X' is also kv[0].binding"),
    ('[vars]\nX = "1"\n[[objects]]\nbinding = "X"\n', "objects[0].binding: 'X' is also vars.X"),
    ('[[kv]]\nbinding = "C"\nurl = "http://x"\n', "kv[0].url: must be a redis:// or rediss:// URL"),
    ('kv = "C"\n', "kv: must be an array of tables: write [[kv]]"),
    ('[[crons]]\nschedule = "61 * * * *"\npath = "/t"\n', "crons[0].schedule: '61 * * * *' is not"),
    ('[[crons]]\nschedule = "* * * * *"\npath = "t"\n', "crons[0].path: must be a path starting"),
    ('[[volumes]]\nmount = "/app/data"\n', "volumes[0].mount: /app/data is inside /app"),
    ('[[volumes]]\nmount = "data"\n', "volumes[0].mount: must be an absolute guest directory"),
    ('[[volumes]]\nmount = "/d"\n[[volumes]]\nmount = "/d/e"\n', "overlaps the volume at /d"),
    ('[[volumes]]\nmount = "/d"\nmax_size = "lots"\n', "volumes[0].max_size: must be a size"),
])
def test_bad_tables_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        cfg(tmp_path, text)
    assert message in str(e.value) and str(tmp_path / "pyworkers.toml") in str(e.value)


def test_secret_store_files_are_private_and_atomic(tmp_path):
    s = SecretStore(tmp_path)
    assert s.values("w") == {} and s.workers() == []
    assert s.put("w", "TOKEN", "one") is False
    assert s.put("w", "TOKEN", "two") is True
    s.put("w", "OTHER", "x")
    assert s.values("w") == {"TOKEN": "two", "OTHER": "x"} and s.names("w") == ["OTHER", "TOKEN"]
    f = tmp_path / "secrets" / "w.json"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert not [p for p in (tmp_path / "secrets").iterdir() if ".tmp-" in p.name]
    s.delete("w", "OTHER")
    assert s.values("w") == {"TOKEN": "two"}
    with pytest.raises(BindingsError, match="has no secret 'NOPE'"):
        s.delete("w", "NOPE")
    with pytest.raises(BindingsError, match="secret name '1X'"):
        s.put("w", "1X", "v")
    with pytest.raises(BindingsError, match="not a worker name"):
        s.put("../x", "A", "v")


def test_redact_hides_only_the_password():
    assert redact("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("postgresql://app:s3@db:5432/x?sslmode=require") == \
        "postgresql://app:***@db:5432/x?sslmode=require"
    assert redact("postgresql://app@db/x") == "postgresql://app@db/x"
