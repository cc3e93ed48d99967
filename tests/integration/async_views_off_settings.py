"""The request tests' server settings with ``ASYNC_VIEWS`` off and async-only middleware."""

from tests.integration.requests_settings import *  # noqa: F403
from tests.integration.requests_settings import MIDDLEWARE

LOOPTOKEN = {"SHUTDOWN_TIMEOUT": 5.0, "ASYNC_VIEWS": False}
MIDDLEWARE = [*MIDDLEWARE, "tests.testapp.views.AsyncOnlyMiddleware"]
