"""ASGI application for the real-server tests (uvicorn)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.server_settings")
application = get_asgi_application()
