"""Offline tests for pyworkers.packages: recorded index pages (tests/data/packages, see record.py
there) and synthetic wheels, served through httpx.MockTransport under fake hosts."""
from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import re
import threading
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from pyworkers.packages import (ConflictError, HashMismatchError, IndexConfigError, LayerError,
                                NetworkError, NoCompatibleWheelError, RequirementsError,
                                Resolution, download, index_config, install_layer,
                                parse_requirements, read_lock, resolve, write_lock)
from pyworkers.packages import http_client as http_mod
from pyworkers.packages import index as index_mod
from pyworkers.packages.simple_api import IndexFile, parse_simple_html, parse_simple_json
from pyworkers.packages.target import Target

DATA = Path(__file__).parent / "data" / "packages"
INDEX = "https://index.test/simple"
CDN = "https://cdn.test/pyodide/"
LOCK314 = DATA / "pyodide-lock-314.json"
LOCK029 = DATA / "pyodide-lock-0.29.3.json"


# --------------------------------------------------------------------------- fakes

def make_wheel(name: str, version: str, *, tag: str = "py3-none-any", files: dict | None = None,
               requires: tuple[str, ...] = (), data: dict | None = None,
               metadata: bytes | None = None, tamper: str | None = None) -> bytes:
    """A valid wheel (PEP 427) with RECORD hashes; ``data`` maps ``.data`` paths to bytes;
    ``tamper`` names a file whose content differs from its RECORD entry."""
    dist = re.sub(r"[-_.]+", "_", name)
    di = f"{dist}-{version}.dist-info"
    meta = metadata or ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version)
                        + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()
    entries = dict(files if files is not None else {f"{dist}/__init__.py": b"X = 1\n"})
    for k, v in (data or {}).items():
        entries[f"{dist}-{version}.data/{k}"] = v
    entries[f"{di}/METADATA"] = meta
    entries[f"{di}/WHEEL"] = f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    rows = []
    for path, content in entries.items():
        h = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        rows.append([path, f"sha256={h}", str(len(content))])
    rows.append([f"{di}/RECORD", "", ""])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    entries[f"{di}/RECORD"] = buf.getvalue().encode()
    if tamper:
        entries[tamper] = entries[tamper] + b"# changed\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, content in entries.items():
            zi = zipfile.ZipInfo(path, (2026, 1, 1, 0, 0, 0))
            if "/scripts/" in path:
                zi.external_attr = 0o755 << 16
            zf.writestr(zi, content)
    return out.getvalue()


class FakeNet:
    """The fake index (recorded pages + synthetic pages) and the fake package CDN."""

    def __init__(self, *, cdn: str = "down") -> None:
        self.cdn = cdn  # "up": HEAD/GET answer; "head-only": GET fails; "down": connect error
        self.requests: list[tuple[str, str, dict]] = []
        self.pages: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}  # filename -> bytes served at /packages/.../filename
        self.fail_status: int | None = None
        self.lock = threading.Lock()

    # synthetic projects -----------------------------------------------------
    def add(self, name: str, version: str, blob: bytes, *, sha256: str | None = None,
            uploaded: str = "2026-01-01T00:00:00Z", fmt: str = "html",
            filename: str | None = None, extra_links: str = "") -> str:
        dist = re.sub(r"[-_.]+", "_", name)
        fn = filename or f"{dist}-{version}-py3-none-any.whl"
        self.blobs[fn] = blob
        sha = sha256 or hashlib.sha256(blob).hexdigest()
        if fmt == "json":
            self.pages[name] = json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": [
                {"filename": fn, "url": f"../../packages/x/{fn}", "hashes": {"sha256": sha},
                 "upload-time": uploaded, "requires-python": ">=3.8"}]})
        else:
            self.pages[name] = self.pages.get(name, "") + (
                f'<a href="../../packages/x/{fn}#sha256={sha}" '
                f'data-upload-time="{uploaded}">{fn}</a>{extra_links}\n')
        return fn

    # the transport ----------------------------------------------------------
    def handler(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        with self.lock:
            self.requests.append((request.method, url, dict(request.headers)))
        host = request.url.host
        if host == "cdn.test":
            if self.cdn == "down" or (self.cdn == "head-only" and request.method == "GET"):
                raise httpx.ConnectError("connection refused", request=request)
            fn = url.rsplit("/", 1)[-1]
            if fn not in self.blobs:
                return httpx.Response(404)
            return httpx.Response(200, content=b"" if request.method == "HEAD" else self.blobs[fn])
        if host != "index.test":
            raise httpx.ConnectError(f"unexpected host {host}", request=request)
        if self.fail_status:
            return httpx.Response(self.fail_status)
        path = request.url.path
        if path.startswith("/simple/"):
            project = path[len("/simple/"):].strip("/")
            if project in self.pages:
                page = self.pages[project]
                ctype = ("application/vnd.pypi.simple.v1+json" if page.startswith("{")
                         else "text/html")
                return httpx.Response(200, text=page, headers={"content-type": ctype})
            f = DATA / "index" / f"{project}.html"
            if f.is_file():
                return httpx.Response(200, text=f.read_text(), headers={"content-type": "text/html"})
            return httpx.Response(404)
        if path.startswith("/packages/"):
            fn = path.rsplit("/", 1)[-1]
            if fn.endswith(".metadata"):
                blob = self.blobs.get(fn[:-len(".metadata")])
                if blob is None:
                    return httpx.Response(404)
                with zipfile.ZipFile(io.BytesIO(blob)) as zf:
                    name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
                    return httpx.Response(200, content=zf.read(name))
            blob = self.blobs.get(fn)
            if blob is None:
                meta = DATA / "metadata" / f"{fn}.METADATA"
                if not meta.is_file():
                    return httpx.Response(404)
                n, v = fn.split("-")[:2]
                blob = make_wheel(n, v, metadata=meta.read_bytes())
            rng = request.headers.get("range")
            if rng:
                m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng)
                a, b = m.group(1), m.group(2)
                start = len(blob) - int(b) if not a else int(a)
                end = len(blob) - 1 if (not a or not b) else int(b)
                start = max(0, start)
                return httpx.Response(206, content=blob[start:end + 1], headers={
                    "content-range": f"bytes {start}-{end}/{len(blob)}"})
            return httpx.Response(200, content=blob)
        return httpx.Response(404)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def urls(self, method: str | None = None) -> list[str]:
        return [u for m, u, _ in self.requests if method is None or m == method]


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch):
    """No pip configuration, no environment overrides, no backoff sleeps."""
    monkeypatch.setattr(index_mod, "_pip_config", lambda: {})
    for k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "PYWORKERS_PACKAGE_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(http_mod, "BACKOFF", 0.0)


