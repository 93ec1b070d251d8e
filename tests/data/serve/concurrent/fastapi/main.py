"""FastAPI app for the concurrency tests that need Starlette (tests/test_serve_concurrency.py).

Module-level state lives as long as the isolate (``TOKEN`` names it); with ``--max-isolates 1``
a second request reads what a background job left there.

- ``/sleep?s=0.5``: ``async def``, awaits ``asyncio.sleep(s)``;
- ``/background?id=X&s=1``: answers at once; a Starlette ``BackgroundTasks`` ``async`` task
  sleeps ``s`` then sets ``JOBS[X] = "done"``;
- ``/background-sync?id=X&s=2``: the same with a ``def`` task that blocks in ``time.sleep(s)``
  (Starlette runs it after the response was sent);
- ``/create-task?id=X&s=1``: ``asyncio.create_task`` job, as ``waitUntil`` in Workers;
- ``/jobs?id=X``: ``{"state": ..., "token": ...}`` (``pending``/``done``/``unknown``);
- ``/state``: lifespan state shared by the requests of an isolate (a hit counter).
"""
import asyncio
import os
import time
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, FastAPI, Request

TOKEN = os.urandom(8).hex()
JOBS: dict[str, str] = {}
TASKS: set = set()


@asynccontextmanager
async def lifespan(app):
    yield {"hits": [0]}


app = FastAPI(lifespan=lifespan)


@app.get("/sleep")
async def sleep(s: float = 0.5):
    await asyncio.sleep(s)
    return {"token": TOKEN}


async def async_job(jid: str, s: float):
    await asyncio.sleep(s)
    JOBS[jid] = "done"


def sync_job(jid: str, s: float):
    time.sleep(s)
    JOBS[jid] = "done"


@app.get("/background")
async def background(id: str, tasks: BackgroundTasks, s: float = 1.0):
    JOBS[id] = "pending"
    tasks.add_task(async_job, id, s)
    return {"queued": id, "token": TOKEN}


@app.get("/background-sync")
async def background_sync(id: str, tasks: BackgroundTasks, s: float = 2.0):
    JOBS[id] = "pending"
    tasks.add_task(sync_job, id, s)
    return {"queued": id, "token": TOKEN}


@app.get("/create-task")
async def create_task(id: str, s: float = 1.0):
    JOBS[id] = "pending"
    task = asyncio.create_task(async_job(id, s))
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)
    return {"queued": id, "token": TOKEN}


@app.get("/jobs")
async def jobs(id: str):
    return {"state": JOBS.get(id, "unknown"), "token": TOKEN}


@app.get("/state")
async def state(request: Request):
    request.state.hits[0] += 1
    mine = request.state.hits[0]
    await asyncio.sleep(0.05)  # the other requests run meanwhile
    return {"hits": mine, "token": TOKEN}
