"""Server settings for the streaming tests (tests/integration/test_streaming_servers.py)."""

from tests.integration.server_settings import *  # noqa: F403

ROOT_URLCONF = "tests.integration.streaming_views"
LOGGING_CONFIG = "logging.config.dictConfig"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_looptoken": {"handlers": ["stderr"], "level": "WARNING"}},
}
ALLOWED_HOSTS = ["127.0.0.1"]  # runserver insists when DEBUG is off
