"""WSGI application for the real-server tests."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.server_settings")
application = get_wsgi_application()
