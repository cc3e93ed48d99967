"""An RQ worker whose work horses drain the shared loop before they exit.

RQ's default worker forks a work horse per job and ends it with
``os._exit()``, which runs no exit hook: work a job left in
``shutdown_waits_for`` would be lost. Run this one instead::

    rq worker --worker-class django_looptoken.rq.Worker

Each horse is a new process, so nothing is pooled across jobs; for pooled
clients run jobs in the worker's own process (``rq.SimpleWorker``), which
drains at exit as any process does.
"""

from __future__ import annotations

from typing import Any

import rq

from django_looptoken import _process_hooks

__all__ = ["Worker"]


class Worker(rq.Worker):
    """RQ's forking worker; each work horse drains its loop after its job."""

    def perform_job(self, *args: Any, **kwargs: Any) -> bool:
        """Run the job; in a work horse, then drain the loop (``SHUTDOWN_TIMEOUT``)."""
        try:
            return bool(super().perform_job(*args, **kwargs))
        finally:
            if self.is_horse:
                _process_hooks.drain_at_exit()
