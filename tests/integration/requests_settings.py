"""Server settings for the request tests: DEBUG error pages, CSRF, a database of
their own (``$LOOPTOKEN_TEST_DB``) and middleware that shows what they observe.

What else a test asks for comes through the environment:
``LOOPTOKEN_TEST_ASYNC_ONLY_MIDDLEWARE=1`` adds an async-only middleware,
``LOOPTOKEN_TEST_ASYNC_VIEWS=off`` turns ``ASYNC_VIEWS`` off,
``LOOPTOKEN_TEST_BACKEND=<backend>`` sets ``BACKEND``, and
``LOOPTOKEN_TEST_EVENTS=<dir>`` writes the loop's signals to
``<dir>/events-<pid>.log`` (connected here, before ``django.setup()``: the app
starts the loop, and sends ``loop_started``, in its ``ready()``).
"""

import os
import tempfile

from tests.integration.server_settings import *  # noqa: F403
from tests.integration.server_settings import LOOPTOKEN, MIDDLEWARE
from tests.testapp import events

DEBUG = True  # the technical 500 page
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
if os.environ.get("LOOPTOKEN_TEST_ASYNC_ONLY_MIDDLEWARE") == "1":
    MIDDLEWARE = [*MIDDLEWARE, "tests.testapp.views.AsyncOnlyMiddleware"]
if os.environ.get("LOOPTOKEN_TEST_ASYNC_VIEWS") == "off":
    LOOPTOKEN = {**LOOPTOKEN, "ASYNC_VIEWS": False}
if "LOOPTOKEN_TEST_BACKEND" in os.environ:
    LOOPTOKEN = {**LOOPTOKEN, "BACKEND": os.environ["LOOPTOKEN_TEST_BACKEND"]}
if "LOOPTOKEN_TEST_EVENTS" in os.environ:
    events.record_loop_signals()
