"""The platform tables of ``pyworkers.toml``: ``[[kv]]``, ``[[sql]]``, ``[[objects]]`` and
``[[crons]]`` (validated by :func:`check_tables`, called from :mod:`pyworkers.config`).

::

    [[kv]]
    binding = "CACHE"                    # name the app uses: env.CACHE
    url = "redis://127.0.0.1:6379/0"     # optional; default: a SQLite file in the store
    [[sql]]
    binding = "DB"
    url = "postgresql://user@127.0.0.1:5432/app"   # optional; default: SQLite in the store
    [[objects]]
    binding = "FILES"                    # a directory in the store (no url)
    [[crons]]
    schedule = "*/5 * * * *"             # cron syntax (croniter): minute hour dom month dow
    path = "/tasks/cleanup"              # POSTed to at each scheduled time
    [[volumes]]
    mount = "/data"                      # a writable host directory in the store
    max_size = "1GiB"                    # optional cap: bytes or a unit (KB/MB/GB, KiB/MiB/GiB)

Shape kept in the deployment record (``config.bindings`` / ``config.crons``)::

    {"kv": [{"binding", "url"}], "sql": [...], "objects": [{"binding"}]}
    [{"schedule", "path"}]
    [{"mount", "max_size": bytes | None}]            (``config.volumes``)
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KINDS = ("kv", "sql", "objects")
#: keys each table accepts
TABLE_KEYS = {"kv": ("binding", "url"), "sql": ("binding", "url"), "objects": ("binding",),
              "crons": ("schedule", "path"), "volumes": ("mount", "max_size")}
#: guest directories a volume may not be mounted on or under
RESERVED_MOUNTS = ("/app", "/lib", "/tmp", "/dev", "/proc", "/home")
_SIZE_RE = re.compile(r"\s*(\d+)\s*(|B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|K|M|G|T)\s*")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "K": 1 << 10,
          "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "KiB": 1 << 10, "MiB": 1 << 20,
          "GiB": 1 << 30, "TiB": 1 << 40}
URL_SCHEMES = {"kv": ("redis", "rediss"), "sql": ("postgresql", "postgres")}


def _unknown(where: str, key: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key.split(".")[-1], valid, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the keys are {', '.join(valid)}"
    return f"{where}: {key}: unknown key: {hint}"


def check_tables(kind: str, value, where: str) -> list[dict]:
    """Validate the ``[[kind]]`` array of tables; returns it as a list of plain dicts. Raises
    ``ValueError`` with a one-line message naming ``where`` (the file) and the key
    (``kv[1].url``)."""
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise ValueError(f"{where}: {kind}: must be an array of tables: write [[{kind}]]")
    out = []
    for i, t in enumerate(value):
        at = f"{kind}[{i}]"
        for k in t:
            if k not in TABLE_KEYS[kind]:
                raise ValueError(_unknown(where, f"{at}.{k}", TABLE_KEYS[kind]))
        if kind == "crons":
            out.append(_check_cron(t, where, at))
            continue
        if kind == "volumes":
            out.append(_check_volume(t, where, at, out))
            continue
        name = t.get("binding")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ValueError(f"{where}: {at}.binding: must be a name of letters, digits and '_' "
                             f"(not starting with a digit), got {name!r}: e.g. binding = "
                             f'"{ {"kv": "CACHE", "sql": "DB", "objects": "FILES"}[kind]}"')
        spec = {"binding": name}
        if "url" in t:
            url = t["url"]
            schemes = URL_SCHEMES[kind]
            if not isinstance(url, str) or urlsplit(url).scheme not in schemes:
                raise ValueError(f"{where}: {at}.url: must be a {' or '.join(s + '://' for s in schemes)}"
                                 f" URL, got {url!r} (leave url out for the embedded default)")
            spec["url"] = url
        out.append(spec)
    return out


def _check_cron(t: Mapping, where: str, at: str) -> dict:
    from croniter import croniter

    sched, path = t.get("schedule"), t.get("path")
    if not isinstance(sched, str) or not croniter.is_valid(sched):
        raise ValueError(f"{where}: {at}.schedule: {sched!r} is not a cron schedule: write five "
                         'fields, minute hour day-of-month month day-of-week, e.g. "*/5 * * * *"')
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"{where}: {at}.path: must be a path starting with '/', got {path!r}")
    return {"schedule": sched, "path": path}


def _check_volume(t: Mapping, where: str, at: str, earlier: list[dict]) -> dict:
    mount = t.get("mount")
    if not isinstance(mount, str) or not mount.startswith("/") or mount.rstrip("/") == "" \
            or any(p in ("", ".", "..") for p in mount.rstrip("/").split("/")[1:]) \
            or not all(NAME_RE.fullmatch(p.replace("-", "_").replace(".", "_"))
                       for p in mount.rstrip("/").split("/")[1:]):
        raise ValueError(f"{where}: {at}.mount: must be an absolute guest directory like "
                         f'"/data" (letters, digits, "_", "-", "."), got {mount!r}')
    mount = mount.rstrip("/")
    for r in RESERVED_MOUNTS:
        if mount == r or mount.startswith(r + "/"):
            raise ValueError(f"{where}: {at}.mount: {mount} is inside {r}, which the runtime "
                             'owns: mount the volume elsewhere, e.g. "/data"')
    for e in earlier:
        m = e["mount"]
        if mount == m or mount.startswith(m + "/") or m.startswith(mount + "/"):
            raise ValueError(f"{where}: {at}.mount: {mount} overlaps the volume at {m}")
    spec: dict = {"mount": mount, "max_size": None}
    if "max_size" in t:
        v = t["max_size"]
        m = _SIZE_RE.fullmatch(v) if isinstance(v, str) else None
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            spec["max_size"] = v
        elif m and int(m.group(1)) > 0:
            spec["max_size"] = int(m.group(1)) * _UNITS[m.group(2)]
        else:
            raise ValueError(f"{where}: {at}.max_size: must be a size in bytes or with a unit, "
                             f'e.g. max_size = "1GiB", got {v!r}')
    return spec


def volume_dir(mount: str) -> str:
    """The directory name of a volume under ``<store>/data/<worker>/volumes/``: its mount path
    without the leading slash, ``/`` replaced by ``_`` (``/data`` -> ``data``)."""
    return mount.strip("/").replace("/", "_")


def check_names(tables: Mapping[str, list[dict]], vars_: Mapping[str, str], where: str) -> None:
    """Binding names must be unique across ``[[kv]]``/``[[sql]]``/``[[objects]]`` and differ
    from every ``[vars]`` key. Raises ``ValueError`` naming both places."""
    seen = {k: f"vars.{k}" for k in vars_}
    for kind in KINDS:
        for i, t in enumerate(tables.get(kind, ())):
            n, at = t["binding"], f"{kind}[{i}].binding"
            if n in seen:
                raise ValueError(f"{where}: {at}: {n!r} is also {seen[n]}: give each binding its "
                                 "own name")
            seen[n] = at


def redact(url: str) -> str:
    """``url`` without its password (for logs and messages): ``redis://u:***@host/0``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query,
                       parts.fragment))


__all__ = ["KINDS", "TABLE_KEYS", "check_names", "check_tables", "redact", "volume_dir"]
