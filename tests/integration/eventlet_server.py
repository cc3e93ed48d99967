"""Serve ``tests.wsgi`` with eventlet's own WSGI server, monkey-patched
before anything else is imported: ``python -m tests.integration.eventlet_server PORT``.

SIGTERM is left to the app (its default becomes ``SystemExit``, which ends
eventlet's server after its requests finish, then the exit drain runs);
``PORT own-sigterm`` sets a handler of its own after the app loaded, which
the app does not wrap.
"""

import eventlet

eventlet.monkey_patch()

import signal  # noqa: E402
import sys  # noqa: E402

from eventlet import wsgi  # noqa: E402

from tests.wsgi import application  # noqa: E402


def main() -> None:
    """Serve until SIGTERM."""
    if sys.argv[2:] == ["own-sigterm"]:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    wsgi.server(eventlet.listen(("127.0.0.1", int(sys.argv[1]))), application, log_output=False)


if __name__ == "__main__":
    main()
