"""Host-side pieces of pyworkers.deploy that need no runtime: the ASGI check and traceback
cleaning of the guest harness (plain Python, run here on the host), copy_app, layer_hash."""
from __future__ import annotations

import functools
import hashlib
import os
from types import SimpleNamespace

import pytest

from pyworkers.deploy import copy_app, layer_hash
from pyworkers.deploy_guest import GUEST_HARNESS


@pytest.fixture(scope="module")
def harness():
    ns: dict = {"__name__": "_pyworkers_deploy_test"}
    exec(compile(GUEST_HARNESS, "<pyworkers deploy>", "exec"), ns)
    return SimpleNamespace(**{k: v for k, v in ns.items() if not k.startswith("__")})


async def asgi3(scope, receive, send):
    pass


class Asgi3Object:
    async def __call__(self, scope, receive, send):
        pass


class SyncCallable:
    def __call__(self, scope, receive, send):
        pass


def wsgi(environ, start_response):
    pass


def factory():
    return asgi3


@pytest.mark.parametrize("obj,ok", [
    (asgi3, True),
    (Asgi3Object(), True),
    (functools.partial(asgi3), True),
])
def test_asgi3_apps_pass(harness, obj, ok):
    assert harness.asgi_problem(obj, "main:app") is None


@pytest.mark.parametrize("obj,expect", [
    (wsgi, "looks like a WSGI app"),
    (factory, "an app factory? call it at top level: app = factory()"),
    (Asgi3Object, "not an application: create one at top level, e.g. app = Asgi3Object()"),
    (SyncCallable(), "is not a coroutine function"),
    ("app", "not an ASGI application"),
    (os, "is the module 'os'"),
    (None, "not an ASGI application"),
])
def test_non_asgi_objects_are_explained(harness, obj, expect):
    msg = harness.asgi_problem(obj, "main:app")
    assert msg is not None and msg.startswith("main:app is ")
    assert expect in msg


def test_traceback_drops_harness_and_importlib_frames(harness, tmp_path, monkeypatch):
    (tmp_path / "app_mod_7c1.py").write_text("import app_dep_7c1\n")
    (tmp_path / "app_dep_7c1.py").write_text("def f():\n    raise KeyError('marker')\nf()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rep = harness.load("app_mod_7c1", "app")
    assert rep["ok"] is False and rep["kind"] == "import"
    tb = rep["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert f'File "{tmp_path / "app_mod_7c1.py"}", line 1' in tb
    assert f'File "{tmp_path / "app_dep_7c1.py"}", line 2, in f' in tb
    assert "KeyError: 'marker'" in tb
    assert "<pyworkers deploy>" not in tb and "importlib" not in tb


def test_load_reports_a_missing_main_module(harness):
    rep = harness.load("no_such_module_4d2", "app")
    assert rep["ok"] is False
    assert "has no no_such_module_4d2.py or no_such_module_4d2/ package" in rep["message"]


def test_load_suggests_the_asgi_attribute(harness, tmp_path, monkeypatch):
    (tmp_path / "app_mod_9e3.py").write_text("async def api(scope, receive, send):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rep = harness.load("app_mod_9e3", "app")
    assert rep["kind"] == "asgi" and 'did you mean main = "app_mod_9e3:api"?' in rep["message"]
    assert harness.load("app_mod_9e3", "api") == {"ok": True, "object": "builtins.function"}


def test_copy_app_skips_caches_and_hashes_content(tmp_path):
    src = tmp_path / "app"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / "main.py").write_text("app = 1\n")
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "__pycache__" / "x.cpython-314.pyc").write_bytes(b"\0")
    (src / ".git" / "HEAD").write_text("ref")
    (src / "store").mkdir()
    (src / "store" / "big").write_text("store data")
    (src / "inner-link.py").symlink_to(src / "main.py")
    notes: list[str] = []
    info = copy_app(src, tmp_path / "c1", exclude=[src / "store"], note=notes.append)
    files = sorted(p.relative_to(tmp_path / "c1").as_posix()
                   for p in (tmp_path / "c1").rglob("*") if p.is_file())
    assert files == ["inner-link.py", "main.py", "pkg/__init__.py"]
    assert info["files"] == 3 and info["bytes"] == 16
    # links out of the app are refused: tests/test_reliability_deploy_limits.py
    assert len(notes) == 1 and "symbolic links in the app" in notes[0] and "inner-link.py" in notes[0]
    assert not os.stat(tmp_path / "c1" / "main.py").st_mode & 0o222
    h = hashlib.sha256()
    for rel, data in [("inner-link.py", b"app = 1\n"), ("main.py", b"app = 1\n"),
                      ("pkg/__init__.py", b"")]:
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).hexdigest().encode() + b"\n")
    assert info["hash"] == "sha256:" + h.hexdigest()
    # same content -> same hash; one byte changed -> another
    assert copy_app(src, tmp_path / "c2", exclude=[src / "store"])["hash"] == info["hash"]
    (src / "pkg" / "__init__.py").write_text(" ")
    assert copy_app(src, tmp_path / "c3", exclude=[src / "store"])["hash"] != info["hash"]


def test_layer_hash_depends_on_the_wheel_set_only():
    w = lambda n, v, s: SimpleNamespace(name=n, version=v, sha256=s)  # noqa: E731
    a, b = w("a", "1", "1" * 64), w("b", "2", "2" * 64)
    assert layer_hash([a, b]) == layer_hash([b, a])
    assert layer_hash([a, b]).startswith("sha256:") and len(layer_hash([a])) == 71
    assert layer_hash([a, b]) != layer_hash([a, w("b", "2", "3" * 64)])
    assert layer_hash([a]) != layer_hash([a, b])


def test_guest_code_digest_follows_the_guest_files(tmp_path, monkeypatch):
    """Package snapshots are keyed by the guest modules' digest (they have those modules
    imported): editing, adding or renaming a guest file changes it."""
    from pyworkers.runtime import guestcode

    monkeypatch.setattr(guestcode, "GUEST_DIR", tmp_path)
    (tmp_path / "_pyworkers_guest.py").write_text("A = 1\n")
    digests = []
    for change in (lambda: None,
                   lambda: (tmp_path / "_pyworkers_guest.py").write_text("A = 2\n"),
                   lambda: (tmp_path / "_pyworkers_serve.py").write_text(""),
                   lambda: (tmp_path / "_pyworkers_serve.py").rename(tmp_path / "_other.py")):
        change()
        guestcode.guest_code_digest.cache_clear()
        digests.append(guestcode.guest_code_digest())
    guestcode.guest_code_digest.cache_clear()
    assert len(set(digests)) == 4
    assert guestcode.guest_code_digest() == digests[-1]
    guestcode.guest_code_digest.cache_clear()
