"""Settings of the example project: a dashboard fanning out on the shared loop.

What ``make demo`` and the tests may change comes from the environment:
``EXAMPLE_UPSTREAM`` (the upstream services' base URL), ``EXAMPLE_DB`` (the
SQLite file) and ``EXAMPLE_STATUS_DIR`` (where the status sockets live).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-secret"
DEBUG = True  # a local demo: Django's error pages, and static files for the admin
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_looptoken",
    "dashboard",
]
MIDDLEWARE = [
    # A token per request, so stopping a worker drains the requests in flight;
    # first, so the token covers every middleware and the response they return.
    "django_looptoken.middleware.LoopTokenMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example.urls"
WSGI_APPLICATION = "example.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", BASE_DIR / "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
# The status page sends anonymous visitors to log in here.
LOGIN_URL = "admin:login"

LOOPTOKEN = {
    "BACKEND": "auto",  # uvloop when installed (make demo installs it), else asyncio
    "STATUS_DIR": os.environ.get("EXAMPLE_STATUS_DIR") or None,
    "SHUTDOWN_TIMEOUT": 10.0,
}

# The slow upstream services the dashboard reads (upstream.py).
EXAMPLE_UPSTREAM = os.environ.get("EXAMPLE_UPSTREAM", "http://127.0.0.1:8001")
