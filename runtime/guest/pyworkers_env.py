"""Bindings, vars and secrets of the running worker, for app code (guest side).

``request.scope["env"]`` (every HTTP and WebSocket scope under ``pyworkers serve``) and
``pyworkers_env.env`` (importable anywhere, e.g. in a lifespan handler or a background task)
are the same object. Attribute access, as in Cloudflare's Python Workers::

    env.CACHE          # [[kv]] binding: KV
    env.DB             # [[sql]] binding: SQL
    env.FILES          # [[objects]] binding: Objects
    env.GREETING       # a [vars] value or a secret: str

Every operation is performed by the host (``_pyworkers_serve.current().call``): the guest
never sees a host path or a backend URL. Errors: ``KeyError`` (unknown binding),
``ValueError`` (bad input, a limit exceeded, an SQL error), ``TimeoutError`` (the host's call
deadline, the server's ``--request-timeout``), ``_pyworkers_serve.BindingError`` (the backend
failed). Outside ``pyworkers serve`` (at import time, in a deploy snapshot) ``env`` has no
bindings: accessing one raises ``AttributeError``.

Limits (host side): KV key <= 512 bytes, value <= 25 MiB, ttl >= 1 s, list <= 1000 keys per
call; objects key <= 1024 bytes, an object <= 5 GiB (sent in 1 MiB parts); SQL result
<= 64 MiB.
"""
import base64
import json

import _pyworkers_serve

#: bytes per object part sent or received in one host call
CHUNK = 1 << 20
#: largest KV value (bytes; the host's pyworkers.bindings.kv.MAX_VALUE)
KV_MAX_VALUE = 25 << 20


async def _call(binding, op, args, body=b""):
    srv = _pyworkers_serve.current()
    if srv is None:
        raise RuntimeError(f"binding {binding}: only available while served by pyworkers serve")
    return await srv.call(binding, op, args, body)


def _bytes(value, what):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, got {type(value).__name__}")


class KV:
    """A KV namespace: ``await get(key, type="text"|"bytes"|"json")`` (``None`` if absent),
    ``await put(key, value, ttl=None)`` (str or bytes; ttl in seconds), ``await delete(key)``,
    ``await list(prefix="", cursor=None, limit=1000)`` -> ``{"keys": [...], "cursor": str |
    None}`` (pass ``cursor`` back for the next page)."""

    def __init__(self, name):
        self.name = name

    async def get(self, key, type="text"):
        result, body = await _call(self.name, "get", {"key": key})
        if not result.get("found"):
            return None
        if type == "bytes":
            return body
        text = body.decode("utf-8")
        return json.loads(text) if type == "json" else text

    async def put(self, key, value, ttl=None, *, expiration_ttl=None):
        ttl = ttl if ttl is not None else expiration_ttl
        data = _bytes(value, "KV value")
        if len(data) > KV_MAX_VALUE:  # checked by the host too; refused here before any copy
            raise ValueError(f"KV value is {len(data)} bytes: the limit is {KV_MAX_VALUE} bytes "
                             "(25 MiB); use an objects binding for larger data")
        await _call(self.name, "put", {"key": key, "ttl": ttl}, data)

    async def delete(self, key):
        await _call(self.name, "delete", {"key": key})

    async def list(self, prefix="", cursor=None, limit=1000):
        result, _ = await _call(self.name, "list",
                                {"prefix": prefix, "cursor": cursor, "limit": limit})
        return result

    def __repr__(self):
        return f"<KV binding {self.name}>"


def _param(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(v)).decode()}
    return v


def _unvalue(v):
    if isinstance(v, dict) and len(v) == 1 and "$b64" in v:
        return base64.b64decode(v["$b64"])
    return v


class Rows(list):
    """Rows of one statement (a list of ``{column: value}`` dicts) with ``rowcount`` and
    ``last_row_id`` (SQLite's ``lastrowid``; ``None`` on PostgreSQL: use ``RETURNING``)."""

    rowcount = -1
    last_row_id = None


def _rows(result):
    rows = Rows({k: _unvalue(v) for k, v in r.items()} for r in result["rows"])
    rows.rowcount = result.get("rowcount", -1)
    rows.last_row_id = result.get("last_row_id")
    return rows


class SQL:
    """A SQL database: ``await execute(sql, params=())`` -> :class:`Rows` (one statement,
    ``?`` placeholders, its own transaction); ``await batch([(sql, params), ...])`` -> a list of
    :class:`Rows`, all statements in one transaction (all or nothing)."""

    def __init__(self, name):
        self.name = name

    async def execute(self, sql, params=()):
        _, body = await _call(self.name, "execute",
                              {"sql": sql, "params": [_param(p) for p in params]})
        return _rows(json.loads(body))

    async def batch(self, statements):
        items = []
        for st in statements:
            sql, params = (st, ()) if isinstance(st, str) else (st[0], st[1] if len(st) > 1 else ())
            items.append([sql, [_param(p) for p in params]])
        _, body = await _call(self.name, "batch", {"statements": items})
        return [_rows(r) for r in json.loads(body)]

    def __repr__(self):
        return f"<SQL binding {self.name}>"


