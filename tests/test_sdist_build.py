"""Issue 14, package side: pure-Python wheels built from sdists, server-only packages left out,
the release lock through a loopback mirror, `pyworkers check`, pyproject inputs.

A package index (PEP 691 JSON with upload times) and a mirror of the release lock's URL layout are
served by a real HTTP server on 127.0.0.1 from wheels and sdists generated here."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from pyworkers.packages import NoCompatibleWheelError, read_lock, resolve
from pyworkers.packages.inputs import app_inputs
from pyworkers.packages.sdist import check_pure, recipe, retag_pure

UPLOADED = "2025-06-01T00:00:00Z"
ROOT = Path(__file__).resolve().parents[1]


def make_wheel(d: Path, name: str, version: str, tag: str = "py3-none-any",
               requires: tuple[str, ...] = (), extras: dict | None = None,
               files: dict | None = None) -> Path:
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    for extra, reqs in (extras or {}).items():
        meta.append(f"Provides-Extra: {extra}")
        meta += [f"Requires-Dist: {r}; extra == \"{extra}\"" for r in reqs]
    body = dict(files or {f"{dist}/__init__.py": f"VERSION = {version!r}\n"})
    body[f"{info}/METADATA"] = "\n".join(meta) + "\n"
    body[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: "
                             f"{'true' if tag.endswith('any') else 'false'}\nTag: {tag}\n")
    body[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in [*body, f"{info}/RECORD"])
    p = d / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(p, "w") as zf:
        for n, text in body.items():
            zf.writestr(n, text)
    return p


def make_sdist(d: Path, name: str, version: str, files: dict) -> Path:
    base = f"{name}-{version}"
    p = d / f"{base}.tar.gz"
    with tarfile.open(p, "w:gz") as tf:
        for n, text in {"PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                        **files}.items():
            data = text.encode()
            ti = tarfile.TarInfo(f"{base}/{n}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return p


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, Path] = {}  # URL path -> file
    projects: dict[str, list[str]] = {}  # project -> file names under /files/

    def log_message(self, *a):
        pass

    def _send(self, code: int, body: bytes, ctype: str, head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head: bool = False):
        path = self.path.split("?", 1)[0]
        if path in self.files:
            return self._send(200, self.files[path].read_bytes(), "application/octet-stream", head)
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "simple" and parts[1] in self.projects:
            host = f"http://{self.headers['Host']}"
            files = [{"filename": n, "url": f"{host}/files/{n}",
                      "hashes": {"sha256": hashlib.sha256(
                          self.files[f"/files/{n}"].read_bytes()).hexdigest()},
                      "upload-time": UPLOADED} for n in self.projects[parts[1]]]
            body = json.dumps({"meta": {"api-version": "1.1"}, "name": parts[1],
                               "files": files}).encode()
            return self._send(200, body, "application/vnd.pypi.simple.v1+json", head)
        self._send(404, b"not found", "text/plain", head)


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server: ``add(project, path)`` publishes a file on the index (``/simple/``)
    and ``mirror(path)`` under ``/pyodide/`` (the release lock's layout); ``url``."""
    handler = type("H", (_Handler,), {"files": {}, "projects": {}})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()

    class S:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        index = url + "/simple"

        @staticmethod
        def add(project: str, path: Path) -> None:
            handler.files[f"/files/{path.name}"] = path
            handler.projects.setdefault(project, []).append(path.name)

        @staticmethod
        def mirror(path: Path) -> None:
            handler.files[f"/pyodide/{path.name}"] = path

    try:
        yield S
    finally:
        srv.shutdown()
        srv.server_close()


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyworkers", *args], capture_output=True,
                          text=True, timeout=timeout)


DATE = "2026-11-15"  # selects Pyodide 314.0.7


# --------------------------------------------------------------------------- unit