@pytest.fixture
def net():
    return FakeNet()


def run(reqs, release="314.0.7", *, net: FakeNet, tmp_path: Path, **kw) -> Resolution:
    kw.setdefault("index_url", INDEX)
    kw.setdefault("extra_index_urls", ())
    kw.setdefault("cache_dir", tmp_path / "cache")
    return resolve(reqs, release, transport=net.transport, **kw)


# --------------------------------------------------------------------------- index pages

def test_html_page_maps_every_field():
    page = (DATA / "index" / "pydantic-core.html").read_text()
    files = parse_simple_html(page, INDEX + "/pydantic-core/", INDEX)
    byname = {f.filename: f for f in files}
    f = byname["pydantic_core-2.50.2-cp314-cp314-pyemscripten_2026_0_wasm32.whl"]
    assert f.url.startswith("https://index.test/packages/") and "#" not in f.url
    assert f.sha256 == "9a8a62281fd9c6a373b3fd3d473685e6838d43341eecde5f47729748e2c11ee3"
    assert f.requires_python == ">=3.10"  # unescaped from &gt;=3.10
    assert f.upload_time == dt.datetime(2026, 10, 29, 16, 33, 15, tzinfo=dt.timezone.utc)
    assert f.yanked is False and f.core_metadata is False
    assert any(x.filename.endswith(".tar.gz") for x in files)


def test_html_yanked_metadata_and_base_href():
    page = ('<base href="https://mirror.test/root/"><a href="f/x-1.0-py3-none-any.whl#sha256='
            + "a" * 64 + '" data-yanked="broken" data-core-metadata="sha256=' + "B" * 64
            + '">x</a><a href="f/x-0.9-py3-none-any.whl" data-dist-info-metadata="true" '
            'data-yanked="">x</a>')
    a, b = parse_simple_html(page, INDEX + "/x/")
    assert a.url == "https://mirror.test/root/f/x-1.0-py3-none-any.whl"
    assert a.yanked == "broken" and a.core_metadata == {"sha256": "b" * 64}
    assert b.yanked == "" and b.core_metadata is True and b.sha256 is None


def test_json_and_html_give_the_same_records():
    html = (DATA / "index" / "fastapi.html").read_text()
    from_html = parse_simple_html(html, INDEX + "/fastapi/", INDEX)
    doc = {"meta": {"api-version": "1.1"}, "name": "fastapi", "files": [
        {"filename": f.filename, "url": f.url, "hashes": {"sha256": f.sha256},
         "requires-python": f.requires_python,
         "upload-time": f.upload_time.isoformat().replace("+00:00", "Z"),
         "core-metadata": False, "yanked": False} for f in from_html]}
    assert parse_simple_json(doc, INDEX + "/fastapi/", INDEX) == from_html


# --------------------------------------------------------------------------- configuration

def test_index_config_precedence(monkeypatch):
    monkeypatch.setattr(index_mod, "_pip_config", lambda: {
        "global.index-url": "https://cfg.test/simple",
        "global.extra-index-url": "https://extra.test/simple file:///nonexistent/simple",
        "global.cert": "/etc/ssl/certs/ca-certificates.crt"})
    c = index_config()
    assert (c.index_url, c.origin) == ("https://cfg.test/simple", "pip configuration (index-url)")
    assert c.extra_index_urls == ("https://extra.test/simple", "file:///nonexistent/simple")
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.test/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    c = index_config()
    assert (c.index_url, c.origin, c.extra_index_urls) == ("https://env.test/simple",
                                                           "PIP_INDEX_URL", ())
    assert index_config("https://arg.test/simple").index_url == "https://arg.test/simple"


