"""``make demo``: the example project under gunicorn with its upstream services, until Ctrl-C.

Run from ``example_project/`` (``make demo`` does)::

    python demo.py

1. Binds 127.0.0.1:8000 for gunicorn and 127.0.0.1:8001 for the upstream
   services (``DEMO_PORT`` and ``DEMO_UPSTREAM_PORT`` change them), so a port
   already in use is a clear message before anything starts.
2. ``manage.py setupdemo``: migrations (with the seed data) and the staff user.
3. Starts ``upstream.py`` (aiohttp) and gunicorn (gthread, 2 workers, the
   shared loop on uvloop) on those sockets, each in a session of its own: the
   terminal's Ctrl-C reaches this launcher only, which then stops them in
   order, by pid.
4. Prints the URLs and the login once the site answers.
5. On Ctrl-C (SIGINT), SIGTERM or SIGHUP: SIGTERM to gunicorn, whose master
   drains the requests in flight and whose workers shut their shared loops
   down cleanly, then to the upstream server; a second Ctrl-C hurries them
   (SIGINT), a third kills them. If either exits on its own, the other is
   stopped too and the launcher exits with an error.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
USERNAME = "demo"
PASSWORD = "looptoken"  # a local demo's staff login, printed below: nothing secret
WORKERS = 2
THREADS = 8
GRACE_S = 20  # gunicorn's --graceful-timeout: how long its workers may drain
BOOT_S = 60  # how long the workers may take to answer their first request
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Waiter:
    """Wakes the launcher on any signal (child exits included), never by polling.

    Handlers only note what arrived; ``signal.set_wakeup_fd`` writes a byte
    for each signal to a socket that ``wait`` selects on, so a signal that
    arrives just before ``wait`` still wakes it.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, self._note) for sig in STOP_SIGNALS}
        # The wakeup byte is all a child's exit needs to do.
        self._previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda sig, frame: None)

    def _note(self, sig: int, frame: FrameType | None) -> None:
        self.received.append(sig)

    def wake(self) -> None:
        """Wake ``wait`` from another thread."""
        with contextlib.suppress(BlockingIOError):
            self._write.send(b"\0")

    def wait(self, timeout: float | None = None) -> None:
        """Block until a signal or ``wake`` (or ``timeout`` seconds)."""
        select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while self._read.recv(4096):
                pass

    def close(self) -> None:
        """Put the signal handlers back as they were."""
        signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._read.close()
        self._write.close()


def bind(port: int, what: str) -> socket.socket:
    """A listening socket on 127.0.0.1:``port``, or exit saying the port is taken."""
    try:
        return socket.create_server((HOST, port), backlog=128)
    except OSError as exc:
        sys.exit(
            f"demo: cannot listen on {HOST}:{port} for {what}: {exc.strerror}. "
            "Is another demo (or another server) using it? Stop it, or choose free ports: "
            "DEMO_PORT=8080 DEMO_UPSTREAM_PORT=8081 make demo"
        )


def port_from_env(name: str, default: int) -> int:
    """A port number from the environment, or exit saying what is wrong."""
    value = os.environ.get(name, str(default))
    if not value.isdigit() or not 0 < int(value) < 65536:
        sys.exit(f"demo: {name} must be a port number between 1 and 65535, not {value!r}.")
    return int(value)


