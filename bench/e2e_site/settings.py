"""Settings of the benchmark site; ``E2E_MODE`` (``plain`` or ``looptoken``) picks the site."""

import os

from django.core.exceptions import ImproperlyConfigured

MODE = os.environ.get("E2E_MODE", "looptoken")
if MODE not in ("plain", "looptoken"):
    raise ImproperlyConfigured(f"E2E_MODE must be 'plain' or 'looptoken', not {MODE!r}.")

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
DATABASES: dict[str, dict[str, str]] = {}
ROOT_URLCONF = f"bench.e2e_site.urls_{MODE}"
WSGI_APPLICATION = "bench.e2e_site.wsgi.application"

if MODE == "looptoken":
    INSTALLED_APPS = ["django_looptoken"]
    MIDDLEWARE = ["django_looptoken.middleware.LoopTokenMiddleware"]
    LOOPTOKEN = {"BACKEND": os.environ.get("E2E_BACKEND", "auto")}
else:
    INSTALLED_APPS = []
    MIDDLEWARE = []
