"""Re-record the offline test data in this directory from the configured package index.

    /work/venv/bin/python tests/data/packages/record.py

Runs a few resolutions against the real index (the URL comes from the user's pip
configuration, as in pyworkers itself), notes which project pages and which wheels' metadata
they used, and writes:

* ``index/<project>.html``: the PEP 503 page trimmed to the versions used (plus, per version,
  at most one wheel for another platform and the sdist), with file URLs made relative
  (``../../packages/...``) so no host name is stored;
* ``metadata/<wheel filename>.METADATA``: the wheel's core metadata headers (description
  dropped);
* ``pyodide-lock-314.json`` / ``pyodide-lock-0.29.3.json``: the release locks trimmed to the
  packages the tests name.

The tests serve these through ``httpx.MockTransport`` under a fake index host.
"""
from __future__ import annotations

import json
import re
import sys
import tempfile
import urllib.parse
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from pyworkers.packages import index as index_mod
from pyworkers.packages import resolve

HERE = Path(__file__).parent
LOCKS = {"314": "/tmp/pyo/x/pyodide-314.0.7/package/pyodide-lock.json",
         "0.29.3": "/tmp/pyo/x/pyodide-0.29.3/package/pyodide-lock.json"}
LOCK_KEEP = ["fastapi", "pydantic", "pydantic-core", "typing-extensions", "annotated-types",
             "typing-inspection", "starlette", "anyio", "idna", "sniffio", "httpx", "httpcore",
             "h11", "certifi", "jinja2", "markupsafe", "annotated-doc", "inspice", "libngspice",
             "micropip"]
KEEP_HEADERS = (b"Metadata-Version:", b"Name:", b"Version:", b"Requires-Python:",
                b"Requires-Dist:", b"Provides-Extra:")
#: Versions kept although no metadata of theirs was read (ranges the tests ask about).
KEEP_VERSIONS = {"pydantic-core": {"0.0.1", "2.33.2", "2.41.5"}, "markupsafe": {"3.0.3"}}
SCENARIOS = [
    ("314.0.7", ["fastapi", "pydantic", "httpx", "python-multipart"], "default"),
    ("314.0.7", ["fastapi", "pydantic", "httpx", "python-multipart"], None),
    ("0.29.3", ["pydantic"], "default"),
    ("314.0.7", ["jinja2"], "default"),
    ("314.0.7", ["fastapi==0.162.0", "starlette<0.40"], "default"),
]

pages: dict[str, list] = {}
used: set[str] = set()
orig_files = index_mod.PackageIndex.files
orig_meta = index_mod.PackageIndex.metadata


def files(self, project):
    out = orig_files(self, project)
    pages[canonicalize_name(project)] = out
    return out


def metadata(self, project, f):
    used.add(f.filename)
    data = orig_meta(self, project, f)
    head = data.split(b"\n\n", 1)[0]
    head = b"\n".join(l for l in head.split(b"\n") if l.startswith(KEEP_HEADERS))
    (HERE / "metadata").mkdir(exist_ok=True)
    (HERE / "metadata" / f"{f.filename}.METADATA").write_bytes(head + b"\n")
    return data


def version_of(fn):
    try:
        return parse_wheel_filename(fn)[1] if fn.endswith(".whl") else parse_sdist_filename(fn)[1]
    except Exception:
        return None


def main() -> None:
    index_mod.PackageIndex.files = files
    index_mod.PackageIndex.metadata = metadata
    with tempfile.TemporaryDirectory() as cache:
        for rel, reqs, ex in SCENARIOS:
            try:
                resolve(reqs, rel, extra_index_urls=(), exclude_newer=ex, cache_dir=cache,
                        page_ttl=0)
            except Exception as e:  # noqa: BLE001 - failures are part of the data
                print(f"{rel} {reqs}: {type(e).__name__}: {e}", file=sys.stderr)
    (HERE / "index").mkdir(exist_ok=True)
    for project, fs in sorted(pages.items()):
        used_versions = {version_of(f.filename) for f in fs if f.filename in used}
        used_versions |= {v for v in (version_of(f.filename) for f in fs)
                          if v is not None and str(v) in KEEP_VERSIONS.get(project, ())}
        keep = []
        for v in sorted(used_versions | {max((version_of(f.filename) for f in fs
                                              if version_of(f.filename)), default=None)} - {None}):
            of_v = [f for f in fs if version_of(f.filename) == v]
            chosen = [f for f in of_v if f.filename in used
                      or re.search(r"(py3-none-any|emscripten|pyodide)", f.filename)]
            chosen += [f for f in of_v if not f.filename.endswith(".whl")][:1]
            other = [f for f in of_v if "manylinux" in f.filename and f not in chosen]
            chosen += other[:1]
            keep += chosen
        lines = ["<!DOCTYPE html>", "<html><head><title>Links for %s</title></head><body>" % project]
        for f in keep:
            path = urllib.parse.urlsplit(f.url).path.lstrip("/")
            href = "../../" + path + (f"#sha256={f.sha256}" if f.sha256 else "")
            attrs = [f'href="{href}"']
            if f.requires_python:
                rp = f.requires_python.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                attrs.append(f'data-requires-python="{rp}"')
            if f.upload_time:
                attrs.append(f'data-upload-time="{f.upload_time.isoformat().replace("+00:00", "Z")}"')
            if f.yanked is not False:
                attrs.append(f'data-yanked="{f.yanked}"')
            lines.append(f"<a {' '.join(attrs)}>{f.filename}</a><br/>")
        lines.append("</body></html>")
        (HERE / "index" / f"{project}.html").write_text("\n".join(lines) + "\n")
    for name, path in LOCKS.items():
        d = json.loads(Path(path).read_text())
        d["packages"] = {k: v for k, v in d["packages"].items() if k in LOCK_KEEP}
        (HERE / f"pyodide-lock-{name}.json").write_text(json.dumps(d, indent=1) + "\n")


if __name__ == "__main__":
    main()
