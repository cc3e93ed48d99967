"""A gunicorn config (``-c python:tests.integration.gevent_config``) that
monkey-patches first, as gevent asks of a ``--preload`` master: Django's
connections, imported unpatched, would be shared by every greenlet."""

from gevent import monkey

monkey.patch_all()
