"""A Django task (django-tasks, the backport of Django 6's tasks framework)
that is an async function run on the shared loop."""

from django_tasks import task

from tests.integration import task_jobs

fetch_peer = task()(task_jobs.fetch_peer)
