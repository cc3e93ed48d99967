"""Serve the gevent benchmark's site with eventlet's WSGI server instead,
patched first: ``python -m bench.gevent_site.eventlet_serve PORT``."""

import eventlet

eventlet.monkey_patch()

import sys  # noqa: E402

from eventlet import wsgi  # noqa: E402

from bench.gevent_site.wsgi import application  # noqa: E402

if __name__ == "__main__":
    listener = eventlet.listen(("127.0.0.1", int(sys.argv[1])), backlog=1024)
    wsgi.server(listener, application, max_size=1000, log_output=False)