def test_index_config_falls_back_to_pips_default_and_fails_clearly_without_pip(monkeypatch):
    from pip._internal.models.index import PyPI

    assert index_config().index_url == PyPI.simple_url
    monkeypatch.setattr(index_mod, "_pip_default_index", lambda: None)
    with pytest.raises(IndexConfigError, match="--index-url"):
        index_config()


def test_nonexistent_file_index_is_skipped(net, tmp_path):
    res = run(["annotated-types"], net=net, tmp_path=tmp_path,
              extra_index_urls=[(tmp_path / "nope").as_uri()])
    assert res.get("annotated-types").version == "0.8.0"
    assert any("does not exist; skipped" in n for n in res.notes)


def test_file_index_directory_is_read(tmp_path, net):
    blob = make_wheel("localpkg", "1.0")
    d = tmp_path / "simple" / "localpkg"
    d.mkdir(parents=True)
    (d / "localpkg-1.0-py3-none-any.whl").write_bytes(blob)
    res = run(["localpkg"], net=net, tmp_path=tmp_path, exclude_newer=None,
              extra_index_urls=[(tmp_path / "simple").as_uri()])
    w = res.get("localpkg")
    assert w.sha256 == hashlib.sha256(blob).hexdigest() and w.url.startswith("file://")


# --------------------------------------------------------------------------- requirements

def test_requirements_file_features(tmp_path):
    whl = tmp_path / "wheels" / "mine-1.0-py3-none-any.whl"
    whl.parent.mkdir()
    whl.write_bytes(make_wheel("mine", "1.0"))
    (tmp_path / "more.txt").write_text("anyio>=4  # inline comment\n")
    (tmp_path / "requirements.txt").write_text(
        "# comment\n"
        "fastapi[standard]>=0.100 ; python_version >= '3.10'\n"
        "pydantic==2.14.2 \\\n    --hash=sha256:" + "A" * 64 + "\n"
        "-r more.txt\n./wheels/mine-1.0-py3-none-any.whl\n--pre\n-f /somewhere\n")
    r = parse_requirements(tmp_path / "requirements.txt")
    by = {x.name: x for x in r.requirements}
    assert set(by) == {"fastapi", "pydantic", "anyio", "mine"}
    assert by["fastapi"].requirement.extras == {"standard"}
    assert str(by["fastapi"].requirement.marker) == 'python_version >= "3.10"'
    assert by["pydantic"].hashes == {"sha256:" + "a" * 64}
    assert by["anyio"].origin == "more.txt:1"
    assert by["mine"].wheel_path == whl and by["mine"].url == whl.as_uri()
    assert r.pre and any("-f ignored" in n for n in r.notes)


@pytest.mark.parametrize("line, what", [
    ("git+https://example.invalid/x.git#egg=x", "VCS"),
    ("-e ./src", "editable"),
    ("./dist/x-1.0.tar.gz", "source distribution"),
    ("x @ https://example.invalid/x-1.0.zip", "source distribution"),
    ("./src/", "not a wheel"),
    ("-c constraints.txt", "constraints"),
    ("--no-binary :all:", "cannot build"),
    ("--frobnicate", "unknown"),
])
def test_refused_requirements(line, what):
    with pytest.raises(RequirementsError, match=what):
        parse_requirements([line])


def test_include_cycle_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("-r b.txt\n")
    (tmp_path / "b.txt").write_text("-r a.txt\n")
    with pytest.raises(RequirementsError, match="includes itself"):
        parse_requirements(tmp_path / "a.txt")


# --------------------------------------------------------------------------- target

def test_target_tags_and_environment():
    t = Target.of("314.0.7")
    assert str(t.tags[0]) == "cp314-cp314-pyemscripten_2026_0_wasm32"
    names = {str(x) for x in t.tags}
    assert {"cp314-abi3-pyemscripten_2026_0_wasm32", "py3-none-any"} <= names
    assert not any("manylinux" in n or "pyodide_2025" in n for n in names)
    env = t.environment
    assert (env["sys_platform"], env["platform_machine"], env["python_full_version"]) == (
        "emscripten", "wasm32", "3.14.2")
    assert str(Target.of("0.29.3").tags[0]) == "cp313-cp313-pyodide_2025_0_wasm32"


# --------------------------------------------------------------------------- resolution

FASTAPI_SET = ["fastapi", "pydantic", "httpx", "python-multipart"]


def test_resolve_314_from_recorded_index(net, tmp_path):
    res = run(FASTAPI_SET, net=net, tmp_path=tmp_path)
    core = res.get("pydantic-core")
    assert core.filename.endswith("-cp314-cp314-pyemscripten_2026_0_wasm32.whl")
    assert core.source == "index" and re.fullmatch(r"[0-9a-f]{64}", core.sha256)
    # PEP 700: the newest fastapi/pydantic on the recorded pages are after 2026-11-01.
    cutoff = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    assert all(w.upload_time < cutoff for w in res.wheels)
    assert res.get("fastapi").version == "0.162.0"
    assert "pydantic-core" in res.get("pydantic").dependencies
    assert res.exclude_newer == cutoff
    # metadata came from range requests on the wheels (no PEP 658 on these pages)
    ranged = [u for m, u, h in net.requests if "range" in h]
    assert ranged and all(u.endswith(".whl") for u in ranged)
    assert not any(u.endswith(".metadata") for u in net.urls())


