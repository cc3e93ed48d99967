"""The request tests' server settings plus async-only middleware (``ASYNC_VIEWS`` on)."""

from tests.integration.requests_settings import *  # noqa: F403
from tests.integration.requests_settings import MIDDLEWARE

MIDDLEWARE = [*MIDDLEWARE, "tests.testapp.views.AsyncOnlyMiddleware"]
