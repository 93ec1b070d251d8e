"""One worker's bindings on the host: :class:`WorkerBindings` (a
:class:`pyworkers.serve.worker.BindingHost`), :func:`check_reachable` (deploy) and
:func:`env_source` (secrets and vars for ``H_ENV``).

Backends are opened lazily and shared by every pool of the process (a redeploy or a new
isolate reuses the connection): one per worker, kind and binding. Each worker only reaches
its own: the data paths and Redis key prefixes contain the worker name, and the guest names a
binding, never a path or a URL.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote

from pyworkers.bindings import BindingsError
from pyworkers.bindings.spec import KINDS, redact

log = logging.getLogger("pyworkers.bindings")

_backends: dict[tuple, Any] = {}
_lock = threading.Lock()


def data_dir(store_root: str | Path, worker: str) -> Path:
    """``<store>/data/<worker>``: where a worker's embedded bindings keep their files."""
    return Path(store_root) / "data" / worker


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_url(url: str, secrets: Mapping[str, str], where: str = "") -> str:
    """``url`` with each ``${NAME}`` replaced by the worker's secret ``NAME`` (URL-quoted), so
    a credential lives in the secret store, not in ``pyworkers.toml`` nor the deployment
    record. Raises :class:`BindingsError` naming a missing secret."""
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in secrets:
            raise BindingsError(f"{where}{redact(url)} uses ${{{name}}}, but the worker has no "
                                f"secret {name}: `pyworkers secret put {name}`")
        return quote(secrets[name], safe="")

    return _PLACEHOLDER.sub(sub, url)


def _backend(store_root: Path, worker: str, kind: str, spec: dict):
    url = spec.get("url")
    if url and "${" in url:
        from pyworkers.bindings.secrets import SecretStore

        url = expand_url(url, SecretStore(store_root).values(worker),
                         f"binding {spec['binding']}: ")
    name = spec["binding"]
    key = (str(store_root), worker, kind, name, url)
    with _lock:
        b = _backends.get(key)
        if b is not None:
            return b
        base = data_dir(store_root, worker)
        if kind == "kv":
            from pyworkers.bindings.kv import RedisKV, SqliteKV

            b = RedisKV(url, f"pyworkers:{worker}:{name}:") if url else \
                SqliteKV(base / "kv" / f"{name}.sqlite3")
        elif kind == "sql":
            from pyworkers.bindings.sql import PostgresSQL, SqliteSQL

            b = PostgresSQL(url) if url else SqliteSQL(base / "sql" / f"{name}.sqlite3")
        else:
            from pyworkers.bindings.objects import DirObjects

            b = DirObjects(base / "objects" / name)
        _backends[key] = b
        log.info("[%s] binding %s: %s %s", worker, name, kind,
                 redact(url) if url else f"embedded ({base.relative_to(store_root)})")
        return b


class WorkerBindings:
    """The bindings of one deployment of ``worker`` (``spec``: the record's
    ``config.bindings``, ``{"kv": [{"binding", "url"?}], "sql": ..., "objects": ...}``), with
    their data under ``store_root``."""

    def __init__(self, store_root: str | Path, worker: str, spec: Mapping[str, list]):
        self.root = Path(store_root)
        self.worker = worker
        self.kinds: dict[str, tuple[str, dict]] = {}
        for kind in KINDS:
            for s in spec.get(kind) or ():
                self.kinds[s["binding"]] = (kind, dict(s))

    def declared(self) -> list[dict]:
        """``[{"name", "kind"}]`` for the guest (no URL: credentials stay on the host)."""
        return [{"name": n, "kind": k} for n, (k, _) in self.kinds.items()]

    async def call(self, binding: str, op: str, args: dict, body: bytes) -> tuple[Any, bytes]:
        """Run ``op`` of ``binding``. Raises ``KeyError`` for a binding this worker does not
        declare, ``ValueError`` for bad input or SQL errors (see each backend module)."""
        if binding not in self.kinds:
            raise KeyError(f"worker {self.worker!r} has no binding {binding!r}")
        kind, spec = self.kinds[binding]
        if not isinstance(args, dict):
            raise ValueError("binding arguments must be an object")
        return await _backend(self.root, self.worker, kind, spec).call(op, args, bytes(body))