def test_exclude_newer_override_and_disable(net, tmp_path):
    none = run(["fastapi"], net=net, tmp_path=tmp_path, exclude_newer=None)
    assert none.get("fastapi").version == "0.165.0" and none.exclude_newer is None
    late = run(["fastapi"], net=net, tmp_path=tmp_path, exclude_newer="2026-11-19")
    assert late.get("fastapi").version == "0.165.0"
    # the cut-off is exclusive: a file uploaded at 18:47:31.734776 does not count at that instant
    with pytest.raises(NoCompatibleWheelError, match=r"before 2026-10-23 \(the cut-off\)"):
        run(["fastapi"], net=net, tmp_path=tmp_path,
            exclude_newer=dt.datetime(2026, 10, 23, 18, 47, 31, 734776, tzinfo=dt.timezone.utc))


def test_exclude_newer_error_names_the_date(net, tmp_path):
    with pytest.raises(NoCompatibleWheelError,
                       match=r"uploaded before 2020-01-01 \(the cut-off\).*--no-exclude"):
        run(["python-multipart"], net=net, tmp_path=tmp_path, exclude_newer="2020-01-01")
    with pytest.raises(NoCompatibleWheelError, match=r"\(the package-set date\)"):
        run(["python-multipart"], "0.29.3", net=net, tmp_path=tmp_path)


def test_markers_are_evaluated_for_the_target(net, tmp_path):
    res = run(['foo; sys_platform == "win32"', "annotated-types; sys_platform == 'emscripten'",
               'typing-extensions; platform_machine == "x86_64"'], net=net, tmp_path=tmp_path)
    assert [w.name for w in res.wheels] == ["annotated-types"]
    assert any(s.startswith("foo (") for s in res.skipped)
    assert not any("/foo/" in u or "typing-extensions" in u for u in net.urls())


def test_0293_fails_on_pydantic_core(net, tmp_path):
    with pytest.raises(NoCompatibleWheelError) as ei:
        run(["pydantic"], "0.29.3", net=net, tmp_path=tmp_path)
    e = ei.value
    assert e.project == "pydantic-core" and e.platform_tag == "pyodide_2025_0_wasm32"
    assert str(e).startswith("pydantic-core: no wheel for Pyodide 0.29.3 (pyodide_2025_0_wasm32)")
    assert "required by pydantic 2.11.9" in str(e) and "\n" not in str(e)


def test_no_platform_wheel_names_package_runtime_and_tag(net, tmp_path):
    with pytest.raises(NoCompatibleWheelError) as ei:
        run(["jinja2"], net=net, tmp_path=tmp_path)
    assert str(ei.value).startswith("markupsafe: no wheel for Pyodide 314.0.7 "
                                    "(pyemscripten_2026_0_wasm32)")
    assert "markupsafe publishes none for this platform" in str(ei.value)


def test_several_missing_wheels_are_reported_together(net, tmp_path):
    with pytest.raises(NoCompatibleWheelError) as ei:
        run(["jinja2", "pydantic"], "0.29.3", net=net, tmp_path=tmp_path)
    assert set(ei.value.projects) == {"markupsafe", "pydantic-core"}
    assert "pydantic-core" in str(ei.value) and "pydantic-core" in ei.value.detail


def test_newest_compatible_version_is_named(net, tmp_path):
    with pytest.raises(NoCompatibleWheelError) as ei:
        run(["pydantic-core==2.41.5"], net=net, tmp_path=tmp_path)
    assert ei.value.newest_compatible == "2.50.2"
    assert "the newest version with a compatible wheel is 2.50.2" in str(ei.value)


def test_sdist_only_is_refused(net, tmp_path):
    net.pages["sdistonly"] = ('<a href="../../p/sdistonly-1.0.tar.gz#sha256=' + "0" * 64
                              + '" data-upload-time="2025-01-01T00:00:00Z">s</a>')
    with pytest.raises(NoCompatibleWheelError, match="only source distributions.*cannot build"):
        run(["sdistonly"], net=net, tmp_path=tmp_path)


def test_unknown_project(net, tmp_path):
    with pytest.raises(NoCompatibleWheelError, match="not found on the package index"):
        run(["no-such-project"], net=net, tmp_path=tmp_path)


def test_conflict_chain(net, tmp_path):
    net.add("app", "1.0", make_wheel("app", "1.0", requires=("mid>=1",)))
    net.add("mid", "1.0", make_wheel("mid", "1.0", requires=("leaf==1.0",)))
    net.add("leaf", "1.0", make_wheel("leaf", "1.0"))
    net.add("leaf", "2.0", make_wheel("leaf", "2.0"))
    with pytest.raises(ConflictError) as ei:
        run(["app", "leaf==2.0"], net=net, tmp_path=tmp_path)
    msg = str(ei.value)
    assert msg.startswith("conflicting requirements for leaf: ") and "\n" not in msg
    assert "<requirements>:2 requires leaf==2.0" in msg
    assert "mid 1.0 <- app 1.0 (<requirements>:1) requires leaf==1.0" in msg
    assert set(ei.value.causes) == {("leaf==2.0", "<requirements>:2"),
                                    ("leaf==1.0", "mid 1.0 <- app 1.0 (<requirements>:1)")}


