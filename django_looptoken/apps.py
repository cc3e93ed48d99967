"""The Django app: checks registered, the loop started when AUTOSTART is on.

Servers (gunicorn, uWSGI, waitress, uvicorn, daphne, runserver's serving
child, any process that is not a management command) start the loop at
load. A management command that is not a server (``migrate``, ``shell``,
``check``...) starts nothing at load: the loop starts when its code first
needs it, and then takes the app's token as a server's would.
"""

import logging
import os
import sys

from django.apps import AppConfig
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

logger = logging.getLogger("django_looptoken")

#: Management commands that serve requests: they start the loop at load.
SERVER_COMMANDS = frozenset({"runserver", "testserver", "runserver_plus", "runmodwsgi"})


def is_autoreloader_parent() -> bool:
    """Whether this process is ``runserver``'s file watcher, which only restarts
    the serving child (started with ``RUN_MAIN=true``) and serves nothing."""
    argv = sys.argv
    return (
        len(argv) > 1
        and argv[1] == "runserver"
        and "--noreload" not in argv
        and os.environ.get(DJANGO_AUTORELOAD_ENV) != "true"
    )


def running_command() -> str | None:
    """The management command this process loads the apps for (``"migrate"``),
    or None outside ``manage.py`` / ``django-admin`` / ``python -m django``.

    Found as Django's ``ManagementUtility.execute`` on the calling stack, which
    sets up Django before it runs the command: unlike ``sys.argv``, that does
    not depend on how the script is named or what a server's arguments are.
    """
    from django.core.management import ManagementUtility

    execute = ManagementUtility.execute.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is execute:
            subcommand = frame.f_locals.get("subcommand")
            return subcommand if isinstance(subcommand, str) else "help"
        frame = frame.f_back  # type: ignore[assignment]
    return None


class LoopTokenConfig(AppConfig):
    """Starts the shared loop and holds the app's token (``AUTOSTART``)."""

    name = "django_looptoken"
    verbose_name = "Loop token"

    def ready(self) -> None:
        """Register the checks; start the loop unless the settings forbid it."""
        from django_looptoken import (  # noqa: F401
            _async_views,
            _process_role,
            _reloader,
            _signal_hooks,
            checks,
        )
        from django_looptoken._runtime import runtime
        from django_looptoken.conf import looptoken_settings

        if "celery" in sys.modules:  # a Celery worker imports it before Django's setup
            from django_looptoken import _celery

            _celery.connect()
        invalid = looptoken_settings.invalid_text()
        if invalid is not None:
            # Never crash a worker at import, never fail pages that do not use
            # the loop: say once what is wrong and start nothing, whatever
            # AUTOSTART says. Each use of the loop raises the same text.
            logger.error("%s", invalid)
            return
        if is_autoreloader_parent():
            logger.debug("runserver's autoreloader: the loop starts in the serving child.")
            _reloader.wait_for_draining_children()
            return
        if not looptoken_settings.AUTOSTART:
            return
        if _process_role.is_uwsgi_master():
            # It forks the workers and serves nothing; its exit runs no Python
            # (uWSGI's master skips atexit hooks), so a loop here could never
            # drain. Each worker takes the app's token right after its fork.
            logger.debug("uWSGI master: the loop starts in each worker after the fork.")
            runtime().leave_app_token_to_forked_workers()
            _signal_hooks.install()
            return
        command = running_command()
        if command is not None and command not in SERVER_COMMANDS:
            logger.debug("Management command %r: the loop starts when first needed.", command)
            runtime().lifecycle_level = logging.DEBUG  # news in a server, not in a command
            runtime().hold_app_token_at_first_start(_signal_hooks.install)
            return
        runtime().hold_app_token()
        _signal_hooks.install()
