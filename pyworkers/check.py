"""``pyworkers check``: will this app run in the sandbox? A report, without deploying.

Two parts:

* **packages**: the app's requirements (:mod:`pyworkers.packages.inputs`) resolved for the
  runtime its configuration selects, with sdist builds allowed and missing wheels reported
  instead of raised (``resolve(..., missing_ok=True)``). Each package is one row of kind
  ``wasm wheel`` (a wheel for the runtime's platform), ``pure wheel`` (``none-any``),
  ``built from sdist`` (a pure-Python wheel pyworkers builds with the C extension off),
  ``left out`` (server-only, no wheel) or ``unavailable`` (with why, and the newest version
  that has a usable wheel, if any).
* **stdlib**: an AST scan of the app's ``.py`` files for imports of standard-library modules the
  sandbox lacks (not built into Pyodide), ships separately (the release lock's
  ``cpython_module`` entries, e.g. ``ssl`` on 0.29.3) or limits (threads, subprocesses,
  sockets, ``ctypes``): :data:`SANDBOX_LIMITS`.

:func:`check_app` returns a JSON-able dict (the shape of ``pyworkers check --json``)::

    {"app": str, "runtime": {"pyodide_version", "python_version", "platform_tag"},
     "inputs": str | null, "ok": bool,
     "packages": [{"name", "version", "kind", "wheel", "required_by": [str], "why",
                   "newest_compatible"}],
     "stdlib": [{"module", "file", "line", "status": "absent" | "separate" | "limited", "why"}],
     "notes": [str]}

``ok`` is false when a package is unavailable or a module is absent/separate.
"""
from __future__ import annotations

import ast
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename

#: Standard-library modules the sandbox does not have (Pyodide does not build them).
ABSENT = {
    "tkinter": "no GUI toolkit in the sandbox", "turtle": "no GUI toolkit in the sandbox",
    "idlelib": "not built into Pyodide", "ensurepip": "not built into Pyodide",
    "venv": "not built into Pyodide", "curses": "no terminal in the sandbox",
    "readline": "no terminal in the sandbox", "dbm.gnu": "not built into Pyodide",
    "dbm.ndbm": "not built into Pyodide", "msvcrt": "Windows only", "winreg": "Windows only",
    "winsound": "Windows only", "_winapi": "Windows only",
}
#: Standard-library modules that import but are limited in the sandbox.
SANDBOX_LIMITS = {
    "threading": "no threads: Thread.start() raises RuntimeError (\"can't start new thread\")",
    "_thread": "no threads: start_new_thread raises RuntimeError",
    "concurrent.futures": "no threads or processes: executors cannot start workers "
                          "(run_in_executor(None, ...) runs inline)",
    "multiprocessing": "no processes: Process.start() and pools fail",
    "subprocess": "no processes: Popen/run fail (OSError)",
    "asyncio.subprocess": "no processes: create_subprocess_* fail",
    "socket": "no network: connect fails (ENOSYS) and getaddrinfo finds nothing",
    "ssl": "Pyodide's stub: no TLS in the sandbox",
    "urllib.request": "no network: urlopen fails",
    "http.client": "no network: connections fail",
    "smtplib": "no network", "ftplib": "no network", "imaplib": "no network",
    "poplib": "no network", "xmlrpc.client": "no network",
    "ctypes": "C calls only reach the runtime's own libc and exports (no host libraries); "
              "callbacks depend on the runtime's libffi support",
    "signal": "signals are not delivered (no alarm/setitimer)",
    "pty": "no terminal or processes", "resource": "limits are not enforced",
    "webbrowser": "no browser", "os.fork": "no processes",
}

_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "venv", ".venv", "env", "build",
              "dist", ".git", ".tox", ".mypy_cache", ".pytest_cache"}