def test_missing_version_is_not_a_missing_wheel(net, tmp_path):
    with pytest.raises(ConflictError, match=r"typing-extensions: no release matches <4\.0 .*"
                                            r"the newest with a wheel for Pyodide 314.0.7 is 4.16.0"):
        run(["typing-extensions<4.0"], net=net, tmp_path=tmp_path)


def test_conflict_between_two_pins(net, tmp_path):
    with pytest.raises(ConflictError) as ei:
        run(["pydantic==2.14.2", "pydantic-core==2.50.4"], net=net, tmp_path=tmp_path,
            exclude_newer=None)
    assert "pydantic 2.14.2 (<requirements>:1) requires pydantic-core==2.50.2" in str(ei.value)
    assert ("pydantic-core==2.50.4", "<requirements>:2") in ei.value.causes


def test_user_hash_selects_and_refuses(net, tmp_path):
    blob = make_wheel("hashed", "1.0")
    net.add("hashed", "1.0", blob)
    good = hashlib.sha256(blob).hexdigest()
    assert run([f"hashed --hash=sha256:{good}"], net=net, tmp_path=tmp_path).get("hashed")
    with pytest.raises(ConflictError, match=f"hashed: no file matches the --hash values .*{good}"):
        run([f"hashed --hash=sha256:{'0' * 64}"], net=net, tmp_path=tmp_path)


def test_extras_pull_in_their_dependencies(net, tmp_path):
    net.add("withextra", "1.0", make_wheel("withextra", "1.0", requires=(
        "annotated-types; extra == 'typed'", "idna; extra == 'other'")))
    res = run(["withextra[typed]"], net=net, tmp_path=tmp_path)
    assert {w.name for w in res.wheels} == {"withextra", "annotated-types"}


def test_pep691_json_page_with_pep658_metadata(net, tmp_path):
    blob = make_wheel("jsonpkg", "2.0", requires=("idna",))
    fn = net.add("jsonpkg", "2.0", blob, fmt="json")
    page = json.loads(net.pages["jsonpkg"])
    meta = zipfile.ZipFile(io.BytesIO(blob)).read("jsonpkg-2.0.dist-info/METADATA")
    page["files"][0]["core-metadata"] = {"sha256": hashlib.sha256(meta).hexdigest()}
    net.pages["jsonpkg"] = json.dumps(page)
    res = run(["jsonpkg"], net=net, tmp_path=tmp_path)
    assert res.get("jsonpkg").dependencies == ("idna",)
    assert any(u.endswith(fn + ".metadata") for u in net.urls())
    assert not any(u.endswith(fn) for u in net.urls())  # the wheel itself was not fetched
    page["files"][0]["core-metadata"] = {"sha256": "0" * 64}
    net.pages["jsonpkg"] = json.dumps(page)
    with pytest.raises(Exception, match="PEP 658"):
        run(["jsonpkg"], net=net, tmp_path=tmp_path / "other")


def test_local_wheel_requirement(net, tmp_path):
    whl = tmp_path / "loc-1.0-py3-none-any.whl"
    whl.write_bytes(make_wheel("loc", "1.0", requires=("annotated-types",)))
    res = run([str(whl)], net=net, tmp_path=tmp_path)
    w = res.get("loc")
    assert w.source == "path" and w.sha256 == hashlib.sha256(whl.read_bytes()).hexdigest()
    assert res.get("annotated-types").source == "index"
    bad = tmp_path / "loc-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"
    bad.write_bytes(whl.read_bytes())
    with pytest.raises(NoCompatibleWheelError, match="does not run on Pyodide 314.0.7"):
        run([str(bad)], net=net, tmp_path=tmp_path)


# --------------------------------------------------------------------------- release lock

def test_lock_pins_preferred_when_base_url_answers(tmp_path):
    net = FakeNet(cdn="up")
    lock = json.loads(LOCK314.read_text())["packages"]
    for p in lock.values():
        net.blobs[p["file_name"]] = b"x"  # HEAD answers; content is never fetched here
    res = run(["fastapi", "jinja2", "python-multipart"], net=net, tmp_path=tmp_path,
              pyodide_lock=LOCK314, package_base_url=CDN)
    for name in ("fastapi", "jinja2", "markupsafe", "pydantic", "pydantic-core"):
        w = res.get(name)
        assert (w.source, w.version, w.sha256) == ("lock", lock[name]["version"],
                                                     lock[name]["sha256"])
        assert w.url == CDN + lock[name]["file_name"]
    assert res.get("python-multipart").source == "index"  # not in the release lock
    assert len([u for u in net.urls("HEAD")]) == 1  # probed once


def test_lock_base_unreachable_falls_back_to_index_and_says_so_once(net, tmp_path):
    notes: list[str] = []
    res = run(FASTAPI_SET, net=net, tmp_path=tmp_path, pyodide_lock=LOCK314,
              package_base_url=CDN, progress=notes.append)
    assert all(w.source == "index" for w in res.wheels)
    said = [n for n in notes if "package base URL is unreachable" in n]
    assert len(said) == 1 and CDN in said[0]
    assert res.get("pydantic-core").filename.endswith("pyemscripten_2026_0_wasm32.whl")


