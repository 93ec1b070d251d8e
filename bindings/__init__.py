"""Secrets, bindings (KV, SQL, objects) and cron triggers of deployed workers: the host side.

Everything here runs on the host; the guest sees bindings through ``request.scope["env"]`` /
``pyworkers_env.env`` (``runtime/guest/pyworkers_env.py``), whose every operation is a host call
(``G_CALL``/``H_REPLY`` frames, :class:`pyworkers.serve.worker.BindingHost`).

- :mod:`~pyworkers.bindings.secrets`: per-worker secrets in the store (``0600``);
- :mod:`~pyworkers.bindings.spec`: the ``[[kv]]``/``[[sql]]``/``[[objects]]``/``[[crons]]``
  declarations (parsed by :mod:`pyworkers.config`, kept in the deployment record);
- :mod:`~pyworkers.bindings.kv`, :mod:`~pyworkers.bindings.sql`,
  :mod:`~pyworkers.bindings.objects`: the backends (embedded SQLite / directory defaults,
  Redis, PostgreSQL);
- :mod:`~pyworkers.bindings.host`: :class:`WorkerBindings`, one worker's bindings as a
  ``BindingHost``; :func:`check_reachable` (deploy);
- :mod:`~pyworkers.bindings.cron`: :class:`CronRunner`, scheduled POSTs while served.

Where data lives (store root ``<store>``)::

    <store>/secrets/<worker>.json          secrets (0600, directory 0700)
    <store>/data/<worker>/kv/<binding>.sqlite3
    <store>/data/<worker>/sql/<binding>.sqlite3
    <store>/data/<worker>/objects/<binding>/
"""
from __future__ import annotations


class BindingsError(Exception):
    """Root error of this package: a secret, binding or cron problem the user can act on
    (``str(e)`` is one line naming what and the fix)."""


__all__ = ["BindingsError"]
