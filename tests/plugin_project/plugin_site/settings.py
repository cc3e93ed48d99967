"""Settings of the plugin's test project: SQLite, or PostgreSQL when
``POSTGRES_DSN`` names a server (tests/test_pytest_plugin.py starts one)."""

import os
from urllib.parse import urlsplit

SECRET_KEY = "plugin-tests-only"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django_looptoken", "plugin_site"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
ROOT_URLCONF = "plugin_site.urls"
LOOPTOKEN = {"BACKEND": os.environ.get("LOOPTOKEN_BACKEND", "auto")}

_dsn = os.environ.get("POSTGRES_DSN")
if _dsn:
    _url = urlsplit(_dsn)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _url.path.lstrip("/"),
            "USER": _url.username,
            "HOST": _url.hostname,
            "PORT": _url.port,
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "plugin.sqlite3"}}

# The example of docs/observability.md: the exit must stay quiet with it.
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_looptoken": {"handlers": ["console"], "level": "INFO"}},
}