def _py_files(app_dir: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(app_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        out += [Path(root) / f for f in sorted(files) if f.endswith(".py")]
    return out


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    """Absolute module names imported (``import a.b``, ``from a.b import c`` -> ``a.b`` and
    ``a.b.c``), with line numbers; relative imports are the app's own."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.module, node.lineno))
            out += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return out


def _match(module: str, table: dict) -> str | None:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in table:
            return key
    return None


def scan_stdlib(app_dir: str | os.PathLike, separate: dict[str, str] | None = None) -> list[dict]:
    """Imports in the app's ``.py`` files of standard-library modules the sandbox lacks
    (``"absent"``), the release ships separately (``"separate"``; ``separate`` maps module ->
    why) or limits (``"limited"``). One entry per module and file (first line). Files that do
    not parse are skipped (the deploy reports them)."""
    app = Path(app_dir)
    separate = separate or {}
    out, seen = [], set()
    for f in _py_files(app):
        try:
            tree = ast.parse(f.read_bytes(), str(f))
        except (SyntaxError, ValueError, OSError):
            continue
        for mod, line in _imports(tree):
            for status, table in (("separate", separate), ("absent", ABSENT),
                                  ("limited", SANDBOX_LIMITS)):
                key = _match(mod, table)
                if key is None:
                    continue
                rel = str(f.relative_to(app))
                if (key, rel) not in seen:
                    seen.add((key, rel))
                    out.append({"module": key, "file": rel, "line": line, "status": status,
                                "why": table[key]})
                break
    return out


def _kind(w: Any) -> str:
    if w.source == "sdist":
        return "built from sdist"
    try:
        tags = parse_wheel_filename(w.filename)[3]
    except Exception:  # noqa: BLE001 - an odd name: call it a wheel
        return "wheel"
    return "pure wheel" if all(t.platform == "any" for t in tags) else "wasm wheel"


def check_app(app_dir: str | os.PathLike, *, selection: Any, release_lock: Any = None,
              index_url: str | None = None, extra_index_urls: list[str] | None = None,
              cache_dir: str | None = None, build: bool = True, groups: tuple[str, ...] = (),
              progress: Any = None, package_base_url: Any = None) -> dict:
    """The report described in the module docstring.

    Args: ``selection`` (``RuntimeSelection``), ``release_lock`` (the release's
    ``pyodide-lock.json`` path or ``None``), index options as for
    :func:`pyworkers.packages.resolve`, ``build`` (allow sdist builds), ``groups`` (the config's
    ``dependency_groups``), ``progress``.

    Raises :class:`pyworkers.packages.PackagesError` for unreadable inputs and conflicts.
    """
    from pyworkers.packages import (DEFAULT, IMPLICIT_REQUIREMENTS, SdistBuildError, read_lock,
                                    resolve)
    from pyworkers.packages.inputs import app_inputs
    from pyworkers.packages.release_lock import read_release_lock

    app = Path(app_dir)
    r = selection.release
    lock = read_release_lock(release_lock) if release_lock is not None else None
    inputs = app_inputs(app, groups)
    report: dict[str, Any] = {
        "app": str(app), "inputs": inputs.shown if inputs.kind else None,
        "runtime": {"pyodide_version": r.pyodide_version, "python_version": r.python_version,
                    "platform_tag": r.platform_tag},
        "packages": [], "stdlib": [], "notes": []}
    res = None
    if inputs.kind == "pylock":
        res = read_lock(inputs.path)
    elif inputs.kind is not None:
        last: Exception | None = None
        for _ in range(8):  # a failed build is remembered; the next round reports it
            try:
                res = resolve(inputs.requirements, selection, pyodide_lock=lock,
                              package_base_url=DEFAULT if package_base_url is None
                              else package_base_url, index_url=index_url,
                              extra_index_urls=extra_index_urls, cache_dir=cache_dir,
                              build=build, implicit=IMPLICIT_REQUIREMENTS, missing_ok=True,
                              progress=progress)
                break
            except SdistBuildError as e:
                last = e
        if res is None and last is not None:
            raise last
    if res is not None:
        users: dict[str, list[str]] = {}
        for w in res.wheels:
            for d in w.dependencies:
                users.setdefault(d, []).append(w.name)
        for w in res.wheels:
            report["packages"].append({
                "name": w.name, "version": w.version, "kind": _kind(w), "wheel": w.filename,
                "required_by": sorted(users.get(w.name, [])), "why": None,
                "newest_compatible": w.version})
        for lo in res.left_out:
            name = lo.split(" ", 1)[0]
            report["packages"].append({
                "name": name, "version": None, "kind": "left out", "wheel": None,
                "required_by": [], "why": lo, "newest_compatible": None})
        for e in res.unavailable:
            report["packages"].append({
                "name": e.project, "version": None, "kind": "unavailable", "wheel": None,
                "required_by": [e.required_by] if e.required_by else [], "why": e.message,
                "newest_compatible": e.newest_compatible})
        report["notes"] = list(res.notes)
    separate = {}
    if lock is not None:
        from pyworkers.packages.release_lock import unvendored_hint

        for mod in lock.stdlib_modules():
            separate[mod] = unvendored_hint(mod, lock, r.pyodide_version) or ""
    report["stdlib"] = scan_stdlib(app, separate)
    report["ok"] = (not any(p["kind"] == "unavailable" for p in report["packages"])
                    and not any(s["status"] in ("absent", "separate") for s in report["stdlib"]))
    return report


def format_report(report: dict, echo: Callable[[str], None]) -> None:
    """Print the report as two tables (packages, stdlib imports)."""
    rt = report["runtime"]
    echo(f"# {report['app']}: Pyodide {rt['pyodide_version']} (Python {rt['python_version']}, "
         f"{rt['platform_tag']}); requirements from {report['inputs'] or 'nowhere (none)'}")
    rows = [["PACKAGE", "VERSION", "KIND", "NOTE"]]
    for p in report["packages"]:
        note = p["why"] or (f"required by {', '.join(p['required_by'])}" if p["required_by"]
                            else "")
        if p["kind"] == "unavailable" and p["newest_compatible"]:
            note += f" (newest that works: {p['newest_compatible']})"
        rows.append([p["name"], p["version"] or "-", p["kind"], note])
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            echo("  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths)), r[3]]).rstrip())
    else:
        echo("no packages")
    echo("")
    if report["stdlib"]:
        rows = [["MODULE", "WHERE", "STATUS", "WHY"]] + [
            [s["module"], f"{s['file']}:{s['line']}", s["status"], s["why"]]
            for s in report["stdlib"]]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            echo("  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths)), r[3]]).rstrip())
    else:
        echo("no imports of standard-library modules the sandbox lacks or limits")
    echo("")
    echo("ok: the app's packages and imports fit the sandbox" if report["ok"] else
         "problems found: see the unavailable packages / absent modules above")
