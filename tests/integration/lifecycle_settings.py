"""Server settings for the lifecycle tests: timeout from the environment, loop logs shown."""

import os

from tests.integration.server_settings import *  # noqa: F403
from tests.integration.server_settings import looptoken_logging

LOOPTOKEN = {"SHUTDOWN_TIMEOUT": float(os.environ.get("LOOPTOKEN_TEST_SHUTDOWN_TIMEOUT", "5"))}
ROOT_URLCONF = "tests.integration.lifecycle_urls"
LOGGING = looptoken_logging("INFO")
