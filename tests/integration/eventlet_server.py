"""Serve ``tests.wsgi`` with eventlet's own WSGI server, monkey-patched
before anything else is imported: ``python -m tests.integration.eventlet_server PORT``."""

import eventlet

eventlet.monkey_patch()

import signal  # noqa: E402
import sys  # noqa: E402

from eventlet import wsgi  # noqa: E402

from tests.wsgi import application  # noqa: E402


def main() -> None:
    """Serve until SIGTERM, which ends the process with status 0."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    wsgi.server(eventlet.listen(("127.0.0.1", int(sys.argv[1]))), application, log_output=False)


if __name__ == "__main__":
    main()
