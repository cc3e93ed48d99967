"""Settings for the status tests under real servers.

The server settings, with the status sockets (and, when given, the database)
in the test's own ``tmp_path``, and what a default project has for the
status page: templates, and the admin with its login page. The loops record
a history point every ``$LOOPTOKEN_TEST_HISTORY_STEP`` seconds instead of
ten, so the page's charts fill within a test.
"""

import os

from tests.integration.server_settings import *  # noqa: F403
from tests.integration.server_settings import INSTALLED_APPS, LOOPTOKEN, MIDDLEWARE

LOOPTOKEN = {
    **LOOPTOKEN,
    "STATUS_DIR": os.environ["LOOPTOKEN_TEST_STATUS_DIR"],
    "METRICS_TOKEN": os.environ.get("LOOPTOKEN_TEST_METRICS_TOKEN"),
}
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.messages", *INSTALLED_APPS]
MIDDLEWARE = [*MIDDLEWARE, "django.contrib.messages.middleware.MessageMiddleware"]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
if "LOOPTOKEN_TEST_DB" in os.environ:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["LOOPTOKEN_TEST_DB"],
        }
    }

if "LOOPTOKEN_TEST_HISTORY_STEP" in os.environ:
    from django_looptoken import _history

    _history.STEP_SECONDS = float(os.environ["LOOPTOKEN_TEST_HISTORY_STEP"])
