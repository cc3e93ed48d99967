"""Settings for the status tests under real servers.

The server settings, with the status sockets (and, when given, the database)
in the test's own ``tmp_path``, and templates for the status page.
"""

import os

from tests.integration.server_settings import *  # noqa: F403
from tests.integration.server_settings import LOOPTOKEN

LOOPTOKEN = {**LOOPTOKEN, "STATUS_DIR": os.environ["LOOPTOKEN_TEST_STATUS_DIR"]}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
if "LOOPTOKEN_TEST_DB" in os.environ:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["LOOPTOKEN_TEST_DB"],
        }
    }