def test_switch_table_is_data():
    assert dict(recipe("PyYAML").env)["PYYAML_FORCE_LIBYAML"] == "0"
    assert dict(recipe("multidict").env)["MULTIDICT_NO_EXTENSIONS"] == "1"
    assert recipe("markupsafe").known and not recipe("some-unknown-project").known
    assert dict(recipe("some-unknown-project").env)["CC"] == "false"  # defaults apply to all


def test_check_pure_and_retag(tmp_path):
    native = make_wheel(tmp_path, "speedy", "1.0", "cp312-cp312-linux_x86_64",
                        files={"speedy/_c.cpython-312-x86_64-linux-gnu.so": "\0ELF"})
    assert "native code" in check_pure(native)
    plat = make_wheel(tmp_path, "plat", "1.0", "cp312-cp312-linux_x86_64")
    assert "Root-Is-Purelib" in check_pure(plat)
    pure = make_wheel(tmp_path, "pure-thing", "2.0", "py2.py3-none-any")
    assert check_pure(pure) is None
    name, data = retag_pure(pure, "pure-thing", "2.0")
    assert name == "pure_thing-2.0-py3-none-any.whl"
    assert retag_pure(pure, "pure-thing", "2.0")[1] == data  # deterministic bytes
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert "Tag: py3-none-any" in zf.read("pure_thing-2.0.dist-info/WHEEL").decode()
    rec = zf.read("pure_thing-2.0.dist-info/RECORD").decode()
    assert "pure_thing/__init__.py,sha256=" in rec


def test_pyproject_inputs_and_groups(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "1"\ndependencies = ["fastapi>=0.100"]\n'
        '[project.optional-dependencies]\ntemplates = ["jinja2"]\n'
        '[dependency-groups]\nyaml = ["pyyaml", {include-group = "more"}]\nmore = ["tzdata"]\n')
    got = app_inputs(tmp_path, ("templates", "yaml"))
    assert got.kind == "pyproject"
    assert [r.name for r in got.requirements.requirements] == ["fastapi", "jinja2", "pyyaml",
                                                               "tzdata"]
    from pyworkers.packages import RequirementsError

    with pytest.raises(RequirementsError, match="'nope'.*it has more, templates, yaml"):
        app_inputs(tmp_path, ("nope",))
    (tmp_path / "requirements.txt").write_text("httpx\n")
    assert app_inputs(tmp_path).kind == "requirements"  # requirements.txt wins


# --------------------------------------------------------------------------- loopback index


def test_compiled_sdist_fails_with_reason_and_alternatives(tmp_path, server):
    server.add("cext", make_sdist(tmp_path, "cext", "1.0", {
        "setup.py": "from setuptools import setup, Extension\n"
                    "setup(name='cext', ext_modules=[Extension('cext', ['src/cext.c'])])\n",
        "src/cext.c": "int x;\n"}))
    with pytest.raises(NoCompatibleWheelError) as ei:
        resolve(["cext"], "314.0.7", index_url=server.index,
                extra_index_urls=[], exclude_newer=None,
                cache_dir=tmp_path / "cache", build=True)
    e = ei.value
    assert e.project == "cext"
    assert "only source distributions" in e.message and "src/cext.c" in e.message
    assert "needs a compiler" in e.message
    assert "alternatives:" in e.detail and "pyodide build" in e.detail
    with pytest.raises(NoCompatibleWheelError, match=r"natively is turned off \(--no-build\)"):
        resolve(["cext"], "314.0.7", index_url=server.index,
                extra_index_urls=[], exclude_newer=None,
                cache_dir=tmp_path / "cache", build=False)


FAILING_BACKEND = {
    # An in-tree PEP 517 backend (no build requirements: no index needed) whose build fails.
    "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                      'backend-path = ["."]\n',
    "backend.py": "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):"
                  "\n    raise RuntimeError('broken build marker 5e1c')\n",
    "brokensd/__init__.py": "",
}


