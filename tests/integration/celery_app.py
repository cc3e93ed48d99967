"""A Celery app as a Django project writes it, for the worker tests: its
tasks leave protected work on the shared loop and say where they ran."""

from __future__ import annotations

import os

from celery import Celery

import django_looptoken as looptoken
from tests.integration.lifecycle_views import finish_later, mark

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.lifecycle_settings")

app = Celery("tests", broker=os.environ.get("LOOPTOKEN_TEST_BROKER", "redis://127.0.0.1:1/0"))
app.conf.update(
    broker_connection_retry_on_startup=False,
    worker_hijack_root_logger=False,  # the project's LOGGING shows the app's lines
    worker_prefetch_multiplier=1,
    task_acks_late=False,
)


@app.task
def leave_protected_work(name: str, seconds: float = 1.0) -> int:
    """Spawn work that writes marker ``done-<name>`` after ``seconds``, wrapped
    in ``shutdown_waits_for``; return at once with this process's pid."""
    mark(f"started-{name}")
    looptoken.spawn(looptoken.shutdown_waits_for(finish_later(name, seconds)))
    return os.getpid()