def test_unreachable_lock_is_named_in_the_error(net, tmp_path):
    with pytest.raises(NoCompatibleWheelError) as ei:
        run(["jinja2"], net=net, tmp_path=tmp_path, pyodide_lock=LOCK314, package_base_url=CDN)
    assert "the release lock pins markupsafe 3.0.3" in ei.value.detail


def test_lock_for_another_python_is_refused(net, tmp_path):
    from pyworkers.packages import LockFileError

    with pytest.raises(LockFileError, match="Python 3.13"):
        run(["fastapi"], net=net, tmp_path=tmp_path, pyodide_lock=LOCK029)


def test_lock_dependency_on_shared_library_is_not_used(tmp_path):
    net = FakeNet(cdn="up")
    for p in json.loads(LOCK314.read_text())["packages"].values():
        net.blobs[p["file_name"]] = b"x"
    with pytest.raises(NoCompatibleWheelError) as ei:
        run(["inspice"], net=net, tmp_path=tmp_path, pyodide_lock=LOCK314, package_base_url=CDN)
    assert "shared library libngspice" in ei.value.detail


# --------------------------------------------------------------------------- lock file

def test_pylock_roundtrip_and_shape(net, tmp_path):
    lock = tmp_path / "pylock.toml"
    res = run(FASTAPI_SET + ['foo; sys_platform == "win32"'], net=net, tmp_path=tmp_path,
              lock_path=lock)
    doc = tomllib.loads(lock.read_text())
    assert doc["lock-version"] == "1.0" and doc["created-by"] == "pyworkers"
    assert doc["requires-python"] == "==3.14.2"
    pkgs = {p["name"]: p for p in doc["packages"]}
    core = pkgs["pydantic-core"]
    assert core["wheels"][0]["hashes"]["sha256"] == res.get("pydantic-core").sha256
    assert core["tool"]["pyworkers"]["source"] == "index" and core["index"] == INDEX
    assert doc["tool"]["pyworkers"]["target"]["pyodide_version"] == "314.0.7"
    back = read_lock(lock)
    assert back.wheels == res.wheels and back.inputs == res.inputs
    assert back.runtime_selection() is None  # made for a bare release
    from pyworkers.compat import select

    sel = select("2026-11-15")
    res2 = run(["annotated-types"], sel, net=net, tmp_path=tmp_path, lock_path=lock)
    assert read_lock(lock).runtime_selection() == sel and res2.target == sel.to_json()
    assert back.exclude_newer == res.exclude_newer and back.skipped == res.skipped


def test_lock_reused_without_network_and_redone_when_inputs_change(tmp_path):
    net = FakeNet()
    lock = tmp_path / "pylock.toml"
    first = run(FASTAPI_SET, net=net, tmp_path=tmp_path, lock_path=lock)

    def refuse(request):
        raise AssertionError(f"network used: {request.url}")

    again = resolve(FASTAPI_SET, "314.0.7", index_url=INDEX, extra_index_urls=(),
                    cache_dir=tmp_path / "cache", lock_path=lock,
                    transport=httpx.MockTransport(refuse))
    assert again.reused and again.wheels == first.wheels
    with pytest.raises(AssertionError, match="network used"):
        resolve(FASTAPI_SET + ["idna"], "314.0.7", index_url=INDEX, extra_index_urls=(),
                cache_dir=tmp_path / "cache2", lock_path=lock,
                transport=httpx.MockTransport(refuse))


def test_bad_lock_files(tmp_path):
    from pyworkers.packages import LockFileError

    p = tmp_path / "pylock.toml"
    p.write_text('lock-version = "2.0"\ncreated-by = "x"\n')
    with pytest.raises(LockFileError, match="lock-version"):
        read_lock(p)
    p.write_text('lock-version = "1.0"\ncreated-by = "other"\n')
    with pytest.raises(LockFileError, match="tool.pyworkers"):
        read_lock(p)


# --------------------------------------------------------------------------- network errors

def test_retries_are_bounded_and_name_the_url(net, tmp_path):
    net.fail_status = 503
    with pytest.raises(NetworkError) as ei:
        run(["fastapi"], net=net, tmp_path=tmp_path)
    assert ei.value.url == INDEX + "/fastapi/"
    assert len(net.requests) == http_mod.RETRIES and "HTTP 503" in str(ei.value)


# --------------------------------------------------------------------------- download

def _one_wheel_resolution(net, tmp_path, blob=None, **kw):
    blob = blob or make_wheel("tinypkg", "1.0")
    net.add("tinypkg", "1.0", blob, **kw)
    return run(["tinypkg"], net=net, tmp_path=tmp_path), blob


def test_download_into_content_addressed_cache(net, tmp_path):
    res, blob = _one_wheel_resolution(net, tmp_path)
    [cw] = download(res, tmp_path / "cache", transport=net.transport)
    sha = hashlib.sha256(blob).hexdigest()
    assert cw.path == tmp_path / "cache" / "packages" / "wheels" / "sha256" / sha[:2] / f"{sha}.whl"
    assert cw.path.read_bytes() == blob
    n = len(net.requests)
    download(res, tmp_path / "cache", transport=net.transport)
    assert len(net.requests) == n  # cached: no request


