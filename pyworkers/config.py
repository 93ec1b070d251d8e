"""Worker configuration: ``pyworkers.toml`` or ``[tool.pyworkers]`` in ``pyproject.toml``.

File format (every key optional)::

    name = "hello"                        # worker name; default: the app directory's name
    main = "main:app"                     # ASGI app as uvicorn takes it, module:attribute
    compatibility_date = "2026-11-21"     # YYYY-MM-DD (a quoted string or a bare TOML date)
    compatibility_flags = ["python_entropy_at_import_error"]
    dependency_groups = ["templates"]     # optional-dependency groups of pyproject.toml to add
    warmup = ["/items/1", "HEAD /"]       # requests run before the snapshot (GET/HEAD only)
    [vars]                                # environment variables, string values only
    GREETING = "hello"
    [outbound]                            # outbound network (see pyworkers.runtime.egress)
    allow = ["api.example.com:443", "127.0.0.1:6379"]   # host[:port] patterns (an allow-list)
    deny = ["10.0.0.0/8"]                 # wins over allow
    ca_certificates = "certs/my-ca.pem"   # extra trusted CAs (PEM), relative to the app dir
    max_sockets = 256                     # open sockets per isolate
    [[kv]]                                # bindings and cron triggers:
    binding = "CACHE"                     # see pyworkers.bindings.spec

In ``pyproject.toml`` the same keys go under ``[tool.pyworkers]`` (and ``[tool.pyworkers.vars]``).
Having both files configure the worker is an error. With neither, the defaults apply.

Defaults: ``name`` = the directory name; ``main`` = ``"main:app"`` (the FastAPI/uvicorn convention,
``uvicorn main:app``); ``compatibility_date`` = ``None`` (:meth:`WorkerConfig.runtime_selection`
then refuses and names the line to add); ``compatibility_flags`` = ``()``; ``vars`` = ``{}``; ``outbound`` = ``{}`` (the default egress
policy: public internet only, 256 sockets, no extra CA).

Overrides (the CLI's flags) win over the file: ``name``, ``main``, ``compatibility_date`` and
``compatibility_flags`` replace the file's value, ``vars`` is merged key by key; a ``None`` value
means "not given" and is skipped, so click options can be passed straight through.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from pyworkers.compat import CompatError, RuntimeSelection, flags as _compat_flags
from pyworkers.compat import parse_compatibility_date, select

__all__ = ["ConfigError", "WorkerConfig", "load_worker_config", "DEFAULT_MAIN", "KEYS"]

DEFAULT_MAIN = "main:app"
KEYS = ("name", "main", "compatibility_date", "compatibility_flags", "dependency_groups", "vars",
        "max_concurrency", "outbound", "kv", "sql", "objects", "crons", "volumes", "warmup")
OUTBOUND_KEYS = ("allow", "deny", "ca_certificates", "max_sockets")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DOTTED_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLI = "command line"
#: most ``warmup`` requests a worker may declare, and the methods allowed (safe, RFC 9110 9.2.1)
MAX_WARMUP = 16
WARMUP_METHODS = ("GET", "HEAD")


class ConfigError(ValueError):
    """Invalid worker configuration; the one-line message names the file (or "command line"),
    the key, what is wrong and the fix."""


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """A worker's validated configuration.

    Attributes:
        app_dir: the app directory (as given to :func:`load_worker_config`).
        source: the file read (``pyworkers.toml`` or ``pyproject.toml``), ``None`` if neither.
        name: worker name (letters, digits, ``.``, ``_``, ``-``; starts with a letter or digit).
        main: ``"module:attribute"`` (both dotted Python identifiers), e.g. ``"main:app"``.
        compatibility_date: ``datetime.date`` or ``None`` (not set).
        compatibility_flags: explicit flags in the order given.
        vars: environment variables, ``str -> str`` (read-only mapping).
        max_concurrency: in-flight requests per isolate when served (``None``: the server's
            ``--max-concurrency``).
        dependency_groups: names of ``pyproject.toml`` optional-dependency groups
            (``[project.optional-dependencies]`` or PEP 735 ``[dependency-groups]``) installed
            with ``[project] dependencies`` (see :mod:`pyworkers.packages.inputs`).
        warmup: ``((method, target), ...)``: requests deploy sends to the app before the
            snapshot (``"GET"``/``"HEAD"``, ``target`` = path with an optional ``?query``); at
            most :data:`MAX_WARMUP`.
        outbound: the ``[outbound]`` table, validated: ``{"allow": (str, ...), "deny": (str,
            ...), "ca_certificates": str | None (relative to app_dir), "max_sockets": int}``
            with only the keys given (read-only mapping).
        origins: for each key set explicitly, where it came from (file path or "command line").
    """

    app_dir: Path
    source: Path | None
    name: str
    main: str = DEFAULT_MAIN
    compatibility_date: _dt.date | None = None
    compatibility_flags: tuple[str, ...] = ()
    vars: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    max_concurrency: int | None = None
    dependency_groups: tuple[str, ...] = ()
    warmup: tuple[tuple[str, str], ...] = ()
    outbound: Mapping[str, object] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    #: ``{"kv": [{"binding", "url"?}], "sql": [...], "objects": [{"binding"}]}`` (only the
    #: kinds declared; :mod:`pyworkers.bindings.spec`)
    bindings: Mapping[str, tuple] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))
    #: ``[{"schedule", "path"}]``: cron triggers
    crons: tuple = ()
    #: ``[{"mount", "max_size"}]``: persistent volumes (bytes; ``None``: no cap)
    volumes: tuple = ()
    origins: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    @property
    def module(self) -> str:
        """The module part of ``main`` (``"main"`` for ``"main:app"``)."""
        return self.main.split(":", 1)[0]

    @property
    def attribute(self) -> str:
        """The attribute part of ``main`` (``"app"`` for ``"main:app"``; may be dotted)."""
        return self.main.split(":", 1)[1]

    def egress_policy(self):
        """The worker's :class:`pyworkers.runtime.egress.Policy` from ``[outbound]`` (reads
        ``ca_certificates``). Raises :class:`ConfigError` naming the file and key if the CA
        file is missing or holds no PEM certificate."""
        return outbound_policy(self.outbound, self.app_dir,
                               self.origins.get("outbound", str(self.source or "pyworkers.toml")))

    def runtime_selection(self, *, today: _dt.date | None = None) -> RuntimeSelection:
        """Select the runtime with this config's date and flags (:func:`pyworkers.compat.select`).

        Raises :class:`ConfigError` if no compatibility date is set, or wrapping the
        :class:`~pyworkers.compat.CompatError` (prefixed with where the date/flags came from).
        """
        if self.compatibility_date is None:
            where = self.source or (self.app_dir / "pyworkers.toml")
            raise ConfigError(
                f"{where}: compatibility_date is not set: add compatibility_date = "
                f'"{(today or _today()).isoformat()}" (or pass --compatibility-date)')
        try:
            return select(self.compatibility_date, self.compatibility_flags, today=today)
        except CompatError as e:
            keys = ("compatibility_date", "compatibility_flags")
            where = ", ".join(dict.fromkeys(self.origins[k] for k in keys if k in self.origins))
            raise ConfigError(f"{where}: {e}" if where else str(e)) from e


def _today() -> _dt.date:
    from pyworkers.compat import current_date

    return current_date()


def _fail(where: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {key}: {problem}")


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}): fix the syntax") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({e})") from None


def _type_name(v) -> str:
    return {str: "string", int: "integer", float: "float", bool: "boolean", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def _check(values: dict, where: str) -> dict:
    """Validate raw values from one origin; return them converted (date, tuple, dict)."""
    out = {}
    for key, v in values.items():
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the keys are {', '.join(KEYS)}"
            raise _fail(where, key, f"unknown key: {hint}")
        if key in ("name", "main"):
            if not isinstance(v, str):
                raise _fail(where, key, f"must be a string, got {_type_name(v)} {v!r}")
        if key == "name" and not _NAME_RE.fullmatch(v):
            raise _fail(where, key, f"{v!r} is not a worker name: use letters, digits, '.', '_' "
                                    "and '-', starting with a letter or digit")
        if key == "main":
            mod, sep, attr = v.partition(":")
            if not (sep and _DOTTED_RE.fullmatch(mod) and _DOTTED_RE.fullmatch(attr)):
                raise _fail(where, key, f"{v!r} is not module:attribute: write it as uvicorn "
                                        f'takes it, e.g. main = "{DEFAULT_MAIN}"')
        if key == "compatibility_date":
            if isinstance(v, _dt.datetime) or not isinstance(v, (str, _dt.date)):
                raise _fail(where, key, f"must be a YYYY-MM-DD date, got {_type_name(v)} {v!r}")
            try:
                v = parse_compatibility_date(v)
            except CompatError as e:
                raise _fail(where, key, str(e)) from None
        if key == "compatibility_flags":
            if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
                raise _fail(where, key, f"must be an array of strings, got {v!r}: write e.g. "
                                        'compatibility_flags = ["python_entropy_at_import_error"]')
            names = {f.name for f in _compat_flags()}
            valid = sorted(names | {f.disable_name for f in _compat_flags() if f.allow_disable})
            for x in v:
                if x not in names and not (x.startswith("no_") and x[3:] in names):
                    close = difflib.get_close_matches(x, valid, n=1)
                    hint = (f"did you mean {close[0]!r}?" if close
                            else "run `pyworkers runtimes list` to see every flag")
                    raise _fail(where, key, f"unknown compatibility flag {x!r}: {hint}")
            v = tuple(v)
        if key == "max_concurrency":
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000:
                raise _fail(where, key, f"must be an integer from 1 to 10000, got {v!r}: e.g. "
                                        "max_concurrency = 32")
        if key == "dependency_groups":
            if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
                raise _fail(where, key, f"must be an array of group names, got {v!r}: write "
                                        'e.g. dependency_groups = ["templates"]')
            v = tuple(v)
        if key == "warmup":
            v = _check_warmup(v, where)
        if key == "vars":
            if not isinstance(v, Mapping):
                raise _fail(where, key, f"must be a table of strings, got {_type_name(v)}")
            for k, x in v.items():
                if not _ENV_RE.fullmatch(k):
                    raise _fail(where, f"vars.{k}", "is not an environment variable name: use "
                                                    "letters, digits and '_', not starting with "
                                                    "a digit")
                if not isinstance(x, str):
                    raise _fail(where, f"vars.{k}", f"must be a string, got {_type_name(x)} "
                                                    f'{x!r}: quote it, {k} = "{x}"')
            v = dict(v)
        if key == "outbound":
            v = _check_outbound(v, where)
        if key in ("kv", "sql", "objects", "crons", "volumes"):
            from pyworkers.bindings.spec import check_tables

            try:
                v = check_tables(key, v, where)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        out[key] = v
    return out


def _check_warmup(v, where: str) -> tuple[tuple[str, str], ...]:
    """``warmup = ["/path?q", "HEAD /path"]`` -> ``(("GET", "/path?q"), ("HEAD", "/path"))``."""
    example = 'e.g. warmup = ["/items/1", "HEAD /"]'
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise _fail(where, "warmup", f"must be an array of request strings, got {v!r}: {example}")
    if len(v) > MAX_WARMUP:
        raise _fail(where, "warmup", f"{len(v)} requests: at most {MAX_WARMUP} (each runs at "
                                     "every deploy)")
    out = []
    for x in v:
        parts = x.split()
        method, target = ("GET", parts[0]) if len(parts) == 1 else (parts + ["", ""])[:2]
        if len(parts) not in (1, 2) or not target.startswith("/"):
            raise _fail(where, "warmup", f"{x!r} is not a request: write a path starting with "
                                         f"'/' or METHOD PATH, {example}")
        if method.upper() not in WARMUP_METHODS:
            raise _fail(where, "warmup", f"{x!r}: only {' and '.join(WARMUP_METHODS)} warm up "
                                         "(what a warm-up request leaves in memory goes into "
                                         "the snapshot; a request that changes data must not "
                                         "run at deploy)")
        out.append((method.upper(), target))
    return tuple(out)


def _check_outbound(v, where: str) -> dict:
    from pyworkers.runtime.egress import EgressError, Rule

    if not isinstance(v, Mapping):
        raise _fail(where, "outbound", f"must be a table, got {_type_name(v)}: write [outbound]")
    out: dict = {}
    for k, x in v.items():
        key = f"outbound.{k}"
        if k not in OUTBOUND_KEYS:
            close = difflib.get_close_matches(k, OUTBOUND_KEYS, n=1)
            hint = (f"did you mean {close[0]!r}?" if close
                    else f"the keys are {', '.join(OUTBOUND_KEYS)}")
            raise _fail(where, key, f"unknown key: {hint}")
        if k in ("allow", "deny"):
            if not isinstance(x, (list, tuple)) or not all(isinstance(r, str) for r in x):
                raise _fail(where, key, f"must be an array of 'host[:port]' strings, got {x!r}: "
                                        f'write e.g. {k} = ["api.example.com:443"]')
            for r in x:
                try:
                    Rule.parse(r)
                except EgressError as e:
                    raise _fail(where, key, str(e)) from None
            x = tuple(x)
        if k == "ca_certificates":
            if not isinstance(x, str) or not x:
                raise _fail(where, key, f"must be a path string (relative to the app directory), "
                                        f"got {x!r}")
        if k == "max_sockets":
            if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= 65536:
                raise _fail(where, key, f"must be an integer from 1 to 65536, got {x!r}")
        out[k] = x
    return out


def outbound_policy(outbound: Mapping, app_dir: Path, where: str = "pyworkers.toml"):
    """A :class:`pyworkers.runtime.egress.Policy` from a validated ``[outbound]`` table;
    ``ca_certificates`` is read relative to ``app_dir``. Raises :class:`ConfigError` (naming
    ``where`` and the key) for a missing or certificate-less CA file."""
    from pyworkers.runtime.egress import Policy

    pem = ""
    ca = outbound.get("ca_certificates")
    if ca:
        path = Path(app_dir) / str(ca)
        try:
            pem = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise _fail(where, "outbound.ca_certificates",
                        f"cannot read {path} ({e}): give a PEM file inside the app directory") from None
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise _fail(where, "outbound.ca_certificates",
                        f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return Policy.build(outbound.get("allow", ()), outbound.get("deny", ()), ca_pem=pem,
                        max_sockets=int(outbound.get("max_sockets", 256)))


def load_worker_config(app_dir: Path, overrides: dict | None = None) -> WorkerConfig:
    """Load and validate the configuration of the worker in ``app_dir``.

    Reads ``app_dir/pyworkers.toml`` (top-level keys) or else ``[tool.pyworkers]`` in
    ``app_dir/pyproject.toml``; neither is fine (defaults). ``overrides`` (e.g. CLI flags; keys
    from :data:`KEYS`, ``None`` values skipped) win over the file; see the module docstring for
    the format, defaults and merge rules.

    Raises :class:`ConfigError` naming the file (or "command line") and the key for: an app
    directory that does not exist, invalid TOML, both files configuring the worker, an unknown
    key (closest key suggested), a wrong type, a malformed ``name``/``main``/date/flag/var, and a
    directory name that is not a valid default worker name. Future dates and flag conflicts are
    checked later, by :meth:`WorkerConfig.runtime_selection`.
    """
    app_dir = Path(app_dir)
    if not app_dir.is_dir():
        raise ConfigError(f"{app_dir}: app directory not found: pass the directory that holds "
                          "your app")
    own, pyproject = app_dir / "pyworkers.toml", app_dir / "pyproject.toml"
    source, where, raw = None, None, {}
    tool_table = None
    if pyproject.is_file():
        tool = _read_toml(pyproject).get("tool", {})
        tool_table = tool.get("pyworkers") if isinstance(tool, dict) else None
    if own.is_file():
        if tool_table is not None:
            raise ConfigError(f"{own}: the worker is also configured in {pyproject} "
                              "[tool.pyworkers]: keep one of them")
        source, where, raw = own, str(own), _read_toml(own)
    elif tool_table is not None:
        source, where = pyproject, f"{pyproject} [tool.pyworkers]"
        if not isinstance(tool_table, dict):
            raise ConfigError(f"{where}: must be a table: write [tool.pyworkers]")
        raw = tool_table

    values = _check(raw, where) if raw else {}
    origins = {k: where for k in values}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for k, v in _check(given, _CLI).items():
        values[k] = {**values.get("vars", {}), **v} if k == "vars" else v
        origins[k] = _CLI

    if "name" not in values:
        default = app_dir.resolve().name
        if not _NAME_RE.fullmatch(default):
            raise ConfigError(f"{source or own}: name: not set and the directory name {default!r} "
                              'is not a worker name: add name = "my-worker"')
        values["name"] = default
    from pyworkers.bindings.spec import KINDS, check_names

    bindings = {k: tuple(values[k]) for k in KINDS if values.get(k)}
    try:
        check_names(bindings, values.get("vars", {}), where or _CLI)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return WorkerConfig(
        app_dir=app_dir,
        source=source,
        name=values["name"],
        main=values.get("main", DEFAULT_MAIN),
        compatibility_date=values.get("compatibility_date"),
        compatibility_flags=values.get("compatibility_flags", ()),
        vars=MappingProxyType(values.get("vars", {})),
        max_concurrency=values.get("max_concurrency"),
        dependency_groups=values.get("dependency_groups", ()),
        warmup=values.get("warmup", ()),
        outbound=MappingProxyType(values.get("outbound", {})),
        bindings=MappingProxyType(bindings),
        crons=tuple(values.get("crons", ())),
        volumes=tuple(values.get("volumes", ())),
        origins=MappingProxyType(origins),
    )
