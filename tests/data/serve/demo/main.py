"""Example FastAPI app served by the serve tests, in the sandbox and under native uvicorn.

Every endpoint but ``/state`` returns the same thing in both places (nothing depends on the
process, the thread or the port), so the tests compare responses byte for byte; ``/state``
names the isolate (a random token) so that the tests can group requests by isolate.
"""
import asyncio
import hashlib
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

# differs per process / isolate: only /state returns it (never compared with native)
TOKEN = os.urandom(8).hex()

@asynccontextmanager
async def lifespan(app):
    # state persists across the requests of one isolate (or one uvicorn process)
    yield {"hits": [0], "started": "lifespan ran"}


app = FastAPI(title="demo", version="1.0.0", lifespan=lifespan)


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: list[str] = []


@app.get("/")
async def root():
    return {"hello": "world", "greeting": os.environ.get("GREETING")}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item):
    return {"created": item.model_dump(), "total": round(item.price * 1.2, 2)}


@app.get("/sync")
def sync_endpoint(n: int = 10):
    # a `def` endpoint: Starlette would run it in a worker thread
    return {"sum": sum(range(n)), "kind": "def"}


@app.get("/stream")
async def stream(n: int = 5, delay: float = 0.3):
    async def gen():
        for i in range(n):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(delay)

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/stream-sync")
def stream_sync(n: int = 3):
    def gen():
        for i in range(n):
            yield f"sync chunk {i}\n"

    return StreamingResponse(gen(), media_type="text/plain")


@app.post("/upload")
async def upload(request: Request):
    h = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        h.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": h.hexdigest(),
            "content_type": request.headers.get("content-type")}


@app.get("/scope")
async def scope_view(request: Request):
    s = request.scope
    return {
        "type": s["type"], "asgi": s["asgi"], "http_version": s["http_version"],
        "method": s["method"], "scheme": s["scheme"], "path": s["path"],
        "raw_path": s["raw_path"].decode("latin-1"), "root_path": s["root_path"],
        "query_string": s["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in s["headers"]
                    if k in (b"x-test", b"accept", b"user-agent")],
        "client_host": s["client"][0], "server_host": s["server"][0],
        "url": str(request.url.replace(port=None)),
        "state_keys": sorted(s.get("state", {})),
    }


@app.get("/state")
async def state(request: Request):
    request.state.hits[0] += 1
    return {"hits": request.state.hits[0], "started": request.state.started, "isolate": TOKEN}


@app.get("/error")
async def error():
    raise RuntimeError("boom from the demo app")


@app.get("/text", response_class=PlainTextResponse)
async def text():
    return "plain text\n" * 3


@app.get("/big")
async def big(kb: int = 512):
    return PlainTextResponse("x" * (kb * 1024))
