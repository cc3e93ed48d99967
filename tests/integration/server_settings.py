"""The base of every real server's settings: the test settings with the loop
started by the app, as deployed, and the app's log lines on stderr (where the
tests read them). The other ``*_settings`` modules here each override a few
names of this one."""

from typing import Any

from tests.settings import *  # noqa: F403

LOOPTOKEN: dict[str, Any] = {"SHUTDOWN_TIMEOUT": 5.0}  # AUTOSTART on, as deployed
ROOT_URLCONF = "tests.integration.urls"
ALLOWED_HOSTS = ["127.0.0.1"]  # runserver and the login page check the Host header


def looptoken_logging(level: str, line: str = "%(message)s") -> dict[str, Any]:
    """``LOGGING`` that writes the app's records from ``level`` up to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": line}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line"}},
        "loggers": {"django_looptoken": {"handlers": ["stderr"], "level": level}},
    }


LOGGING_CONFIG = "logging.config.dictConfig"
LOGGING = looptoken_logging("WARNING")