def test_hash_mismatch_deletes_the_download(net, tmp_path):
    res, blob = _one_wheel_resolution(net, tmp_path, sha256="1" * 64)
    with pytest.raises(HashMismatchError) as ei:
        download(res, tmp_path / "cache", transport=net.transport)
    assert ei.value.expected == "1" * 64
    assert ei.value.actual == hashlib.sha256(blob).hexdigest()
    left = [p for p in (tmp_path / "cache" / "packages" / "wheels").rglob("*")
            if p.is_file() and not p.name.endswith(".lock")]
    assert left == []


def test_corrupt_cache_entry_is_replaced(net, tmp_path):
    res, blob = _one_wheel_resolution(net, tmp_path)
    [cw] = download(res, tmp_path / "cache", transport=net.transport)
    cw.path.write_bytes(b"garbage")
    [cw2] = download(res, tmp_path / "cache", transport=net.transport)
    assert cw2.path.read_bytes() == blob


def test_concurrent_downloads_share_one_entry(net, tmp_path):
    res, blob = _one_wheel_resolution(net, tmp_path)
    out, errs = [], []

    def go():
        try:
            out.append(download(res, tmp_path / "cache", transport=net.transport)[0].path)
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=go) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs and len(set(out)) == 1 and out[0].read_bytes() == blob


def test_lock_download_failure_falls_back_to_index(tmp_path):
    net = FakeNet(cdn="head-only")
    blob = make_wheel("tinypkg", "1.0")
    fn = net.add("tinypkg", "1.0", blob)
    lockfile = tmp_path / "pyodide-lock.json"
    lockfile.write_text(json.dumps({
        "info": {"arch": "wasm32", "platform": "emscripten_5_0_3", "python": "3.14.2",
                 "abi_version": "2026_0"},
        "packages": {"tinypkg": {"name": "tinypkg", "version": "1.0", "file_name": fn,
                                 "install_dir": "site", "sha256": "2" * 64,
                                 "package_type": "package", "imports": ["tinypkg"],
                                 "depends": []}}}))
    res = run(["tinypkg"], net=net, tmp_path=tmp_path, pyodide_lock=lockfile,
              package_base_url=CDN)
    assert res.get("tinypkg").source == "lock"
    notes: list[str] = []
    [cw] = download(res, tmp_path / "cache", transport=net.transport, progress=notes.append)
    assert cw.wheel.source == "index" and cw.wheel.sha256 == hashlib.sha256(blob).hexdigest()
    assert len([n for n in notes if "package base URL failed" in n]) == 1


# --------------------------------------------------------------------------- install

def test_install_layer_honours_data_dirs_record_and_installer(net, tmp_path):
    blob = make_wheel("tinypkg", "1.0", data={
        "purelib/tiny_extra.py": b"Y = 2\n", "platlib/tiny_plat.py": b"Z = 3\n",
        "scripts/tiny-tool": b"#!python\nprint('hi')\n", "data/share/tiny.txt": b"data\n",
        "headers/tiny.h": b"int x;\n"})
    res, _ = _one_wheel_resolution(net, tmp_path, blob=blob)
    layer = install_layer(res, tmp_path / "site-packages", cache_dir=tmp_path / "cache",
                          transport=net.transport)
    sp = layer.path
    assert (sp / "tinypkg" / "__init__.py").read_text() == "X = 1\n"
    assert (sp / "tiny_extra.py").is_file() and (sp / "tiny_plat.py").is_file()
    assert (sp / ".pyworkers-data" / "scripts" / "tiny-tool").stat().st_mode & 0o111
    assert (sp / ".pyworkers-data" / "data" / "share" / "tiny.txt").read_text() == "data\n"
    assert (sp / ".pyworkers-data" / "headers" / "tinypkg" / "tiny.h").is_file()
    assert not any(p.name.endswith(".data") for p in sp.iterdir())
    di = sp / "tinypkg-1.0.dist-info"
    assert (di / "INSTALLER").read_text() == "pyworkers\n"
    rows = {r[0]: r for r in csv.reader(io.StringIO((di / "RECORD").read_text()))}
    assert "tiny_extra.py" in rows and ".pyworkers-data/scripts/tiny-tool" in rows
    assert "tinypkg-1.0.dist-info/INSTALLER" in rows
    for path, h, size in rows.values():  # RECORD describes the installed files exactly
        if h:
            data = (sp / path).read_bytes()
            assert h == "sha256=" + base64.urlsafe_b64encode(
                hashlib.sha256(data).digest()).rstrip(b"=").decode() and int(size) == len(data)
    manifest = json.loads((sp / ".pyworkers-layer.json").read_text())
    assert manifest["wheels"][0]["name"] == "tinypkg"
    # the layer imports as a normal site-packages directory
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                          " import tinypkg, tiny_extra; print(tinypkg.X + tiny_extra.Y)", str(sp)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
    # reinstalling replaces the layer atomically
    layer2 = install_layer(res, sp, cache_dir=tmp_path / "cache", transport=net.transport)
    assert layer2.path == sp and not list(sp.parent.glob(".site-packages.*"))


