"""The Django app: checks registered, the loop started when AUTOSTART is on."""

import logging

from django.apps import AppConfig

logger = logging.getLogger("django_looptoken")


class LoopTokenConfig(AppConfig):
    """Starts the shared loop and holds the app's token (``AUTOSTART``)."""

    name = "django_looptoken"
    verbose_name = "Loop token"

    def ready(self) -> None:
        """Register the checks; start the loop unless the settings forbid it."""
        from django_looptoken import _async_views, checks  # noqa: F401 - connects its receiver
        from django_looptoken._runtime import runtime
        from django_looptoken.conf import looptoken_settings

        errors = checks.settings_errors()
        if errors:
            # Never crash a worker at import: say what is wrong and start nothing.
            for error in errors:
                logger.error("%s: %s (hint: %s)", error.id, error.msg, error.hint)
            return
        if looptoken_settings.AUTOSTART:
            runtime().hold_app_token()
