"""CLI commands for :mod:`pyworkers.deploy` and :mod:`pyworkers.store`.

* ``pyworkers deploy APP_DIR [--name N] [--main M] [--compatibility-date D] [--flag F]...
  [--var K=V]... [--store DIR] [--cache-dir DIR] [--index-url URL] [--extra-index-url URL]...
  [--push oci://HOST/REPO[:TAG] [--username U --password-stdin] [--ca-file PEM]] [--json] [-q]``:
  deploy; progress per stage on stderr; ``--json`` prints the deployment record (plus
  ``"store"``, the store's absolute path, and with ``--push`` ``"push"``: what
  ``pyworkers push --json`` prints) on stdout.
* ``pyworkers deployments list [--name N] [--json]``: every deployment, oldest first, ``*``
  marking each worker's current one. ``--json``: ``{"store", "deployments": [{"id", "name",
  "created", "current": bool, "release", "packages", "snapshot_bytes", "total_ms"}]}``.
* ``pyworkers deployments show [REF] [--json]``: one deployment (REF: an id, a unique id
  prefix or a worker name for its current deployment; default the only worker's current one):
  selection, lock, layer, snapshot sizes, smoke test, stage timings. ``--json``: the record
  plus ``"store"`` and ``"current": bool``.
* ``pyworkers deployments rollback [ID] [--name N] [--no-verify] [--json]``: make an earlier
  deployment current (default: the one created before the current one); the target's files
  are verified first and a corrupt one is refused.
* ``pyworkers deployments verify [ID|NAME] [--json]``: check deployments' files and checksums
  (snapshot, layer, app, lock; default: every deployment); exit status 1 if any fails.
  ``--json``: ``{"store", "deployments": [{"id", "name", "ok", "problems": [{"part", "path",
  "message"}]}]}``.

The store is ``--store``, else ``$PYWORKERS_STORE``, else the user data directory
(``pyworkers/deployments``). Errors go to stderr (``error: ...``, exit status 1), with the app's
traceback or the resolver's explanation above the line.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from pyworkers.cli import UserError, deployments, main
from pyworkers.commands.registry_options import push_to, registry_options
from pyworkers.commands.store_options import open_store, pick_deployment, store_option


def _parse_vars(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key:
            raise UserError(f"--var {v!r}: write it as KEY=VALUE, e.g. --var GREETING=hello")
        out[key] = val
    return out


def _with_store(record: dict, store, **extra) -> dict:
    return {**record, **extra, "store": str(store.root)}


@main.command("deploy", short_help="Deploy an app directory (snapshotted, immutable).")
@click.argument("app_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", help="Worker name (default: the config's, else the directory name).")
@click.option("--main", "main_", metavar="MODULE:ATTR",
              help='The ASGI app, as uvicorn takes it (default: the config\'s, else "main:app").')
@click.option("--compatibility-date", "date", metavar="YYYY-MM-DD",
              help="Compatibility date selecting the runtime (default: the config's).")
@click.option("--flag", "flags", multiple=True, metavar="FLAG",
              help="Compatibility flag (repeatable; replaces the config's compatibility_flags).")
@click.option("--var", "vars_", multiple=True, metavar="KEY=VALUE",
              help="Environment variable for the app (repeatable; merged over the config's "
                   "[vars]).")
@store_option
@click.option("--cache-dir", metavar="DIR", help="Cache root for runtimes and wheels (default: "
              "PYWORKERS_CACHE_DIR or the user cache directory).")
@click.option("--index-url", metavar="URL", help="Package index (default: pip's configuration).")
@click.option("--extra-index-url", "extra_index_urls", multiple=True, metavar="URL",
              help="Additional package index (repeatable).")
@click.option("--push", "push_ref", metavar="oci://HOST/REPO[:TAG]",
              help="Then push the deployment to this registry repository and point TAG "
                   "(default: the worker name) at it.")
@registry_options
@click.option("--no-build", is_flag=True, help="Never build pure-Python wheels from sdists.")
@click.option("--json", "as_json", is_flag=True, help="Print the deployment record as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output (errors still print).")
def deploy_cmd(app_dir: Path, name: str | None, main_: str | None, date: str | None,
               flags: tuple[str, ...], vars_: tuple[str, ...], store_dir: Path | None,
               cache_dir: str | None, index_url: str | None,
               extra_index_urls: tuple[str, ...], no_build: bool, push_ref: str | None,
               username: str | None, password_stdin: bool, ca_file: Path | None, as_json: bool,
               quiet: bool) -> None:
    """Deploy the app in APP_DIR: resolve and install its requirements, import it in a fresh
    sandbox, check it is an ASGI app, snapshot it, smoke-test the restored snapshot and publish
    an immutable deployment that becomes the worker's current one. With --push, then push it
    to a registry (pyworkers push)."""
    from pyworkers.deploy import DeployError, DeployProgress, RichDeployProgress, deploy

    store = open_store(store_dir)
    vars_d = _parse_vars(vars_)
    if push_ref:
        from pyworkers.commands.registry_options import parse_ref

        parse_ref(push_ref)  # a bad reference fails before the deploy, not after
    progress = DeployProgress() if quiet else RichDeployProgress()
    with progress if not quiet else _Null():
        try:
            dep = deploy(app_dir, store=store, name=name, main=main_, compatibility_date=date,
                         flags=list(flags) or None, vars=vars_d or None, cache_dir=cache_dir,
                         index_url=index_url, extra_index_urls=list(extra_index_urls) or None,
                         progress=progress, build=not no_build)
        except DeployError as e:
            if e.detail:
                click.echo(e.detail.rstrip(), err=True)
            raise UserError(f"deploy failed ({e.stage}): {e.message}") from None
    pushed = None
    if push_ref:
        pushed = push_to(dep, push_ref, username, password_stdin, ca_file, quiet or as_json)
    if as_json:
        extra = {"push": pushed} if pushed else {}
        click.echo(json.dumps(_with_store(dep.to_json(), store, **extra), indent=2))
    elif not quiet:
        t = dep.record["timings_ms"]["total"]
        click.echo(f"deployed {dep.id} ({dep.name}) in {t / 1000:.2f} s; it is current. "
                   f"Details: pyworkers deployments show {dep.id}", err=True)
        if pushed:
            up = [b["role"] for b in pushed["blobs"] if b["uploaded"]]
            click.echo(f"pushed it to {pushed['reference']} ({pushed['digest']}); uploaded "
                       f"{', '.join(up) or 'nothing'}", err=True)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _summary_row(d, current: bool) -> dict:
    r = d.record
    snap = r.get("snapshot")
    return {"id": d.id, "name": d.name, "created": d.created, "current": current,
            "release": r["selection"]["release"],
            "packages": len(r["lock"]["packages"]) if r.get("lock") else 0,
            "snapshot_bytes": snap["bytes"] if snap else None,
            "total_ms": r["timings_ms"]["total"]}


@deployments.command("list", short_help="Every deployment, oldest first.")
@click.option("--name", help="Only this worker's deployments.")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(name: str | None, store_dir: Path | None, as_json: bool) -> None:
    """Every deployment in the store, oldest first; * marks each worker's current one."""
    from pyworkers.deploy_progress import fmt_bytes
    from pyworkers.store import StoreError

    store = open_store(store_dir)
    try:
        deps = store.list(name)
        cur = {n: store.current_id(n) for n in {d.name for d in deps}}
    except StoreError as e:
        raise UserError(str(e)) from None
    rows = [_summary_row(d, cur.get(d.name) == d.id) for d in deps]
    if as_json:
        click.echo(json.dumps({"store": str(store.root), "deployments": rows}, indent=2))
        return
    if not rows:
        click.echo(f"no deployments in {store.root}" + (f" for {name!r}" if name else ""),
                   err=True)
        return
    table = [["", "ID", "NAME", "CREATED (UTC)", "RELEASE", "PACKAGES", "SNAPSHOT", "DEPLOY"]]
    for r in rows:
        table.append(["*" if r["current"] else "", r["id"], r["name"],
                      r["created"][:19].replace("T", " "), r["release"], str(r["packages"]),
                      fmt_bytes(r["snapshot_bytes"]) if r["snapshot_bytes"] is not None
                      else "none", f"{r['total_ms'] / 1000:.2f} s"])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


