"""Cron triggers: while ``pyworkers serve`` serves a worker, each of its ``[[crons]]``
(``schedule``, ``path``) gets an internal ``POST path`` at every scheduled time.

- Schedules are cron expressions parsed by croniter (https://github.com/kiorky/croniter):
  five fields, minute hour day-of-month month day-of-week, in UTC; croniter's optional sixth
  field (seconds) is accepted too.
- The request carries ``x-pyworkers-cron: <schedule>`` and a JSON body
  ``{"schedule", "path", "scheduled_time": "<UTC ISO 8601>"}``; its status is logged.
- A trigger whose previous run is still going is skipped for that time (logged): two runs of
  one trigger never overlap. Times missed while the server was down (or while the trigger was
  running) are not caught up: after each run the next time is computed from *now*, and a time
  noticed over a minute late is logged as missed.
- The triggers are read from the pools at each tick, so a redeploy that changes them takes
  effect within one tick.

The clock is injectable (``clock() -> epoch seconds``, ``sleep(seconds)``) for tests.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import time
from typing import Any, Awaitable, Callable

log = logging.getLogger("pyworkers.serve")

#: ``send(worker, path, headers, body) -> HTTP status``
Sender = Callable[[str, str, list, bytes], Awaitable[int]]


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_time(schedule: str, after: float) -> float:
    """The first time strictly after ``after`` (epoch seconds) that ``schedule`` names."""
    from croniter import croniter

    start = _dt.datetime.fromtimestamp(after, _dt.timezone.utc)
    return croniter(schedule, start).get_next(float)


class CronRunner:
    """Fires the cron triggers of served workers (see the module docstring).

    ``triggers() -> {worker: [{"schedule", "path"}]}`` is read at each tick; ``send`` makes
    the request (:func:`asgi_sender` for a :class:`pyworkers.serve.ServerApp`). ``tick``:
    longest sleep between checks (seconds); a due time noticed more than ``grace`` seconds
    late (a stalled loop, a suspended machine) is logged as missed and not run."""

    def __init__(self, triggers: Callable[[], dict[str, list[dict]]], send: Sender, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, tick: float = 1.0,
                 grace: float = 60.0):
        self.triggers = triggers
        self.send = send
        self.clock = clock
        self.sleep = sleep
        self.tick = tick
        self.due: dict[tuple[str, str, str], float] = {}
        self.running: dict[tuple[str, str, str], asyncio.Task] = {}
        #: (worker, schedule, path, scheduled time, status or error) of finished runs
        self.history: list[tuple[str, str, str, float, Any]] = []
        self.skipped = 0
        #: due times found more than ``grace`` seconds late (not run)
        self.missed = 0
        self.grace = grace

    async def run(self) -> None:
        """Check forever (cancel to stop)."""
        while True:
            wait = self.check()
            await self.sleep(max(0.0, min(self.tick, wait)))

    def check(self) -> float:
        """Fire what is due now; returns the seconds until the next due time."""
        now = self.clock()
        live = set()
        for worker, specs in self.triggers().items():
            for spec in specs:
                key = (worker, spec["schedule"], spec["path"])
                live.add(key)
                if key not in self.due:  # newly served: the first time after now
                    self.due[key] = next_time(spec["schedule"], now)
                    continue
                if now < self.due[key]:
                    continue
                at = self.due[key]
                self.due[key] = next_time(spec["schedule"], now)  # no catch-up
                if now - at > self.grace:  # the loop was stalled (suspended host, ...)
                    self.missed += 1
                    log.warning("[%s] cron %r %s at %s missed (%.0f s late): not run",
                                worker, spec["schedule"], spec["path"], _iso(at), now - at)
                    continue
                task = self.running.get(key)
                if task is not None and not task.done():
                    self.skipped += 1
                    log.warning("[%s] cron %r %s at %s skipped: the previous run is still "
                                "going", worker, spec["schedule"], spec["path"], _iso(at))
                    continue
                self.running[key] = asyncio.ensure_future(self._fire(key, at))
        for key in list(self.due):
            if key not in live:
                del self.due[key]
        return min((t - now for t in self.due.values()), default=self.tick)

    async def _fire(self, key: tuple[str, str, str], at: float) -> None:
        worker, schedule, path = key
        body = json.dumps({"schedule": schedule, "path": path,
                           "scheduled_time": _iso(at)}).encode()
        headers = [(b"x-pyworkers-cron", schedule.encode()),
                   (b"content-type", b"application/json")]
        t0 = time.monotonic()
        try:
            status: Any = await self.send(worker, path, headers, body)
            level = logging.INFO if 200 <= int(status) < 400 else logging.ERROR
            log.log(level, "[%s] cron %r POST %s (scheduled %s) -> %s in %.0f ms", worker,
                    schedule, path, _iso(at), status, (time.monotonic() - t0) * 1000)
        except Exception as e:  # noqa: BLE001 - logged; the next time runs anyway
            status = f"{type(e).__name__}: {e}"
            log.error("[%s] cron %r POST %s (scheduled %s) failed: %s", worker, schedule, path,
                      _iso(at), status)
        self.history.append((worker, schedule, path, at, status))
        del self.history[:-100]


def asgi_sender(app) -> Sender:
    """A :data:`Sender` that calls the ASGI ``app`` (``ServerApp``) directly with an internal
    request for ``<worker>.localhost`` (no socket); returns the response status."""

    async def send(worker: str, path: str, headers: list, body: bytes) -> int:
        only, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "method": "POST", "scheme": "http", "path": only,
                 "raw_path": only.encode(), "root_path": "", "query_string": query.encode(),
                 "headers": [(b"host", f"{worker}.localhost".encode()),
                             (b"content-length", str(len(body)).encode()), *headers],
                 "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}
        sent = {"body": False, "status": 500}

        async def receive() -> dict:
            if not sent["body"]:
                sent["body"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect until the response is done
            return {"type": "http.disconnect"}

        async def send_(message: dict) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]

        await app(scope, receive, send_)
        return sent["status"]

    return send


def pool_triggers(app) -> Callable[[], dict[str, list[dict]]]:
    """``triggers()`` for a ``ServerApp``: the ``crons`` of each pool's current factory
    (set by :func:`pyworkers.serve.targets.with_platform`)."""

    def triggers() -> dict[str, list[dict]]:
        return {name: list(getattr(pool.factory, "crons", None) or ())
                for name, pool in app.pools.items() if not pool.closed}

    return triggers


__all__ = ["CronRunner", "asgi_sender", "next_time", "pool_triggers"]
