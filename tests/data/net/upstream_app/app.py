"""Calls an upstream HTTP server (``UPSTREAM`` = host:port, from the query string) with
``asyncio.open_connection`` and returns its body: an I/O-bound handler for the serve tests."""
import asyncio
from urllib.parse import parse_qs


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    q = parse_qs(scope["query_string"].decode())
    host, port = q["upstream"][0].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET / HTTP/1.0\r\nHost: upstream\r\n\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    body = data.split(b"\r\n\r\n", 1)[1]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
