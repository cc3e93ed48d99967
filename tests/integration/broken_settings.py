"""A project as a new user writes it (admin and all), with LOOPTOKEN from the
environment: the broken-settings tests give it a typo or a bad BACKEND."""

import json
import os

from tests.integration.server_settings import *  # noqa: F403
from tests.integration.server_settings import looptoken_logging

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
LOOPTOKEN = json.loads(os.environ["LOOPTOKEN_TEST_SETTING"])
LOGGING = looptoken_logging("DEBUG", "%(levelname)s pid=%(process)d %(message)s")
