"""Server settings for the request tests: DEBUG error pages, CSRF, a database of
their own (``$LOOPTOKEN_TEST_DB``) and middleware that shows what they observe."""

import os
import tempfile

from tests.integration.server_settings import *  # noqa: F403
from tests.integration.server_settings import MIDDLEWARE

DEBUG = True  # the technical 500 page
ALLOWED_HOSTS = ["127.0.0.1"]
_DB = os.environ.get("LOOPTOKEN_TEST_DB") or os.path.join(
    tempfile.gettempdir(), f"looptoken-requests-{os.getpid()}.sqlite3"
)
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB}}
MIDDLEWARE = [
    "django.middleware.csrf.CsrfViewMiddleware",
    *MIDDLEWARE,
    "tests.integration.views.RequestThread",
    "tests.integration.views.AtomicWhenAsked",
    "tests.testapp.views.RecordsExceptions",
]