def test_failing_build_names_package_reason_and_alternatives(tmp_path, server):
    server.add("brokensd", make_sdist(tmp_path, "brokensd", "1.0", FAILING_BACKEND))
    from pyworkers.packages import SdistBuildError

    with pytest.raises(SdistBuildError) as ei:
        resolve(["brokensd"], "314.0.7", index_url=server.index, extra_index_urls=[],
                exclude_newer=None, cache_dir=tmp_path / "cache", build=True)
    e = ei.value
    assert e.project == "brokensd" and e.version == "1.0" and e.sdist == "brokensd-1.0.tar.gz"
    assert str(e).startswith("brokensd 1.0: cannot build a pure-Python wheel from its sdist "
                             "brokensd-1.0.tar.gz: `python -m build --wheel` failed")
    assert "alternatives:" in str(e) and "pyodide build" in str(e)
    assert "broken build marker 5e1c" in e.detail  # the end of the build's output
    # `pyworkers check` reports it as unavailable, with the reason, instead of failing.
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyworkers.toml").write_text(f'compatibility_date = "{DATE}"\n')
    (app / "requirements.txt").write_text("brokensd\n")
    (app / "main.py").write_text("import brokensd\n")
    from pyworkers.check import check_app
    from pyworkers.compat import select

    rep = check_app(app, selection=select(DATE), index_url=server.index, extra_index_urls=[],
                    cache_dir=str(tmp_path / "cache2"), package_base_url="")
    row = next(p for p in rep["packages"] if p["name"] == "brokensd")
    assert row["kind"] == "unavailable" and "python -m build --wheel` failed" in row["why"]
    assert rep["ok"] is False


def test_server_only_dependencies_left_out(tmp_path, server):
    server.add("webapp", make_wheel(tmp_path, "webapp", "1.0",
                                    extras={"standard": ["uvicorn[standard]", "tinylib"]}))
    server.add("uvicorn", make_wheel(tmp_path, "uvicorn", "0.40.0",
                                     extras={"standard": ["uvloop", "httptools"]}))
    server.add("uvloop", make_wheel(tmp_path, "uvloop", "0.22.0", "cp314-cp314-linux_x86_64"))
    server.add("tinylib", make_wheel(tmp_path, "tinylib", "1.0"))
    res = resolve(["webapp[standard]"], "314.0.7", index_url=server.index,
                  extra_index_urls=[], exclude_newer=None,
                  cache_dir=tmp_path / "cache", implicit=("tzdata",))
    assert [w.name for w in res.wheels] == ["tinylib", "webapp"]
    assert any(lo.startswith("uvicorn (required by webapp[standard] 1.0") for lo in res.left_out)
    assert any("tzdata" in n and "only know UTC" in n for n in res.notes)  # implicit, absent
    # Listed by the user: uvicorn (a wheel) is installed, uvloop (none) is left out.
    res = resolve(["uvicorn[standard]"], "314.0.7", index_url=server.index,
                  extra_index_urls=[], exclude_newer=None,
                  cache_dir=tmp_path / "cache")
    assert [w.name for w in res.wheels] == ["uvicorn"]
    assert sorted(lo.split(" ")[0] for lo in res.left_out) == ["httptools", "uvloop"]