class Object:
    """An object being read: ``key``, ``size``, ``etag`` (sha256 hex), ``uploaded``;
    ``async for chunk in obj`` streams it (1 MiB per host call), ``await obj.read()`` /
    ``await obj.text()`` return all of it."""

    def __init__(self, binding, head, first):
        self.binding = binding
        self.key, self.size = head["key"], head["size"]
        self.etag, self.uploaded = head["etag"], head["uploaded"]
        self._first = first

    async def chunks(self):
        first, self._first = self._first, None
        if first is None:
            first = await self._part(0)
        yield first
        offset = len(first)
        while offset < self.size:
            part = await self._part(offset)
            if not part:
                break
            offset += len(part)
            yield part

    def __aiter__(self):
        return self.chunks()

    async def _part(self, offset):
        result, body = await _call(self.binding, "get",
                                   {"key": self.key, "offset": offset, "length": CHUNK})
        if not result.get("found") or result.get("etag") != self.etag:
            raise _pyworkers_serve.BindingError(f"object {self.key!r} changed while being read")
        return body

    async def read(self):
        return b"".join([c async for c in self.chunks()])

    async def text(self):
        return (await self.read()).decode("utf-8")

    def __repr__(self):
        return f"<Object {self.key!r} {self.size} bytes>"


class Objects:
    """An object bucket: ``await put(key, value)`` (str, bytes or an async iterator of
    str/bytes) -> head dict; ``await get(key)`` -> :class:`Object` or ``None``;
    ``await head(key)`` -> ``{"key", "size", "etag", "uploaded"}`` or ``None``;
    ``await delete(key)``; ``await list(prefix="", cursor=None, limit=1000)`` ->
    ``{"objects": [head...], "cursor": str | None}``."""

    def __init__(self, name):
        self.name = name

    async def put(self, key, value):
        if isinstance(value, (str, bytes, bytearray, memoryview)):
            data = _bytes(value, "object value")
            if len(data) <= CHUNK:
                result, _ = await _call(self.name, "put", {"key": key}, data)
                return result

            async def pieces():
                view = memoryview(data)
                for i in range(0, len(view), CHUNK):
                    yield view[i:i + CHUNK]

            return await self._stream(key, pieces())
        if hasattr(value, "__aiter__"):
            return await self._stream(key, value)
        raise TypeError(f"object value must be str, bytes or an async iterator, got "
                        f"{type(value).__name__}")

    async def _stream(self, key, chunks):
        result, _ = await _call(self.name, "put_begin", {"key": key})
        upload = result["upload"]
        try:
            buf = bytearray()
            async for piece in chunks:
                buf += _bytes(piece, "object chunk")
                while len(buf) >= CHUNK:
                    await _call(self.name, "put_part", {"upload": upload}, bytes(buf[:CHUNK]))
                    del buf[:CHUNK]
            if buf:
                await _call(self.name, "put_part", {"upload": upload}, bytes(buf))
        except BaseException:
            try:
                await _call(self.name, "put_abort", {"upload": upload})
            except Exception:  # noqa: BLE001 - the original error matters
                pass
            raise
        result, _ = await _call(self.name, "put_end", {"upload": upload})
        return result

    async def get(self, key):
        result, body = await _call(self.name, "get", {"key": key, "offset": 0, "length": CHUNK})
        if not result.get("found"):
            return None
        return Object(self.name, result, body)

    async def head(self, key):
        result, _ = await _call(self.name, "head", {"key": key})
        return result

    async def delete(self, key):
        await _call(self.name, "delete", {"key": key})

    async def list(self, prefix="", cursor=None, limit=1000):
        result, _ = await _call(self.name, "list",
                                {"prefix": prefix, "cursor": cursor, "limit": limit})
        return result

    def __repr__(self):
        return f"<Objects binding {self.name}>"


_KINDS = {"kv": KV, "sql": SQL, "objects": Objects}


class Env:
    """The worker's bindings (objects), vars and secrets (strings) by attribute; ``name in
    env`` and ``dir(env)`` list them. Resolved at each access from the running server, so the
    object may be created or imported before serving starts."""

    def _server(self):
        return _pyworkers_serve.current()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        srv = self._server()
        if srv is None:
            raise AttributeError(f"env.{name}: bindings, vars and secrets are only available "
                                 "while served by pyworkers serve")
        cache = srv.__dict__.setdefault("_env_objects", {})
        if name in cache:
            return cache[name]
        for b in srv.bindings:
            if b.get("name") == name and b.get("kind") in _KINDS:
                obj = cache[name] = _KINDS[b["kind"]](name)
                return obj
        if name in srv.environ:
            return srv.environ[name]
        raise AttributeError(f"env.{name}: no binding, var or secret named {name!r} (have: "
                             + (", ".join(sorted(self._names())) or "none") + ")")

    def _names(self):
        srv = self._server()
        if srv is None:
            return []
        return [b["name"] for b in srv.bindings] + list(srv.environ)

    def __contains__(self, name):
        return name in self._names()

    def __dir__(self):
        return sorted(self._names())

    def __repr__(self):
        return f"<pyworkers env: {', '.join(sorted(self._names())) or 'empty'}>"


env = Env()
