"""Proxying workload for ``pyworkers bench proxy`` (issue 12): plain ASGI plus ``httpx``, so the
very same file runs under ``pyworkers serve`` and under native uvicorn.

``GET /?upstream=HOST:PORT`` fetches ``http://HOST:PORT/`` with one shared
``httpx.AsyncClient`` (made at lifespan startup, closed at shutdown; it keeps upstream
connections alive between requests) and answers with the upstream's status and body
(``Content-Length`` set). ``GET /httpx-version`` answers ``httpx.__version__`` (the benchmark
records which httpx each server ran). Anything else answers 404.
"""
from urllib.parse import parse_qs

import httpx

_client: httpx.AsyncClient | None = None


def _get_client() -> httpx.AsyncClient:
    global _client
    if _client is None:  # a server that skips lifespan still works
        _client = httpx.AsyncClient(timeout=30,
                                    limits=httpx.Limits(max_connections=100,
                                                        max_keepalive_connections=100))
    return _client


async def app(scope, receive, send):
    global _client
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            if kind == "startup":
                _get_client()
            elif _client is not None:
                await _client.aclose()
                _client = None
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] != "http":
        return
    path = scope["path"][len(scope.get("root_path", "")):]
    upstream = parse_qs(scope["query_string"].decode()).get("upstream")
    if path == "/httpx-version":
        status, body = 200, httpx.__version__.encode()
    elif path != "/" or not upstream:
        status, body = 404, b"GET /?upstream=HOST:PORT\n"
    else:
        r = await _get_client().get(f"http://{upstream[0]}/")
        status, body = r.status_code, r.content
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
