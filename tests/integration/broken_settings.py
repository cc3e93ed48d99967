"""A project as a new user writes it (admin and all), with LOOPTOKEN from the
environment: the broken-settings tests give it a typo or a bad BACKEND."""

import json
import os

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_looptoken",
    "tests.testapp",
]
MIDDLEWARE = [
    "django_looptoken.middleware.LoopTokenMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ROOT_URLCONF = "tests.integration.broken_urls"
ALLOWED_HOSTS = ["127.0.0.1"]
LOOPTOKEN = json.loads(os.environ["LOOPTOKEN_TEST_SETTING"])
LOGGING_CONFIG = "logging.config.dictConfig"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"pid": {"format": "%(levelname)s pid=%(process)d %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "pid"}},
    "loggers": {"django_looptoken": {"handlers": ["stderr"], "level": "DEBUG"}},
}