@deployments.command("show", short_help="One deployment in detail.")
@click.argument("ref", required=False)
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def show_cmd(ref: str | None, store_dir: Path | None, as_json: bool) -> None:
    """Show deployment REF (an id, a unique id prefix, or a worker name for its current
    deployment): runtime selection, lock, layer and snapshot sizes, smoke test, stage timings."""
    from pyworkers.deploy import STAGES
    from pyworkers.deploy_progress import fmt_bytes

    store = open_store(store_dir)
    d = pick_deployment(store, ref)
    current = store.current_id(d.name) == d.id
    if as_json:
        click.echo(json.dumps(_with_store(d.to_json(), store, current=current), indent=2))
        return
    r = d.record
    sel, cfg = r["selection"], r["config"]
    lines = [
        ("deployment", f"{d.id}{'  (current)' if current else ''}"),
        ("worker", d.name),
        ("created", r["created"]),
        ("main", f"{cfg['main']}  ({r.get('asgi', {}).get('object', '?')})"),
        ("app", f"{cfg['app_dir']}  ->  {r['app']['files']} file(s), "
                f"{fmt_bytes(r['app']['bytes'])}, {r['app']['hash']}"),
        ("runtime", f"{sel['release']}: Pyodide {sel['pyodide_version']}, Python "
                    f"{sel['python_version']} ({sel['platform_tag']})"),
        ("compat date", f"{sel['compatibility_date']} (package set {sel['package_set_date']})"),
        ("flags", ", ".join(sel["flags"])),
    ]
    if cfg["vars"]:
        lines.append(("vars", ", ".join(sorted(cfg["vars"]))))
    lock = r.get("lock")
    if lock:
        how = "reused, inputs unchanged" if lock["reused"] else "resolved"
        src = f" from {lock['source']}" if lock.get("source") else ""
        lines.append(("lock", f"{len(lock['packages'])} package(s){src}, {how}  "
                              f"({store.root / lock['path']})"))
        for p in lock["packages"]:
            lines.append(("", f"{p['name']} {p['version']}  [{p['source']}] {p['wheel']}"))
    else:
        lines.append(("lock", "none (no requirements.txt or pyproject.toml dependencies)"))
    layer = r.get("layer")
    lines.append(("layer", f"{layer['hash']}  {layer['files']} files, "
                           f"{fmt_bytes(layer['bytes'])}{' (reused)' if layer['reused'] else ''}"
                  if layer else "none (no packages)"))
    snap = r.get("snapshot")
    if snap:
        sizes = snap.get("metadata", {}).get("sizes", {})
        extra = ", ".join(f"{k.replace('_', ' ')} {fmt_bytes(v)}" for k, v in sizes.items()
                          if k != "file" and isinstance(v, int))
        lines.append(("snapshot", f"{snap['type']}, {fmt_bytes(snap['bytes'])} on disk"
                                  + (f" ({extra})" if extra else "")
                                  + f"  ({store.root / snap['path']})"))
    else:
        lines.append(("snapshot", "none (pyworkers.snapshot was not available)"))
    for i, wu in enumerate(r.get("warmup") or ()):
        lines.append(("warm-up" if i == 0 else "", f"{wu['method']} {wu['target']} -> "
                                                  f"{wu['status']} in {wu['ms']:.1f} ms"))
    s = r["smoke"]
    prep = (f" + {s['prepare_ms'] / 1000:.1f} s image preparation" if s.get("prepare_ms")
            else "")
    lines.append(("smoke", f"{'restored snapshot' if s['restored_from_snapshot'] else 'fresh isolate'}"
                           f" in {s.get('ready_ms') or 0:.0f} ms{prep}, lifespan {s['lifespan']}, "
                           f"GET / -> {s['status']}"
                           + (f" (error: {s['error'].strip().splitlines()[-1]})"
                              if s.get("error") else "")))
    t = r["timings_ms"]
    lines.append(("timings", "  ".join(f"{k} {t[k]:.0f} ms" for k in STAGES if k in t)))
    lines.append(("", f"total {t['total'] / 1000:.2f} s"))
    w = max(len(k) for k, _ in lines)
    for k, v in lines:
        click.echo(f"{k:<{w}}  {v}".rstrip())


