"""A FastAPI app that exercises what real apps use: fastapi, pydantic and httpx.

Endpoints:

* ``GET /``                     -> index of the endpoints
* ``GET /items?q=&limit=``      -> query parameters (``limit`` validated: 1..100)
* ``GET /items/{item_id}``      -> path parameter (int); 404 for an unknown id
* ``POST /items``               -> JSON body validated by a pydantic model; 201 with the item;
                                   a bad body (``price <= 0``, empty name) -> 422
* ``GET /price?value=``         -> pydantic ``TypeAdapter`` validation inside the handler; a
                                   ``ValidationError`` becomes a 422 through an exception handler
* ``GET /stream?n=``            -> ``StreamingResponse`` of ``n`` lines from an async generator
* ``GET /sync/sum?a=&b=``       -> a plain ``def`` endpoint
* ``GET /self``                 -> httpx: an ``AsyncClient`` calls this app in-process through
                                   ``httpx.ASGITransport`` (no network) and reports what it got

Deploy with ``pyworkers deploy examples/fastapi-full``; run natively with ``uvicorn main:app``.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, PositiveFloat, TypeAdapter, ValidationError

app = FastAPI(title="fastapi-full", version="1.0")


class ItemIn(BaseModel):
    """What a client sends to create an item."""

    name: str = Field(min_length=1, max_length=50)
    price: float = Field(gt=0, description="price in euros, > 0")
    tags: list[str] = Field(default_factory=list, max_length=10)


class Item(ItemIn):
    """A stored item."""

    id: int


# Built at top level, so it is part of the deployment's snapshot.
ITEMS: dict[int, Item] = {
    1: Item(id=1, name="hammer", price=12.5, tags=["tools"]),
    2: Item(id=2, name="nails", price=3.0, tags=["tools", "small"]),
    3: Item(id=3, name="paint", price=20.0),
}
_PRICE = TypeAdapter(PositiveFloat)


@app.exception_handler(ValidationError)
async def validation_error(request: Request, exc: ValidationError) -> JSONResponse:
    """A pydantic ``ValidationError`` raised in a handler -> 422 with pydantic's errors."""
    return JSONResponse(status_code=422, content={
        "detail": exc.errors(include_url=False, include_context=False, include_input=True)})


@app.get("/")
async def index() -> dict:
    """The endpoints of this app."""
    return {"app": app.title, "endpoints": sorted({r.path for r in app.routes
                                                    if not r.path.startswith(("/docs", "/redoc",
                                                                              "/openapi"))})}


@app.get("/items")
async def list_items(q: str | None = Query(None, max_length=50),
                     limit: int = Query(10, ge=1, le=100)) -> list[Item]:
    """Items whose name contains ``q`` (all without it), at most ``limit``."""
    found = [i for i in ITEMS.values() if q is None or q.lower() in i.name.lower()]
    return found[:limit]


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> Item:
    """One item; 404 if there is none with that id."""
    item = ITEMS.get(item_id)
    if item is None:
        raise HTTPException(status_code=404, detail=f"no item {item_id}")
    return item


@app.post("/items", status_code=201)
async def create_item(body: ItemIn) -> Item:
    """Create an item (the body is validated: 422 on a bad one)."""
    item = Item(id=max(ITEMS, default=0) + 1, **body.model_dump())
    ITEMS[item.id] = item
    return item


@app.get("/price")
async def parse_price(value: str) -> dict:
    """Validate ``value`` as a positive number in the handler (``ValidationError`` -> 422)."""
    return {"price": _PRICE.validate_python(value, strict=False)}


@app.get("/stream")
async def stream(n: int = Query(5, ge=0, le=1000)) -> StreamingResponse:
    """``n`` lines, sent as they are produced."""
    async def lines() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"line {i}\n".encode()

    return StreamingResponse(lines(), media_type="text/plain")


@app.get("/sync/sum")
def sync_sum(a: int, b: int) -> dict:
    """A plain ``def`` endpoint (Starlette runs these off the event loop)."""
    return {"a": a, "b": b, "sum": a + b}


@app.get("/self")
async def self_call() -> dict:
    """Use httpx to call this app in-process (``ASGITransport``: no network)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        r = await client.get("/items/1")
    return {"status": r.status_code, "item": r.json(), "httpx": httpx.__version__}