def test_release_lock_through_loopback_mirror(tmp_path, server):
    """The release lock's wasm wheels come from a mirror on 127.0.0.1 (--pyodide-lock,
    --package-base-url): markupsafe, pyyaml, bcrypt, cryptography (+ cffi, pycparser) and tzdata
    are taken from the lock, not built from sdists (the index has their sdists too)."""
    plat = "cp314-cp314-pyemscripten_2026_0_wasm32"
    fixtures = {"markupsafe": ("3.0.3", plat, []), "pyyaml": ("6.0.3", plat, []),
                "bcrypt": ("5.0.0", plat, []),
                "cryptography": ("47.0.0", "cp314-abi3-pyemscripten_2026_0_wasm32", ["cffi"]),
                "cffi": ("2.0.0", plat, ["pycparser"]), "pycparser": ("3.0", "py3-none-any", []),
                "tzdata": ("2025.3", "py2.py3-none-any", [])}
    wheels = tmp_path / "mirror"
    wheels.mkdir()
    packages = {}
    for name, (version, tag, deps) in fixtures.items():
        w = make_wheel(wheels, name, version, tag, requires=tuple(deps))
        server.mirror(w)
        packages[name] = {"name": name, "version": version, "file_name": w.name,
                          "install_dir": "site",
                          "sha256": hashlib.sha256(w.read_bytes()).hexdigest(),
                          "package_type": "package", "imports": [name], "depends": deps}
    for name in ("markupsafe", "pyyaml"):  # the sdist fallback is there too, and must lose
        server.add(name, make_sdist(tmp_path, name, "9.9", {"setup.py": "raise SystemExit(1)\n"}))
    lock = {"info": {"abi_version": "2026_0", "arch": "wasm32", "platform": "emscripten_5_0_3",
                     "version": "314.0.7", "python": "3.14.2"}, "packages": packages}
    (tmp_path / "pyodide-lock.json").write_text(json.dumps(lock))
    req = tmp_path / "requirements.txt"
    req.write_text("markupsafe\npyyaml\nbcrypt\ncryptography\n")
    r = cli("resolve", "-r", str(req), "--compatibility-date", DATE, "--index-url", server.index,
            "--pyodide-lock", str(tmp_path / "pyodide-lock.json"),
            "--package-base-url", server.url + "/pyodide/", "--cache-dir", str(tmp_path / "cache"),
            "--json")
    assert r.returncode == 0, r.stderr
    pins = {p["name"]: p for p in json.loads(r.stdout)}
    assert set(pins) == set(fixtures)
    for name, (version, _, _) in fixtures.items():
        assert pins[name]["source"] == "lock" and pins[name]["version"] == version, pins[name]
        assert pins[name]["url"] == f"{server.url}/pyodide/{pins[name]['wheel']}"
        assert pins[name]["sha256"] == packages[name]["sha256"]
    assert "built pure-Python wheels" not in r.stderr


def test_check_names_the_unavailable_package(tmp_path, server):
    server.add("goodlib", make_wheel(tmp_path, "goodlib", "1.2"))
    server.add("natlib", make_wheel(tmp_path, "natlib", "3.0", "cp314-cp314-linux_x86_64"))
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyworkers.toml").write_text(f'compatibility_date = "{DATE}"\n')
    (app / "requirements.txt").write_text("goodlib\nnatlib\n")
    (app / "main.py").write_text("import threading\nimport subprocess as sp\n"
                                 "from tkinter import Tk\nimport goodlib, natlib\n")
    lock = tmp_path / "empty-lock.json"
    lock.write_text(json.dumps({"info": {"abi_version": "2026_0", "arch": "wasm32",
                                         "platform": "emscripten_5_0_3", "version": "314.0.7",
                                         "python": "3.14.2"}, "packages": {}}))
    r = cli("check", str(app), "--index-url", server.index, "--pyodide-lock", str(lock),
            "--package-base-url", "", "--cache-dir", str(tmp_path / "cache"), "--json")
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    kinds = {p["name"]: p["kind"] for p in rep["packages"]}
    assert kinds["goodlib"] == "pure wheel" and kinds["natlib"] == "unavailable"
    natlib = next(p for p in rep["packages"] if p["name"] == "natlib")
    assert "natlib: no wheel for Pyodide 314.0.7" in natlib["why"]
    mods = {(s["module"], s["status"]) for s in rep["stdlib"]}
    assert {("threading", "limited"), ("subprocess", "limited"), ("tkinter", "absent")} <= mods
    assert rep["ok"] is False
    r = cli("check", str(app), "--index-url", server.index, "--pyodide-lock", str(lock),
            "--package-base-url", "", "--cache-dir", str(tmp_path / "cache"))
    assert r.returncode == 1
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("natlib"))
    assert "unavailable" in line
    assert "uploaded" not in line  # the index's upload time is before the package-set date


