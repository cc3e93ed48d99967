"""``make demo``, smoke-tested: it serves the example and Ctrl-C stops everything.

The test runs what the Makefile's ``demo`` recipe runs (``demo.py`` in
``example_project/``, with this interpreter) on free ports, in a session of
its own, and sends SIGINT to that session's process group as a terminal's
Ctrl-C does. Every process it saw (the launcher, the upstream server, the
gunicorn master and both workers) must be gone afterwards; the ``finally``
kills whatever is left, by pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import httpx

from tests.support.processes import DEADLINE_S, NOISE, ROOT, free_port, parent_of

EXAMPLE = ROOT / "example_project"
LOGIN = {"username": "demo", "password": "looptoken"}
# gunicorn's own leak when it adopts a socket by fd (``--bind fd://``): Python's
# development mode reports it once per master; nothing of the demo's.
GUNICORN_FD_WARNING = "gunicorn/arbiter.py"


class Output:
    """The launcher's output (its children's too), read as it comes."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.decode(errors="replace"))
                self._changed.notify_all()

    def wait_for(self, text: str, process: subprocess.Popen[bytes]) -> None:
        """Until a line holds ``text``; fails if ``process`` exits first or at the deadline."""
        deadline = time.monotonic() + DEADLINE_S
        with self._changed:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                assert left > 0, f"no {text!r} within {DEADLINE_S} s:\n{self.text()}"
                assert process.poll() is None, f"exited with {process.returncode}:\n{self.text()}"
                self._changed.wait(min(left, 1.0))  # also notices an exit without output

    def close(self) -> str:
        """All of it, once every writer has closed the pipe."""
        self._reader.join(DEADLINE_S)
        assert not self._reader.is_alive(), "a child still holds the launcher's output open"
        return self.text()

    def text(self) -> str:
        """What was read so far."""
        with self._changed:
            return "".join(self.lines)


def children(pid: int) -> list[int]:
    """The child processes of ``pid``, from /proc."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                found += [int(child) for child in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    below = children(pid)
    for child in list(below):
        below += descendants(child)
    return below


def command_line(pid: int) -> str:
    """The command line of ``pid``."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def demo_env(tmp_path: Path, port: int, upstream_port: int) -> dict[str, str]:
    """The launcher's environment: free ports, and its database and status
    sockets in the test's directory (not the developer's demo)."""
    return {
        **os.environ,
        "DEMO_PORT": str(port),
        "DEMO_UPSTREAM_PORT": str(upstream_port),
        "EXAMPLE_DB": str(tmp_path / "db.sqlite3"),
        "EXAMPLE_STATUS_DIR": str(tmp_path / "status"),
        "PYTHONDEVMODE": "1",
    }


