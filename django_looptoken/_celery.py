"""Celery's prefork pool: each child drains its loop before it exits.

billiard ends a pool process with ``os._exit()``, which runs no exit hook,
whether the worker stops (SIGTERM, ``celery control shutdown``) or recycles
the child (``--max-tasks-per-child``, ``--max-memory-per-child``). Celery
sends ``worker_process_shutdown`` in the child just before: the drain runs
there, so work wrapped in ``shutdown_waits_for`` finishes.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from django_looptoken import _process_hooks


def _drain_pool_process(**kwargs: Any) -> None:
    _process_hooks.drain_at_exit()


def connect() -> None:
    """Drain each prefork child's loop before billiard exits it."""
    signals.worker_process_shutdown.connect(
        _drain_pool_process, weak=False, dispatch_uid="django_looptoken.drain"
    )