@deployments.command("rollback", short_help="Make an earlier deployment current.")
@click.argument("deployment_id", required=False, metavar="[ID]")
@click.option("--name", help="Worker name (default: ID's worker, or the only worker).")
@store_option
@click.option("--no-verify", is_flag=True,
              help="Do not verify the target's files and checksums first.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"name", "previous", "current"} as JSON.')
def rollback_cmd(deployment_id: str | None, name: str | None, store_dir: Path | None,
                 no_verify: bool, as_json: bool) -> None:
    """Make deployment ID current for its worker; without ID, the deployment created before
    the worker's current one. Deployments themselves never change."""
    from pyworkers.store import StoreError

    store = open_store(store_dir)
    try:
        if name is None:
            if deployment_id is not None:
                name = store.get(deployment_id).name
            else:
                names = store.names()
                if len(names) != 1:
                    raise UserError("give --name (workers: " + (", ".join(names) or "none")
                                    + ")")
                name = names[0]
        old, new = store.rollback(name, deployment_id, verify=not no_verify)
    except StoreError as e:
        raise UserError(str(e)) from None
    if as_json:
        click.echo(json.dumps({"name": name, "previous": old.id, "current": new.id}, indent=2))
    else:
        click.echo(f"{name}: current is now {new.id} (was {old.id})")


@deployments.command("verify", short_help="Check deployments' files and checksums.")
@click.argument("ref", required=False, metavar="[ID|NAME]")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def verify_cmd(ref: str | None, store_dir: Path | None, as_json: bool) -> None:
    """Check deployment REF (an id, a unique id prefix, or a worker name for its current
    deployment; default: every deployment): snapshot size, sha256 and section checksums, the
    layer's files against their RECORDs, the app copy's content hash, the lock file. Problems
    go to stdout; exit status 1 if any deployment fails."""
    from pyworkers.verify import verify_deployment

    store = open_store(store_dir)
    deps = [pick_deployment(store, ref)] if ref is not None else _all(store)
    results = []
    for d in deps:
        problems = verify_deployment(store, d.id)
        results.append({"id": d.id, "name": d.name, "ok": not problems,
                        "problems": [p.to_json() for p in problems]})
    if as_json:
        click.echo(json.dumps({"store": str(store.root), "deployments": results}, indent=2))
    else:
        for r in results:
            click.echo(f"{'ok  ' if r['ok'] else 'FAIL'}  {r['id']}")
            for p in r["problems"]:
                click.echo(f"      {p['part']}: {p['path']}: {p['message']}")
    bad = [r["id"] for r in results if not r["ok"]]
    if bad:
        raise UserError(f"{len(bad)} of {len(results)} deployment(s) failed verification: "
                        + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))


def _all(store):
    from pyworkers.store import StoreError

    try:
        return store.list()
    except StoreError as e:
        raise UserError(str(e)) from None