def test_install_refuses_tampered_wheel_and_leaves_nothing(tmp_path):
    from pyworkers.packages.fetch import CachedWheel
    from pyworkers.packages.resolver import PinnedWheel

    p = tmp_path / "bad-1.0-py3-none-any.whl"
    p.write_bytes(make_wheel("bad", "1.0", tamper="bad/__init__.py"))
    pin = PinnedWheel("bad", "1.0", "path", p.name, p.as_uri(), "0" * 64)
    with pytest.raises(LayerError, match="RECORD hash"):
        install_layer([CachedWheel(pin, p)], tmp_path / "sp")
    assert not (tmp_path / "sp").exists() and list(tmp_path.glob(".sp.tmp-*")) == []


def test_install_refuses_unsafe_paths_conflicts_and_foreign_dirs(tmp_path):
    from pyworkers.packages.fetch import CachedWheel
    from pyworkers.packages.resolver import PinnedWheel

    def cw(name, **kw):
        p = tmp_path / f"{name}-1.0-py3-none-any.whl"
        p.write_bytes(make_wheel(name, "1.0", **kw))
        return CachedWheel(PinnedWheel(name, "1.0", "path", p.name, p.as_uri(), "0" * 64), p)

    with pytest.raises(LayerError, match="unsafe path"):
        install_layer([cw("evil", files={"../escape.py": b""})], tmp_path / "sp1")
    with pytest.raises(LayerError, match="both install shared.py"):
        install_layer([cw("one", files={"shared.py": b"1"}), cw("two", files={"shared.py": b"2"})],
                      tmp_path / "sp2")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(LayerError, match="not a pyworkers layer"):
        install_layer([cw("ok")], foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- CLI

def test_cli_resolve_json(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pyworkers.cli import main
    from pyworkers.packages import fetch as download_mod
    from pyworkers.packages import resolver as resolver_mod

    net = FakeNet()
    real_http = http_mod.Http
    monkeypatch.setattr(resolver_mod, "Http", lambda **kw: real_http(
        **{**kw, "transport": net.transport}))
    monkeypatch.setattr(download_mod, "Http", lambda **kw: real_http(
        **{**kw, "transport": net.transport}))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    blob = make_wheel("tinypkg", "1.0", requires=("tinydep",))
    net.add("tinypkg", "1.0", blob)
    net.add("tinydep", "0.1", make_wheel("tinydep", "0.1"))
    req = tmp_path / "requirements.txt"
    req.write_text('tinypkg\nfoo; sys_platform == "win32"\n')
    r = CliRunner().invoke(main, [
        "resolve", "-r", str(req), "--compatibility-date", "2026-11-15", "--index-url", INDEX,
        "--pyodide-lock", str(LOCK314), "--package-base-url", CDN, "--cache-dir",
        str(tmp_path / "cache"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [(x["name"], x["source"]) for x in out] == [("tinydep", "index"),
                                                       ("tinypkg", "index")]
    assert set(out[0]) == {"name", "version", "source", "wheel", "sha256", "url"}
    assert out[1]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert (tmp_path / "pylock.toml").is_file()
    assert "skipped foo" in r.stderr
    r = CliRunner().invoke(main, ["resolve", "-r", str(req), "--compatibility-date",
                                  "2026-11-15", "--index-url", INDEX, "--no-release-lock",
                                  "--exclude-newer", "2001-01-01", "--cache-dir",
                                  str(tmp_path / "c2"), "--lock", str(tmp_path / "l2.toml")])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: tinypkg: no wheel for Pyodide "
                                                        "314.0.7")


def _wasm_side_module(needed: list[str]) -> bytes:
    """A minimal wasm side module whose ``dylink.0`` section lists ``needed`` libraries."""
    def leb(n: int) -> bytes:
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | 0x80 if n else b)
            if not n:
                return bytes(out)

    def vec(b: bytes) -> bytes:
        return leb(len(b)) + b

    mem_info = b"\x01" + vec(bytes(4))
    needs = b"\x02" + vec(leb(len(needed)) + b"".join(vec(n.encode()) for n in needed))
    return b"\0asm\1\0\0\0" + b"\x00" + vec(vec(b"dylink.0") + mem_info + needs)


def test_install_reports_shared_libraries_missing_from_the_layer(tmp_path):
    from pyworkers.packages.fetch import CachedWheel
    from pyworkers.packages.resolver import PinnedWheel

    p = tmp_path / "nat-1.0-cp314-cp314-pyemscripten_2026_0_wasm32.whl"
    p.write_bytes(make_wheel("nat", "1.0", tag="cp314-cp314-pyemscripten_2026_0_wasm32", files={
        "nat/_ext.so": _wasm_side_module(["libvendored.so", "libabsent.so"]),
        "nat.libs/libvendored.so": _wasm_side_module([])}))
    notes: list[str] = []
    layer = install_layer([CachedWheel(PinnedWheel("nat", "1.0", "path", p.name, p.as_uri(),
                                                   "0" * 64), p)], tmp_path / "sp",
                          progress=notes.append)
    assert layer.unresolved_libraries == {"nat/_ext.so": ["libabsent.so"]}
    assert any("libabsent.so" in n for n in notes)
