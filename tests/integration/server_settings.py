"""Settings for real servers: the test settings with the loop started by the app."""

from tests.settings import *  # noqa: F403

LOOPTOKEN = {"SHUTDOWN_TIMEOUT": 5.0}  # AUTOSTART on, as deployed
ROOT_URLCONF = "tests.integration.urls"
