"""The smallest pyworkers app: one FastAPI route.

Deploy it with ``pyworkers deploy examples/hello``; run it natively with
``uvicorn main:app`` from this directory.
"""
import os

from fastapi import FastAPI

app = FastAPI(title="hello")


@app.get("/")
async def root() -> dict:
    """``{"message": "Hello from pyworkers!"}`` (the greeting comes from the GREETING var)."""
    return {"message": f"{os.environ.get('GREETING', 'Hello')} from pyworkers!"}


@app.get("/hello/{name}")
async def hello(name: str) -> dict:
    """Greets ``name``."""
    return {"message": f"{os.environ.get('GREETING', 'Hello')}, {name}!"}
