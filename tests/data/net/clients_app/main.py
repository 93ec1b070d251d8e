"""A FastAPI app whose request handlers reach upstream servers with the usual client
libraries, unchanged: ``async def`` handlers use the asyncio clients (httpx.AsyncClient,
asyncio.open_connection with ssl=, websockets, redis.asyncio), ``def`` handlers the blocking
ones (httpx.Client, requests, urllib.request, http.client, redis, pg8000). The upstream comes
from the query string; errors are not caught (the server answers 500 and logs them)."""
import asyncio
import http.client
import os
import ssl
import urllib.parse
import urllib.request

import httpx
import pg8000.native
import redis
import redis.asyncio
import requests
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from websockets.asyncio.client import connect as ws_connect

app = FastAPI(title="clients")


@app.get("/")
async def root():
    return {"clients": ["httpx", "requests", "urllib", "http.client", "asyncio", "websockets",
                        "redis", "pg8000"]}


# ---------------------------------------------------------------------------------- HTTP(S)
@app.get("/httpx-async", response_class=PlainTextResponse)
async def httpx_async(url: str):
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(url)
        r.raise_for_status()
        return f"httpx.AsyncClient {r.http_version}: {r.text}"


@app.get("/httpx-sync", response_class=PlainTextResponse)
def httpx_sync(url: str):
    with httpx.Client(timeout=10) as c:
        r = c.post(url, content=b"posted by httpx.Client")
        r.raise_for_status()
        return f"httpx.Client: {r.text}"


@app.get("/requests", response_class=PlainTextResponse)
def requests_get(url: str):
    with requests.Session() as s:
        r = s.get(url, timeout=10)
        r.raise_for_status()
        return f"requests: {r.text}"


@app.get("/urllib", response_class=PlainTextResponse)
def urllib_get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return f"urllib.request {r.status}: {r.read().decode()}"


@app.get("/http-client", response_class=PlainTextResponse)
def http_client_get(host: str, port: int, path: str = "/", tls: bool = False):
    if tls:
        conn = http.client.HTTPSConnection(host, port, timeout=10,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return f"http.client {r.status}: {r.read().decode()}"
    finally:
        conn.close()


@app.get("/open-connection", response_class=PlainTextResponse)
async def open_connection(host: str, port: int, path: str = "/", tls: bool = False):
    ctx = ssl.create_default_context() if tls else None
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        version = writer.get_extra_info("ssl_object").version() if tls else "plain"
    finally:
        writer.close()
    head, body = data.split(b"\r\n\r\n", 1)
    return f"asyncio.open_connection {version} {head.split(b' ')[1].decode()}: {body.decode()}"


# ---------------------------------------------------------------------------------- WebSocket
@app.get("/websocket")
async def websocket(url: str, msg: str):
    async with ws_connect(url) as ws:
        replies = []
        for i in range(3):
            await ws.send(f"{msg} {i}")
            replies.append(await ws.recv())
    return {"replies": replies}


# ---------------------------------------------------------------------------------- Redis
@app.get("/redis-sync")
def redis_sync(port: int, key: str):
    r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        r.set(key, "set by redis-py")
        return {"get": r.get(key), "incr": [r.incr(key + ":n"), r.incr(key + ":n")]}
    finally:
        r.close()


@app.get("/redis-async")
async def redis_async(port: int, key: str):
    r = redis.asyncio.Redis(host="localhost", port=port, decode_responses=True)
    try:
        await r.delete(key)
        await r.rpush(key, "a", "b", "c")
        async with r.pipeline() as p:
            p.lrange(key, 0, -1).llen(key)
            items, n = await p.execute()
        return {"lrange": items, "llen": n}
    finally:
        await r.aclose()


# ---------------------------------------------------------------------------------- PostgreSQL
@app.get("/pg")
def pg(port: int, user: str, password: str, name: str):
    con = pg8000.native.Connection(user, host="127.0.0.1", port=port, password=password,
                                   database=os.environ["PG_DATABASE"], timeout=10)
    try:
        con.run("create temporary table t (id serial, name text)")
        con.run("insert into t (name) values (:n), (:n || '!')", n=name)
        rows = con.run("select id, name from t order by id")
        version = con.run("select current_setting('server_version_num')::int")[0][0]
    finally:
        con.close()
    return {"rows": rows, "server_version_num": version}
