"""Django settings for the test suite (the loop is started by the tests)."""

import os
import tempfile

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django_looptoken",
    "tests.testapp",
]
# A file, not memory: SQLite's in-memory databases ignore close(), and the
# tests check that background calls close their connections.
_DB = os.path.join(tempfile.gettempdir(), f"looptoken-tests-{os.getpid()}.sqlite3")
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB, "TEST": {"NAME": _DB}}
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# Tests start and stop the loop themselves; test_apps covers AUTOSTART.
LOOPTOKEN = {"AUTOSTART": False}
LOGGING_CONFIG = None
ROOT_URLCONF = "tests.urls"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_looptoken.middleware.LoopTokenMiddleware",
]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
