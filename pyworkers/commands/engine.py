"""CLI commands for the engine: ``pyworkers python`` and ``pyworkers runtimes install``."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from pyworkers.cli import UserError, main, runtimes


def progress_printer(prefix: str = ""):
    """A progress callback printing ``prefix: message (+elapsed)`` lines to stderr."""
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        click.echo(f"{prefix}{msg} (+{time.perf_counter() - t0:.1f} s)", err=True)

    return say


def _release_arg(version: str | None):
    from pyworkers.compat.releases import UnknownReleaseError, default_release, get_release

    if version is None:
        return default_release()
    try:
        return get_release(version)
    except UnknownReleaseError as e:
        raise UserError(str(e))


@runtimes.command("install")
@click.argument("versions", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Install every release in the table.")
@click.option("--verify", is_flag=True, help="Re-hash every cached file and rebuild what does not match.")
@click.option("--cache-dir", type=click.Path(file_okay=False), envvar="PYWORKERS_CACHE_DIR",
              help="Cache root (default: per-user cache dir; env PYWORKERS_CACHE_DIR).")
def install_cmd(versions: tuple[str, ...], all_: bool, verify: bool, cache_dir: str | None) -> None:
    """Fetch, verify, translate and compile runtime release(s), e.g. `314.0.7`.

    Without VERSIONS, installs the default (newest non-experimental) release. Each step is
    cached and skipped when already done; safe to run concurrently.
    """
    from pyworkers.compat.releases import releases
    from pyworkers.runtime.install import RuntimeInstallError, ensure_release

    targets = ([r for r in releases()] if all_ else [_release_arg(v) for v in versions] or [_release_arg(None)])
    seen = set()
    for rel in targets:
        if rel.pyodide_version in seen:
            continue
        seen.add(rel.pyodide_version)
        t0 = time.perf_counter()
        try:
            inst = ensure_release(rel, cache_dir=cache_dir, verify=verify,
                                  progress=progress_printer(f"{rel.pyodide_version}: "))
        except RuntimeInstallError as e:
            raise UserError(str(e))
        click.echo(f"{rel.pyodide_version} (Python {rel.python_version}) installed at {inst.root} "
                   f"in {time.perf_counter() - t0:.1f} s")


@main.command("python", context_settings={"ignore_unknown_options": True})
@click.option("--runtime", "runtime_version", metavar="VERSION",
              help="Pyodide version of the runtime release (default: newest non-experimental).")
@click.option("-c", "code", metavar="CODE", help="Program passed in as a string.")
@click.option("--site-packages", type=click.Path(exists=True, file_okay=False),
              help="Directory mounted read-only as the guest's site-packages.")
@click.option("--tmp-cap", type=int, default=64, show_default=True, help="Writable /tmp size cap in MiB.")
@click.option("--memory-limit", type=int, default=None, help="Linear memory cap in MiB.")
@click.option("--cache-dir", type=click.Path(file_okay=False), envvar="PYWORKERS_CACHE_DIR",
              help="Cache root (env PYWORKERS_CACHE_DIR).")
@click.option("--outbound-allow", "outbound_allow", multiple=True, metavar="HOST[:PORT]",
              help="Egress allow rule (repeatable; see README 'Outbound network'). Default: "
                   "public addresses only.")
@click.option("--outbound-deny", "outbound_deny", multiple=True, metavar="HOST[:PORT]",
              help="Egress deny rule (repeatable; wins over allow).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def python_cmd(runtime_version, code, site_packages, tmp_cap, memory_limit, cache_dir,
               outbound_allow, outbound_deny, args) -> None:
    """Run Python code in a fresh sandboxed isolate, like `python -c CODE` or `python FILE`.

    A FILE's directory is mounted read-only at /app (the working directory). The guest's
    stdout/stderr stream to yours; the exit status is the guest's (1 on an uncaught exception,
    70 if the isolate crashed).
    """
    from pyworkers.runtime import GuestError, GuestExited, Isolate, IsolateCrashed
    from pyworkers.runtime.egress import EgressError, Policy
    from pyworkers.runtime.install import RuntimeInstallError

    try:
        egress = Policy.build(outbound_allow, outbound_deny)
    except EgressError as e:
        raise UserError(f"--outbound-allow/--outbound-deny: {e}")

    if code is None and not args:
        raise UserError("give -c CODE or a FILE to run (interactive mode is not supported)")
    mounts = {}
    cwd = None
    if code is None:
        path = Path(args[0])
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        mounts["/app"] = str(path.resolve().parent)
        cwd = "/app"
        guest_file = f"/app/{path.name}"
        argv = [guest_file, *args[1:]]
        source = path.read_text()
        filename = guest_file
    else:
        argv = ["-c", *args]
        source = code
        filename = "<string>"

    def out(b: bytes) -> None:
        sys.stdout.buffer.write(b)
        sys.stdout.buffer.flush()

    def err(b: bytes) -> None:
        sys.stderr.buffer.write(b)
        sys.stderr.buffer.flush()

    from pyworkers.runtime import Runtime

    rel = _release_arg(runtime_version)
    try:
        rt = Runtime.get(rel, cache_dir=cache_dir, progress=progress_printer(f"installing {rel.pyodide_version}: "))
        iso = Isolate(rt, site_packages=site_packages, mounts=mounts, stdout=out, stderr=err,
                      tmp_cap=tmp_cap << 20, memory_limit=(memory_limit << 20) if memory_limit else None,
                      cwd=cwd, cache_dir=cache_dir, egress=egress)
    except RuntimeInstallError as e:
        raise UserError(str(e))
    try:
        iso.run(f"import sys\nsys.argv = {argv!r}\n" + ("sys.path.insert(0, '/app')\n" if cwd else ""))
        result = iso.run(source, filename=filename)
        sys.exit(result.exit_code)
    except GuestError as e:
        err((e.traceback.rstrip() + "\n").encode())
        sys.exit(1)
    except GuestExited as e:
        sys.exit(e.code)
    except IsolateCrashed as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(70)
