"""Issue 14, must show: a deployed FastAPI app rendering Jinja2 templates (autoescaped) answers
byte-for-byte like native uvicorn; PyYAML's safe_load and zoneinfo work in the sandbox; the app
(examples/templates) lists its dependencies only in pyproject.toml (+ an optional group named in
[tool.pyworkers] dependency_groups). MarkupSafe and PyYAML come from the release lock where its
package base URL is reachable, else are built as pure-Python wheels from their sdists."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from test_serve import Server, comparable, fresh_connections

pytestmark = [pytest.mark.slow, pytest.mark.network]

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "templates"


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyworkers", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    st = tmp_path_factory.mktemp("store")
    assert not (APP / "requirements.txt").exists()  # pyproject.toml only
    r = cli("deploy", str(APP), "--store", str(st), "--json", "-q")
    assert r.returncode == 0, r.stderr
    return st, json.loads(r.stdout)


@pytest.fixture(scope="module")
def servers(deployed, tmp_path_factory):
    from pyworkers.store import Store

    st, rec = deployed
    dep = Store(st).current("templates")
    version = next(p["version"] for p in rec["lock"]["packages"] if p["name"] == "pydantic-core")
    core = tmp_path_factory.mktemp("native-core")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--target", str(core), f"pydantic-core=={version}"],
                   check=True, timeout=600)
    logs = tmp_path_factory.mktemp("logs")
    pyw = Server([sys.executable, "-m", "pyworkers", "serve", "--store", str(st), "--host",
                  "127.0.0.1", "--port", "0", "--min-idle", "1", "--max-isolates", "1"],
                 logs / "pyw.log")
    # Native uvicorn on the same layer (its pure MarkupSafe/PyYAML/Jinja2/FastAPI), with a
    # native pydantic-core in front of the layer's wasm one.
    native = Server([sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(APP),
                     "--host", "127.0.0.1", "--port", "0"], logs / "native.log",
                    env={"PYTHONPATH": os.pathsep.join([str(core), str(dep.layer_dir)])})
    try:
        yield pyw.wait_ready(), native.wait_ready()
    finally:
        pyw.stop()
        native.stop()


def test_pyproject_dependencies_and_sources(deployed):
    _, rec = deployed
    lock = rec["lock"]
    assert lock["source"] == "pyproject.toml [project] dependencies + yaml"
    pins = {p["name"]: p for p in lock["packages"]}
    assert {"fastapi", "jinja2", "markupsafe", "pyyaml", "tzdata"} <= set(pins)
    for name in ("markupsafe", "pyyaml"):
        # the release lock's wasm wheel where reachable, else a pure wheel built from the sdist
        assert pins[name]["source"] in ("lock", "sdist"), pins[name]
        if pins[name]["source"] == "sdist":
            assert pins[name]["wheel"].endswith("-py3-none-any.whl")
            assert pins[name]["sdist"]["name"].endswith((".tar.gz", ".zip"))
            assert name in lock["built_from_sdist"]
    assert rec["smoke"]["status"] == 200


CASES = [
    ("GET", "/", {}),
    ("GET", "/?name=%3Cb%3Ebold%3C%2Fb%3E%20%26%20%22q%22", {}),
    ("POST", "/yaml", {"content": b"a: 1\nb: [x, 2.5, null, true]\nc: {d: '2026-12-04'}\n"}),
    ("POST", "/yaml", {"content": b"when: 2026-12-04\nanchors: &x {k: v}\nref: *x\n"}),
    ("POST", "/yaml", {"content": b"a: [1, 2\n"}),
    ("POST", "/yaml", {"content": b"!!python/object/apply:os.system ['true']\n"}),
    ("GET", "/tz", {}),
    ("GET", "/tz?zone=America/New_York&ts=1793000000", {}),
    ("GET", "/tz?zone=Asia/Kolkata", {}),
    ("GET", "/engine", {}),
]


def test_templates_yaml_tz_match_native_uvicorn(servers):
    pyw, native = servers
    with fresh_connections() as c:
        for method, path, kw in CASES:
            a = c.request(method, pyw.url + path, **kw)
            b = c.request(method, native.url + path, **kw)
            assert comparable(a) == comparable(b), (method, path, a.text[:400], b.text[:400])
    page = httpx.get(pyw.url + "/?name=%3Cb%3Ex%3C%2Fb%3E", timeout=60).text
    assert "Hello, &lt;b&gt;x&lt;/b&gt;!" in page  # autoescape
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "&#34;sharp&#34; &amp; &#39;long&#39;" in page
    assert "Paris time: 2026-07-01T12:00:00+02:00" in page


def test_yaml_and_zoneinfo_in_the_sandbox(servers):
    pyw, _ = servers
    r = httpx.post(pyw.url + "/yaml", content=b"a: 1\nb: [x, 2.5, null, true]\n", timeout=60)
    assert r.json() == {"data": {"a": 1, "b": ["x", 2.5, None, True]}, "type": "dict"}
    r = httpx.post(pyw.url + "/yaml", content=b"!!python/object/apply:os.system ['true']\n",
                   timeout=60)
    assert r.json()["error"] == "ConstructorError"  # safe_load refuses python tags
    r = httpx.get(pyw.url + "/tz", timeout=60).json()
    assert r == {"zone": "Europe/Paris", "local": "2026-07-01T12:00:00+02:00", "tzname": "CEST",
                 "utcoffset_s": 7200.0, "winter": "2026-01-15T13:00:00+01:00"}


def test_zoneinfo_in_a_layer_with_python_command(deployed):
    from pyworkers.store import Store

    st, _ = deployed
    layer = Store(st).current("templates").layer_dir
    code = ("import zoneinfo, datetime as d; z = zoneinfo.ZoneInfo('Europe/Paris'); "
            "t = d.datetime(2026, 3, 29, 1, 30, tzinfo=d.timezone.utc).astimezone(z); "
            "print(t.isoformat(), t.tzname(), len(zoneinfo.available_timezones()) > 400)")
    r = cli("python", "--site-packages", str(layer), "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2026-03-29T03:30:00+02:00 CEST True"  # DST switch at 01:00 UTC


def test_unvendored_stdlib_module_hint(tmp_path):
    """On 0.29.3, sqlite3 is a separate package of the release: the deploy says so."""
    app = tmp_path / "uses-sqlite"
    app.mkdir()
    (app / "pyworkers.toml").write_text('compatibility_date = "2026-06-01"\n')  # 0.29.3
    (app / "main.py").write_text("import sqlite3\n\nasync def app(scope, receive, send):\n"
                                 "    pass\n")
    r = cli("deploy", str(app), "--store", str(tmp_path / "store"), "-q")
    assert r.returncode != 0
    assert "'sqlite3' is part of Python's standard library, but Pyodide 0.29.3 ships it" in r.stderr
    assert "add the package that provides" not in r.stderr
