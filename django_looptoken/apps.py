"""The Django app: checks registered, the loop started when AUTOSTART is on."""

import logging
import os
import sys

from django.apps import AppConfig
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

logger = logging.getLogger("django_looptoken")


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


class LoopTokenConfig(AppConfig):
    """Starts the shared loop and holds the app's token (``AUTOSTART``)."""

    name = "django_looptoken"
    verbose_name = "Loop token"

    def ready(self) -> None:
        """Register the checks; start the loop unless the settings forbid it."""
        from django_looptoken import _async_views, _reloader, _signal_hooks, checks  # noqa: F401
        from django_looptoken._runtime import runtime
        from django_looptoken.conf import looptoken_settings

        errors = checks.settings_errors()
        if errors:
            # Never crash a worker at import: say what is wrong and start nothing.
            for error in errors:
                logger.error("%s: %s (hint: %s)", error.id, error.msg, error.hint)
            return
        if is_autoreloader_parent():
            logger.debug("runserver's autoreloader: the loop starts in the serving child.")
            _reloader.wait_for_draining_children()
            return
        if not looptoken_settings.AUTOSTART:
            return
        runtime().hold_app_token()
        _signal_hooks.install()
