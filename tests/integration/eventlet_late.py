"""Serve ``tests.wsgi`` with eventlet's WSGI server, patched too late: after
the app was imported (Django is set up after, so the app has not started its
loop yet). ``python -m tests.integration.eventlet_late PORT``."""

# isort: skip_file
import sys

import django_looptoken  # noqa: F401

import eventlet

eventlet.monkey_patch()

from eventlet import wsgi  # noqa: E402

from tests.wsgi import application  # noqa: E402


def main() -> None:
    """Serve until SIGTERM."""
    wsgi.server(eventlet.listen(("127.0.0.1", int(sys.argv[1]))), application, log_output=False)


if __name__ == "__main__":
    main()