def start(command: list[str], sock: socket.socket, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own, handing it the listening ``sock``."""
    return subprocess.Popen(
        command, cwd=HERE, env=env, pass_fds=[sock.fileno()], start_new_session=True
    )


def probe(url: str, ready: threading.Event, waiter: Waiter) -> None:
    """Set ``ready`` once ``url`` answers (the request waits in the listen backlog
    until a worker has booted), then wake the launcher."""
    # OSError: the server stopped first, and there is nothing to announce.
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=BOOT_S):
        ready.set()
    waiter.wake()


def stop(process: subprocess.Popen[bytes], name: str, waiter: Waiter, seconds: float) -> None:
    """SIGTERM ``process`` and wait for it. Another stop signal, or ``seconds``
    without an exit, hurries it: SIGINT, then SIGKILL to its whole session."""
    steps = [signal.SIGTERM, signal.SIGINT, signal.SIGKILL]
    while process.poll() is None and steps:
        sig = steps.pop(0)
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                print(f"demo: killing {name} (pid {process.pid}) and its children", flush=True)
                os.killpg(process.pid, sig)  # its session is its process group
            else:
                process.send_signal(sig)
        handled = len(waiter.received)
        deadline = time.monotonic() + seconds
        while process.poll() is None and len(waiter.received) == handled:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            waiter.wait(left)
    process.wait()
    print(f"demo: {name} (pid {process.pid}) exited with status {process.returncode}", flush=True)


def gunicorn_command(site: socket.socket) -> list[str]:
    """gunicorn serving the example on the listening socket ``site``."""
    command = [
        *(sys.executable, "-m", "gunicorn", "example.wsgi:application"),
        *("--bind", f"fd://{site.fileno()}", "--worker-class", "gthread"),
        *("--workers", str(WORKERS), "--threads", str(THREADS)),
        *("--graceful-timeout", str(GRACE_S), "--access-logfile", "-"),
    ]
    major, minor = (int(part) for part in metadata.version("gunicorn").split(".")[:2])
    if (major, minor) >= (25, 1):
        # Its control socket (~/.gunicorn/gunicorn.ctl by default) is not needed
        # here, and a second gunicorn of the same user would take it over.
        command.append("--no-control-socket")
    return command


def banner(port: int, upstream_port: int) -> str:
    """What to open, and how to log in."""
    site = f"http://{HOST}:{port}"
    return f"""
  django-looptoken demo: gunicorn (gthread, {WORKERS} workers x {THREADS} threads), one shared
  event loop per worker, fanning out to the upstream services on http://{HOST}:{upstream_port}/

    Dashboard, upstreams at once:  {site}/
    The same, one after another:   {site}/sequential/
    Activity (async ORM, audit):   {site}/activity/
    A plain async def view:        {site}/async/
    Server-sent events, streamed:  {site}/stream/
    Loop status (staff only):      {site}/looptoken/
    Admin:                         {site}/admin/

    Staff login:  {USERNAME} / {PASSWORD}
    From a shell: cd example_project && ../.venv/bin/python manage.py loopstatus

  Ctrl-C stops everything.
"""


@contextlib.contextmanager
def children(
    waiter: Waiter, env: dict[str, str], site: socket.socket, upstream_sock: socket.socket
) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """The upstream server and gunicorn, always stopped (gunicorn first) on the way out."""
    upstream = start(
        [sys.executable, "upstream.py", "--fd", str(upstream_sock.fileno())], upstream_sock, env
    )
    try:
        gunicorn = start(gunicorn_command(site), site, env)
        try:
            yield upstream, gunicorn
        finally:
            stop(gunicorn, "gunicorn", waiter, GRACE_S + 10)
    finally:
        stop(upstream, "the upstream server", waiter, 10)


def serve(
    waiter: Waiter, env: dict[str, str], site: socket.socket, upstream_sock: socket.socket
) -> int:
    """Run both servers until a stop signal (0) or until one exits on its own (1)."""
    port, upstream_port = site.getsockname()[1], upstream_sock.getsockname()[1]
    ready = threading.Event()
    prober = threading.Thread(
        target=probe, args=(f"http://{HOST}:{port}/async/", ready, waiter), daemon=True
    )
    with children(waiter, env, site, upstream_sock) as (upstream, gunicorn):
        site.close()  # the children have their copies
        upstream_sock.close()
        prober.start()
        announced = False
        while not waiter.received:
            if gunicorn.poll() is not None or upstream.poll() is not None:
                print("demo: a server exited on its own; stopping the other.", flush=True)
                return 1
            if ready.is_set() and not announced:
                print(banner(port, upstream_port), flush=True)
                announced = True
            waiter.wait()
        print("\ndemo: stopping (Ctrl-C again to hurry)...", flush=True)
    prober.join(BOOT_S)  # it gave up when gunicorn closed its socket
    return 0 if (gunicorn.returncode, upstream.returncode) == (0, 0) else 1


def main() -> int | str:
    """Set up, serve until a stop signal, stop everything; the exit status."""
    port = port_from_env("DEMO_PORT", 8000)
    upstream_port = port_from_env("DEMO_UPSTREAM_PORT", 8001)
    site = bind(port, "the demo site")
    upstream_sock = bind(upstream_port, "the upstream services")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example.settings",
        "EXAMPLE_UPSTREAM": f"http://{HOST}:{upstream_port}",
    }
    waiter = Waiter()
    try:
        setup = [sys.executable, "manage.py", "setupdemo", "--username", USERNAME]
        failed = subprocess.run([*setup, "--password", PASSWORD], cwd=HERE, env=env).returncode
        if waiter.received:
            return 0  # stopped while setting up: nothing runs yet
        if failed:
            return "demo: manage.py setupdemo failed (see above)."
        return serve(waiter, env, site, upstream_sock)
    finally:
        waiter.close()
        site.close()
        upstream_sock.close()


if __name__ == "__main__":
    sys.exit(main())