def check_reachable(spec: Mapping[str, list], where: str, timeout: float = 5.0,
                    secrets: Mapping[str, str] | None = None) -> None:
    """Connect to every ``url`` backend of ``spec`` (Redis ``PING``, PostgreSQL ``SELECT 1``),
    ``${NAME}`` placeholders filled from ``secrets``. Raises :class:`BindingsError` naming the
    file, the binding and the (redacted) URL."""
    from pyworkers.bindings.kv import check_redis
    from pyworkers.bindings.sql import check_postgres

    for kind, check in (("kv", check_redis), ("sql", check_postgres)):
        for i, s in enumerate(spec.get(kind) or ()):
            url = s.get("url")
            if not url:
                continue
            url = expand_url(url, secrets or {}, f"{where}: {kind}[{i}].url: ")
            try:
                check(url, timeout)
            except Exception as e:  # noqa: BLE001 - any failure: unreachable or refused
                raise BindingsError(
                    f"{where}: {kind}[{i}].url: cannot reach {redact(url)} for binding "
                    f"{s['binding']} ({type(e).__name__}: {_short(e, url)}): start the server "
                    "or fix the URL (or remove url to use the embedded default)") from None


def _short(e: BaseException, url: str) -> str:
    msg = str(e).splitlines()[0] if str(e) else ""
    return msg.replace(url, redact(url))[:300]


def env_source(store_root: str | Path, worker: str,
               vars_: Mapping[str, str]) -> Callable[[], dict[str, str]]:
    """``() -> {name: value}``: the deployment's vars and the worker's current secrets, read
    from the secret store at each call (each isolate start); if the secrets file cannot be
    read, the error is logged and the values read last time are used."""
    from pyworkers.bindings.secrets import SecretStore

    sec = SecretStore(store_root)
    fixed = dict(vars_)
    last: dict[str, str] = {}

    def read() -> dict[str, str]:
        try:
            fresh = sec.values(worker)
            last.clear()
            last.update(fresh)
        except BindingsError as e:  # keep serving with the secrets read last time
            log.error("[%s] secrets: %s (isolates keep the values read before)", worker, e)
        return {**fixed, **last}

    return read


READ_ONLY_HINT = ("pyworkers: cannot write {path}: the app directory and the runtime's files are "
                  "read-only. Write under /tmp (per isolate, in memory, lost when it retires) or "
                  "declare a persistent volume in pyworkers.toml: [[volumes]] mount = \"/data\"\n")


def prepare_isolate(iso, store_root: str | Path, worker: str, volumes: list[dict],
                    stderr: Callable[[bytes], None] | None = None) -> None:
    """Per isolate, after restore: mount the worker's volumes
    (``<store>/data/<worker>/volumes/<name>``, :mod:`pyworkers.runtime.volume`) and make a
    refused write to a read-only path print :data:`READ_ONLY_HINT` on the isolate's stderr
    (once per path)."""
    from pyworkers.bindings.spec import volume_dir

    base = data_dir(store_root, worker) / "volumes"
    for v in volumes:
        iso.fs.mount_volume(v["mount"], base / volume_dir(v["mount"]), v.get("max_size"))
    if stderr is not None:
        told: set[str] = set()

        def hint(path: str) -> None:
            if path not in told and len(told) < 100:
                told.add(path)
                stderr(READ_ONLY_HINT.format(path=path).encode())

        iso.fs.on_read_only = hint


def scratch_platform(root: str | Path, worker: str, bindings: Mapping[str, list]):
    """Bindings for a deploy's smoke test: the same names and kinds, embedded backends under
    the scratch directory ``root`` (never the real data nor a remote server)."""
    spec = {k: [{"binding": b["binding"]} for b in v] for k, v in bindings.items()}
    return WorkerBindings(root, worker, spec) if spec else None


__all__ = ["READ_ONLY_HINT", "WorkerBindings", "check_reachable", "data_dir", "env_source",
           "expand_url", "prepare_isolate", "scratch_platform"]
