"""A Celery app as a Django project writes it, for the worker tests: its
tasks leave protected work on the shared loop and say where they ran."""

from __future__ import annotations

import os

from celery import Celery

from tests.integration import task_jobs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.lifecycle_settings")

app = Celery("tests", broker=os.environ.get("LOOPTOKEN_TEST_BROKER", "redis://127.0.0.1:1/0"))
app.conf.update(
    broker_connection_retry_on_startup=False,
    worker_hijack_root_logger=False,  # the project's LOGGING shows the app's lines
    worker_prefetch_multiplier=1,
    task_acks_late=False,
    result_backend=os.environ.get("LOOPTOKEN_TEST_BROKER", "redis://127.0.0.1:1/0"),
)


leave_protected_work = app.task(name="leave_protected_work")(task_jobs.leave_protected_work)
fetch_peer = app.task(name="fetch_peer")(task_jobs.fetch_peer)
own_pid = app.task(name="own_pid")(task_jobs.own_pid)
