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

Shape kept in the deployment record (``config.bindings`` / ``config.crons``)::

    {"kv": [{"binding", "url"}], "sql": [...], "objects": [{"binding"}]}
    [{"schedule", "path"}]
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
              "crons": ("schedule", "path")}
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


__all__ = ["KINDS", "TABLE_KEYS", "check_names", "check_tables", "redact"]