# --------------------------------------------------------------------------- needs the index


@pytest.mark.network
def test_pure_sdist_built_locked_and_reused(tmp_path, server):
    """A source-only pure-Python package is built with pypa build (its build backend comes from
    the package index), checked, tagged py3-none-any, recorded in pylock.toml as built from the
    sdist, reused from the lock and the cache; --no-build refuses it."""
    sd = make_sdist(tmp_path, "srconly", "1.4", {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=68"]\n'
                          'build-backend = "setuptools.build_meta"\n'
                          '[project]\nname = "srconly"\nversion = "1.4"\n'
                          'dependencies = ["goodlib>=1"]\n',
        "srconly/__init__.py": "def hello():\n    return 'hi'\n"})
    server.add("srconly", sd)
    server.add("goodlib", make_wheel(tmp_path, "goodlib", "1.2"))
    app = tmp_path / "app"
    app.mkdir()
    (app / "requirements.txt").write_text("srconly\n")
    args = ["resolve", str(app), "--compatibility-date", DATE, "--index-url", server.index,
            "--no-release-lock", "--cache-dir", str(tmp_path / "cache"), "--json"]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    pins = {p["name"]: p for p in json.loads(r.stdout)}
    p = pins["srconly"]
    assert p["source"] == "sdist" and p["wheel"] == "srconly-1.4-py3-none-any.whl"
    assert p["sdist"]["sha256"] == hashlib.sha256(sd.read_bytes()).hexdigest()
    assert "built pure-Python wheels from sdists" in r.stderr and "srconly 1.4" in r.stderr
    assert pins["goodlib"]["source"] == "index"  # dependencies come from the built metadata
    lock = read_lock(app / "pylock.toml")
    w = lock.get("srconly")
    assert w.source == "sdist" and w.sdist.filename == "srconly-1.4.tar.gz"
    assert w.sha256 == p["sha256"]
    import tomllib

    doc = tomllib.loads((app / "pylock.toml").read_text())
    entry = next(x for x in doc["packages"] if x["name"] == "srconly")
    assert entry["sdist"]["hashes"]["sha256"] == p["sdist"]["sha256"]  # PEP 751 sdist table
    assert "wheels" not in entry
    cached = next((tmp_path / "cache/packages/wheels/sha256").rglob(f"{p['sha256']}.whl"))
    assert check_pure(cached) is None
    assert not [n for n in zipfile.ZipFile(cached).namelist() if n.endswith((".so", ".pyd"))]
    r2 = cli(*args)
    assert r2.returncode == 0 and "(reused)" not in r2.stdout  # --json: same pins
    assert json.loads(r2.stdout) == json.loads(r.stdout)
    assert "inputs unchanged, reusing the lock" in r2.stderr
    (app / "pylock.toml").unlink()
    r3 = cli(*args, "--no-build")
    assert r3.returncode == 1
    assert "srconly" in r3.stderr and "--no-build" in r3.stderr


@pytest.mark.network
def test_fastapi_standard_resolves_with_notes(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("fastapi[standard]\n")
    r = cli("resolve", "-r", str(req), "--compatibility-date", DATE, "--no-release-lock",
            "--no-download", "--json")
    assert r.returncode == 0, r.stderr
    names = {p["name"]: p for p in json.loads(r.stdout)}
    assert "fastapi" in names and "uvloop" not in names and "httptools" not in names
    assert "left out of the layer (server-only" in r.stderr
    assert "uvicorn (required by fastapi[standard]" in r.stderr
    assert names["markupsafe"]["source"] == "sdist"  # jinja2's dependency, built pure
    assert names["tzdata"]["source"] == "index"  # implicit: the tz database