@contextlib.contextmanager
def launched(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], Output, set[int]]]:
    """The launcher in a session of its own; on the way out, it and every
    process seen below it (the set the test adds to) are killed by pid."""
    # No need to reset SIGINT for it should this test run as a background job
    # (which ignores SIGINT): demo.py installs its own handler before it starts anything,
    # and its children, started after that, begin with the default.
    process = subprocess.Popen(
        [sys.executable, "demo.py"],
        cwd=EXAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    seen: set[int] = set()
    try:
        yield process, Output(process.stdout), seen
    finally:
        seen.update(descendants(process.pid))
        for pid in [process.pid, *seen]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(DEADLINE_S)
        process.stdout.close()


def log_in(client: httpx.Client) -> None:
    """Log in as the demo's staff user through the admin's login form."""
    form = client.get("/admin/login/", params={"next": "/looptoken/"})
    assert form.status_code == 200
    data = {**LOGIN, "csrfmiddlewaretoken": client.cookies["csrftoken"], "next": "/looptoken/"}
    done = client.post("/admin/login/?next=/looptoken/", data=data)
    assert (done.status_code, done.headers["location"]) == (302, "/looptoken/")


def workers(client: httpx.Client) -> list[dict[str, Any]]:
    """The status page's processes once it lists both workers (each lists
    itself when it has booted)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        listing = client.get("/looptoken/", params={"format": "json"})
        assert listing.status_code == 200
        processes: list[dict[str, Any]] = listing.json()["processes"]
        if len(processes) == 2:
            return processes
        assert time.monotonic() < deadline, f"two workers never listed: {processes}"
        time.sleep(0.1)  # a worker booting is not an event this side can wait on


def wait_until_in_flight(client: httpx.Client, request: Future[httpx.Response]) -> None:
    """Until a worker runs a task for ``request`` (the status page's own request runs none)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert not request.done(), f"finished too soon: {request.result()}"
        processes = client.get("/looptoken/", params={"format": "json"}).json()["processes"]
        if any(p["tasks"] for p in processes):
            return
        assert time.monotonic() < deadline, f"the request never showed up: {processes}"


def elapsed(page: str) -> float:
    """The seconds a dashboard page says it took."""
    match = re.search(r'id="elapsed">([\d.]+) s<', page)
    assert match, page
    return float(match.group(1))


def test_make_demo_runs_the_launcher_this_test_runs() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert dry_run.returncode == 0, dry_run.stderr
    recipe = "cd example_project && exec ../.venv/bin/python demo.py"
    assert recipe in dry_run.stdout.splitlines()


def test_demo_serves_the_example_then_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port, upstream_port = free_port(), free_port()
    with launched(demo_env(tmp_path, port, upstream_port)) as (launcher, output, seen):
        output.wait_for("Ctrl-C stops everything.", launcher)
        banner = output.text()
        for path in ("/", "/sequential/", "/activity/", "/async/", "/looptoken/", "/admin/"):
            assert f"http://127.0.0.1:{port}{path}\n" in banner
        assert "Staff login:  demo / looptoken" in banner

        started = children(launcher.pid)
        seen.update(started)
        (master,) = [pid for pid in started if "gunicorn" in command_line(pid)]
        (upstream,) = [pid for pid in started if "upstream.py" in command_line(pid)]

        site = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=site, timeout=DEADLINE_S) as client:
            client.get("/")  # this connection's worker makes its pooled client
            dashboard = client.get("/")
            assert dashboard.status_code == 200
            assert "<h1>Dashboard: 4 upstreams at once</h1>" in dashboard.text
            assert 'class="error"' not in dashboard.text
            sequential = client.get("/sequential/")
            assert sequential.status_code == 200
            assert 'class="error"' not in sequential.text
            # The upstreams answer after 0.3, 0.4, 0.5 and 0.2 s (upstream.py).
            assert elapsed(dashboard.text) >= 0.5
            assert elapsed(sequential.text) >= 1.4
            assert elapsed(sequential.text) - elapsed(dashboard.text) > 0.45

            log_in(client)
            processes = workers(client)
            pids = {p["pid"] for p in processes}
            seen.update(pids)
            assert {parent_of(pid) for pid in pids} == {master}
            assert {p["backend"] for p in processes} == {"uvloop.Loop"}
            assert {p["state"] for p in processes} == {"running"}
            page = client.get("/looptoken/").text
            for pid in pids:
                assert f'<a href="tasks/{pid}/" title="its pending tasks">{pid}</a>' in page

            with ThreadPoolExecutor(1) as pool:
                late = pool.submit(httpx.get, f"{site}/sequential/", timeout=DEADLINE_S)
                wait_until_in_flight(client, late)
                os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
                # gunicorn drains it, and the upstream stops only after gunicorn.
                finished = late.result(DEADLINE_S)
        assert finished.status_code == 200
        assert finished.text.count('<section class="card"') == 4
        assert 'class="error"' not in finished.text
        assert launcher.wait(DEADLINE_S) == 0
        log = output.close()
        for pid in (master, upstream, *pids):
            assert gone(pid), f"{command_line(pid)} (pid {pid}) outlived the demo"
        assert f"demo: gunicorn (pid {master}) exited with status 0" in log
        assert f"demo: the upstream server (pid {upstream}) exited with status 0" in log
        for noise in NOISE:
            assert noise not in log, log
        warnings = [line for line in log.splitlines() if "Warning: " in line]
        unexpected = [
            line
            for line in warnings
            if GUNICORN_FD_WARNING not in line and "Enable tracemalloc" not in line
        ]
        assert unexpected == [], log
    # Each worker removed its status socket as its loop stopped.
    assert sorted(os.listdir(tmp_path / "status")) == []
    # Every page's audit row was written, the drained one's too: the worker's
    # shutdown waited for its spawn(shutdown_waits_for(...)).
    with contextlib.closing(sqlite3.connect(tmp_path / "db.sqlite3")) as db:
        pages = [row[0] for row in db.execute("SELECT page FROM dashboard_auditentry ORDER BY id")]
    assert pages == ["concurrent", "concurrent", "sequential", "sequential"]


def test_demo_says_so_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = demo_env(tmp_path, port, free_port())
        with launched(env) as (launcher, output, _):
            assert launcher.wait(DEADLINE_S) == 1
            log = output.close()
    assert f"demo: cannot listen on 127.0.0.1:{port} for the demo site" in log
    assert "DEMO_PORT=8080 DEMO_UPSTREAM_PORT=8081 make demo" in log
    assert "Traceback" not in log
    assert not (tmp_path / "db.sqlite3").exists()  # it stopped before doing anything
