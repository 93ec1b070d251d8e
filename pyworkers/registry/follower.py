"""Following a registry: keep a local store's workers at the deployments their tags name.

A node serving workers ``hello`` and ``api`` from ``oci://HOST/REPO`` polls the tags
``REPO:hello`` and ``REPO:api`` (``HEAD`` of the manifest: one small request per worker and
interval). When a tag points at a new manifest, the follower pulls that deployment into the
local store (every blob verified, the snapshot's image module compiled, published atomically:
:func:`pyworkers.registry.artifact.pull_deployment`) and makes it current with the store's own
API (:meth:`Store.publish` for a new deployment, :meth:`Store.rollback` for one the store
already has, e.g. after the tag was moved back). The serve process's store watcher then switches
its pool as it does after a local ``pyworkers deploy``.

The tag is authoritative: a worker whose current deployment was changed locally (a
``pyworkers deployments rollback`` on the node) is set back to the tag's deployment on the next
poll. When the registry cannot be reached, nothing local changes: the node keeps serving what it has
and :meth:`RegistryFollower.status` reports the error; ``ready`` is false only for a worker
with no deployment at all.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pyworkers.registry.client import RegistryClient
from pyworkers.registry.errors import RegistryError
from pyworkers.registry.artifact import pull_deployment
from pyworkers.registry.reference import Reference
from pyworkers.store import Store, StoreError

__all__ = ["RegistryFollower"]

log = logging.getLogger("pyworkers.registry")


def _utc(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RegistryFollower:
    """Follows the tags ``workers`` of repository ``ref`` into ``store``.

    Args:
        store: the local deployment store.
        ref: the repository (``oci://HOST/REPO``; a tag or digest in it is ignored).
        workers: worker names; each follows the tag of the same name.
        interval: seconds between polls for :meth:`start` (default 10).
        client: a :class:`RegistryClient` for ``ref.host`` (default: one with the docker
            configuration's credentials and a ``timeout`` of the interval, within 5-30 s).
        cache_dir: the pyworkers cache (compiled image modules) for preparing snapshots.
        prepare: compile each pulled snapshot's image module before switching (default).
        on_change: called as ``on_change(worker, deployment_id)`` after a worker's current
            deployment was changed by the follower.

    Thread-safety: :meth:`poll_once` may be called directly (tests, a one-shot sync) or runs
    in the thread :meth:`start` creates; :meth:`status` may be read from any thread.
    """

    def __init__(self, store: Store, ref: Reference, workers: Sequence[str], *,
                 interval: float = 10.0, client: RegistryClient | None = None,
                 cache_dir: Any = None, prepare: bool = True,
                 on_change: Callable[[str, str], None] | None = None):
        if not workers:
            raise ValueError("RegistryFollower needs at least one worker name to follow")
        if interval <= 0:
            raise ValueError(f"interval must be positive seconds, got {interval}")
        self.store = store
        self.ref = ref.repo_only()
        self.workers = list(dict.fromkeys(workers))
        self.interval = float(interval)
        self._own_client = client is None
        self.client = client or RegistryClient(ref.host, timeout=max(5.0, min(self.interval, 30.0)))
        self.cache_dir = cache_dir
        self.prepare = prepare
        self.on_change = on_change
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[str, str] = {}  # worker -> manifest digest applied
        self._last_sync: float | None = None
        self._last_attempt: float | None = None
        self._last_error: str | None = None
        self._last_error_time: float | None = None
        self._failures = 0
        self._polls = 0
        self._pulls = 0
        self._switches = 0
        self._workers_state: dict[str, dict] = {w: {"tag": w, "digest": None, "deployment": None,
                                                    "error": None} for w in self.workers}

    # ------------------------------------------------------------------ polling
    def poll_once(self) -> dict[str, str | None]:
        """Check every worker's tag once; pull and switch where it moved.

        Returns ``{worker: deployment id now current, or None}``. Never raises for registry
        or store problems: they are recorded (see :meth:`status`) and the worker keeps its
        current deployment. A poll counts as a sync when every worker's tag was checked.
        """
        with self._poll_lock:
            t0 = time.time()
            errors: list[str] = []
            for w in self.workers:
                try:
                    self._poll_worker(w)
                    self._set_worker(w, error=None)
                except (RegistryError, StoreError, OSError) as e:
                    msg = f"{w}: {e}"
                    errors.append(msg)
                    self._set_worker(w, error=str(e))
                    log.warning("registry follower: %s", msg)
            with self._lock:
                self._polls += 1
                self._last_attempt = t0
                if errors:
                    self._failures += 1
                    self._last_error = "; ".join(errors)
                    self._last_error_time = time.time()
                else:
                    self._failures = 0
                    self._last_sync = time.time()
            return {w: self._current(w) for w in self.workers}

    def _current(self, w: str) -> str | None:
        try:
            return self.store.current_id(w)
        except StoreError:
            return None

    def _set_worker(self, w: str, **kw: Any) -> None:
        with self._lock:
            self._workers_state[w].update(kw)

    def _poll_worker(self, w: str) -> None:
        digest = self.client.head_manifest(self.ref.repository, w)
        if digest is None:
            self._set_worker(w, digest=None, deployment=self._current(w))
            raise RegistryError(f"{self.ref.with_tag(w)} does not exist (push a deployment of "
                                f"{w!r}: pyworkers push {w} {self.ref})")
        if self._seen.get(w) == digest and self._current(w) == self._workers_state[w]["deployment"]:
            return
        before = self._current(w)
        res = pull_deployment(self.client, dataclasses.replace(self.ref, digest=digest),
                              self.store, make_current=True, prepare=self.prepare,
                              cache_dir=self.cache_dir, expect_name=w)
        self._seen[w] = digest
        now = self._current(w)
        self._set_worker(w, digest=digest, deployment=now)
        with self._lock:
            self._pulls += int(res.pulled)
            if now != before:
                self._switches += 1
        if now != before:
            log.info("registry follower: %s -> %s (%s)", w, now, digest)
            if self.on_change:
                self.on_change(w, now)

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        """Poll now and then every ``interval`` seconds in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pyworkers-registry-follower",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # a bug must not end the thread silently
                log.exception("registry follower: poll failed")
            self._stop.wait(self.interval)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the thread (waits up to ``timeout`` s for a poll in progress) and close the
        client if the follower made it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._own_client:
            self.client.close()

    # ------------------------------------------------------------------ status
    @property
    def has_deployment(self) -> bool:
        """Whether every followed worker has a current deployment in the local store (what
        readiness needs; true also while the registry is unreachable)."""
        return all(self._current(w) is not None for w in self.workers)

    @property
    def last_sync(self) -> float | None:
        """Unix time of the last poll that checked every tag, or ``None``."""
        with self._lock:
            return self._last_sync

    @property
    def last_error(self) -> str | None:
        """The last poll's error (one line per failing worker, ``; ``-joined), ``None`` after a
        clean poll."""
        with self._lock:
            return None if self._failures == 0 else self._last_error

    def status(self) -> dict:
        """A snapshot for readiness and metrics::

            {"registry": "oci://host/repo", "interval_s": float, "ok": bool,
             "has_deployment": bool, "last_sync": unix s | None, "last_sync_utc": str | None,
             "last_attempt": unix s | None, "last_error": str | None,
             "last_error_time": unix s | None, "consecutive_failures": int,
             "polls": int, "pulls": int, "switches": int,
             "workers": {name: {"tag", "digest", "deployment", "error", "current"}}}
        """
        with self._lock:
            workers = {w: {**s, "current": None} for w, s in self._workers_state.items()}
            out = {"registry": str(self.ref), "interval_s": self.interval,
                   "ok": self._failures == 0 and self._last_sync is not None,
                   "last_sync": self._last_sync, "last_sync_utc": _utc(self._last_sync),
                   "last_attempt": self._last_attempt,
                   "last_error": None if self._failures == 0 else self._last_error,
                   "last_error_time": self._last_error_time,
                   "consecutive_failures": self._failures, "polls": self._polls,
                   "pulls": self._pulls, "switches": self._switches}
        for w in workers:
            workers[w]["current"] = self._current(w)
        out["workers"] = workers
        out["has_deployment"] = all(v["current"] is not None for v in workers.values())
        return out
