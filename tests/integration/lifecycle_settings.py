"""Server settings for the lifecycle tests: timeout from the environment, loop logs shown."""

import os

from tests.integration.server_settings import *  # noqa: F403

LOOPTOKEN = {"SHUTDOWN_TIMEOUT": float(os.environ.get("LOOPTOKEN_TEST_SHUTDOWN_TIMEOUT", "5"))}
ROOT_URLCONF = "tests.integration.lifecycle_urls"
LOGGING_CONFIG = "logging.config.dictConfig"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_looptoken": {"handlers": ["stderr"], "level": "INFO"}},
}
ALLOWED_HOSTS = ["127.0.0.1"]  # runserver insists when DEBUG is off
