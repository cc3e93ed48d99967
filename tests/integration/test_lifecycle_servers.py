"""Process lifecycle under waitress, runserver (with its autoreloader) and uWSGI."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.processes import (
    Launcher,
    Server,
    assert_quiet,
    free_port,
    stop,
    wait_for_server_exit,
    wait_until,
    wait_until_serving,
)

LIFECYCLE = "tests.integration.lifecycle_settings"
ROOT = Path(__file__).resolve().parents[2]


def _env(markers: Path, shutdown_timeout: float) -> dict[str, str]:
    return {
        "LOOPTOKEN_TEST_MARKERS": str(markers),
        "LOOPTOKEN_TEST_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
    }


def _loop_pids(server: Server) -> list[int]:
    """The pids that logged starting a shared loop, in order."""
    return [
        int(pid) for pid in re.findall(r"Shared loop started: \S+ \(pid (\d+)\)", server.stderr())
    ]


# -- waitress -----------------------------------------------------------------------


@pytest.fixture
def waitress(launcher: Launcher, markers: Path) -> Callable[..., Server]:
    def start(shutdown_timeout: float = 5.0) -> Server:
        port = free_port()
        command = [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}"]
        return launcher.launch(
            "waitress",
            [*command, "tests.wsgi:application"],
            port=port,
            settings=LIFECYCLE,
            extra_env=_env(markers, shutdown_timeout),
        )

    return start


def test_waitress_serves_on_the_shared_loop_and_drains_on_sigterm(
    waitress: Callable[..., Server], markers: Path
) -> None:
    server = waitress()
    answer = httpx.get(server.url + "lifecycle/loop/", timeout=10).json()
    assert answer["on_shared_loop"]
    assert answer["pid"] == server.process.pid
    assert httpx.get(server.url + "lifecycle/drain/w/", timeout=10).status_code == 200
    # The protected work finishes 0.5 s after the response: SIGTERM now must wait for it.
    assert stop(server) == 0  # waitress ends its serve loop on SystemExit and returns
    assert "SIGTERM: exiting after the shared loop drains" in server.stderr()
    assert (markers / "done-w").exists()
    assert_quiet(server.stderr())


def test_waitress_second_sigterm_does_not_cut_the_drain(
    waitress: Callable[..., Server], markers: Path
) -> None:
    server = waitress(shutdown_timeout=30)
    httpx.get(server.url + "lifecycle/drain/w/?seconds=3", timeout=10).raise_for_status()
    server.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "Process exiting: draining" in server.stderr(), "the drain to begin")
    assert stop(server, timeout=60) == 0  # SIGTERM again
    assert (markers / "done-w").exists()
    assert "SIGTERM again while draining: the drain goes on" in server.stderr()
    assert "Interrupted while draining" not in server.stderr()
    assert_quiet(server.stderr())


# -- eventlet's WSGI server ------------------------------------------------------------


def _eventlet(launcher: Launcher, markers: Path, shutdown_timeout: float, *options: str) -> Server:
    port = free_port()
    return launcher.launch(
        "eventlet",
        [sys.executable, "-m", "tests.integration.eventlet_server", str(port), *options],
        port=port,
        settings=LIFECYCLE,
        extra_env=_env(markers, shutdown_timeout),
    )


def test_eventlet_drains_requests_and_protected_work_on_sigterm(
    launcher: Launcher, markers: Path
) -> None:
    # The loop is a green thread of the process's one OS thread, where
    # SIGTERM's handler runs too: in whichever green thread runs, never in
    # the loop's, where its SystemExit would end a (protected) task.
    shutdown_timeout = 5.0
    server = _eventlet(launcher, markers, shutdown_timeout)
    count = 40
    limits = httpx.Limits(max_connections=count)
    with (
        httpx.Client(base_url=server.url, timeout=30, limits=limits) as client,
        ThreadPoolExecutor(count) as pool,
    ):
        answers = [pool.submit(client.get, f"lifecycle/drain/{n}/") for n in range(count)]
        wait_until(lambda: len(list(markers.glob("started-*"))) == count, "the requests to start")
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        responses = [answer.result() for answer in answers]
    assert [response.status_code for response in responses] == [200] * count
    assert stop(server, timeout=60) == 0  # eventlet's server returns on SystemExit
    assert time.monotonic() - began < shutdown_timeout + 2
    done = sorted(path.name for path in markers.glob("done-*"))
    assert done == sorted(f"done-{n}" for n in range(count))
    assert "SIGTERM: exiting after the shared loop drains" in server.stderr()
    assert_quiet(server.stderr())


@pytest.mark.parametrize("where", ["loop", "executor"])
def test_eventlet_sigterm_while_protected_work_runs_ends_the_process_not_the_work(
    launcher: Launcher, markers: Path, where: str
) -> None:
    # The protected work keeps the loop's green thread running (no await),
    # or one of its executor's, so SIGTERM's handler runs there: its
    # SystemExit must not end the work (the loop's), nor be swallowed by
    # the thread (the executor's), but end the server, then drain.
    server = _eventlet(launcher, markers, 10.0)
    url = f"{server.url}lifecycle/busy-protected/b/?in={where}"
    httpx.get(url, timeout=10).raise_for_status()
    wait_until(lambda: (markers / "busy-b").exists(), "the protected work to keep the loop busy")
    assert stop(server, timeout=60) == 0
    assert (markers / "done-b").exists()
    assert "SIGTERM: exiting after the shared loop drains" in server.stderr()
    assert_quiet(server.stderr())


def test_eventlet_a_handler_set_after_the_app_that_exits_on_the_loop_ends_the_process(
    launcher: Launcher, markers: Path
) -> None:
    # A handler the app did not wrap raises in the loop's green thread: the
    # exit is the process's, not the loop's, which must not die of it (its
    # thread died: a fresh loop, and no exit), but drain.
    server = _eventlet(launcher, markers, 10.0, "own-sigterm")
    httpx.get(server.url + "lifecycle/busy-protected/b/", timeout=10).raise_for_status()
    wait_until(lambda: (markers / "busy-b").exists(), "the protected work to keep the loop busy")
    assert stop(server, timeout=60) == 0
    stderr = server.stderr()
    assert "Process exiting: draining the shared loop" in stderr
    assert "Shared loop stopped" in stderr
    assert "thread died" not in stderr, stderr


# -- runserver with its autoreloader ------------------------------------------------------


def test_runserver_runs_the_loop_only_in_the_serving_child_and_reloads_cleanly(
    launcher: Launcher, markers: Path
) -> None:
    port = free_port()
    command = [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}"]
    server = launcher.launch(
        "runserver",
        command,
        port=port,
        settings=LIFECYCLE,
        extra_env=_env(markers, 5.0),
        new_session=True,  # Ctrl-C reaches the whole group, as in a terminal
    )
    first = httpx.get(server.url + "lifecycle/loop/", timeout=10).json()
    assert first["on_shared_loop"]
    assert first["pid"] != server.process.pid  # served by the autoreloader's child
    assert _loop_pids(server) == [first["pid"]]  # and the watcher started no loop

    # A code change: the child exits cleanly and a new one serves.
    watched = ROOT / "tests" / "integration" / "lifecycle_urls.py"

    def touched_and_reloaded() -> bool:
        # Django's StatReloader only reports a file whose mtime it has seen
        # before: a touch that lands before its first pass over the files is
        # missed for good. So touch until the child stops; every touch comes
        # before the new child starts, so it cannot reload again.
        os.utime(watched)
        return f"Shared loop stopped (pid {first['pid']})" in server.stderr()

    wait_until(touched_and_reloaded, "reload")
    wait_until(lambda: len(_loop_pids(server)) == 2, "the new child's loop")
    wait_until_serving(server)
    second = httpx.get(server.url + "lifecycle/loop/", timeout=10).json()
    assert second["pid"] not in (first["pid"], server.process.pid)
    assert _loop_pids(server) == [first["pid"], second["pid"]]

    # Ctrl-C: the whole group, as the terminal sends it.
    os.killpg(server.process.pid, signal.SIGINT)
    wait_for_server_exit(server, 30)
    wait_until(lambda: f"Shared loop stopped (pid {second['pid']})" in server.stderr(), "exit")
    with pytest.raises(ProcessLookupError):
        os.killpg(server.process.pid, 0)  # nothing of the group is left
    assert_quiet(server.stderr())


# -- uWSGI --------------------------------------------------------------------------------

# As docs/deployment.md recommends: SIGTERM to the master stops gracefully. With
# --die-on-term alone, uWSGI kills a worker that is inside a request on the spot
# and skips Python's exit hooks there, so that worker's loop never drains.
GRACEFUL_SIGTERM = ("--hook-master-start", "unix_signal:15 gracefully_kill_them_all")


@pytest.fixture
def uwsgi(launcher: Launcher, markers: Path) -> Callable[..., Server]:
    binary = Path(sys.executable).with_name("uwsgi")
    if not binary.exists():
        pytest.fail(f"{binary} is missing: `make test` installs it with the test extras (pip)")

    def start(
        *options: str, module: str = "tests.wsgi:application", shutdown_timeout: float = 5.0
    ) -> Server:
        port = free_port()
        command = [
            str(binary),
            *("--http-socket", f"127.0.0.1:{port}", "--module", module),
            *("--master", "--die-on-term", *GRACEFUL_SIGTERM),
            *("--need-app", "--home", sys.prefix),
            *options,
        ]
        env = _env(markers, shutdown_timeout)
        return launcher.launch("uwsgi", command, port=port, settings=LIFECYCLE, extra_env=env)

    return start


@pytest.mark.parametrize(
    "options",
    [(), ("--py-call-osafterfork",), ("--lazy-apps",)],
    ids=["preforked", "osafterfork", "lazy-apps"],
)
def test_uwsgi_workers_each_run_their_own_loop_and_drain_on_sigterm(
    uwsgi: Callable[..., Server], markers: Path, options: tuple[str, ...]
) -> None:
    server = uwsgi("--processes", "2", *options)
    seen: dict[int, set[int]] = {}
    close = {"Connection": "close"}
    with httpx.Client(base_url=server.url, timeout=10, headers=close) as client:
        for _ in range(200):  # bounded: uWSGI hands connections to both workers quickly
            answer = client.get("lifecycle/loop/").json()
            assert answer["on_shared_loop"]
            seen.setdefault(answer["pid"], set()).add(answer["loop_thread"])
            if len(seen) == 2:
                break
        assert len(seen) == 2, seen
        assert all(len(threads) == 1 for threads in seen.values())
        assert client.get("lifecycle/drain/u/").status_code == 200
    assert stop(server) == 0
    assert (markers / "done-u").exists()  # protected work finished before the worker left
    assert all(f"Shared loop stopped (pid {pid})" in server.stderr() for pid in seen)
    assert_quiet(server.stderr())


@pytest.mark.parametrize("options", [(), ("--lazy-apps",)], ids=["preforked", "lazy-apps"])
def test_uwsgi_sigterm_lets_a_busy_worker_finish_its_request_and_drain(
    uwsgi: Callable[..., Server], markers: Path, options: tuple[str, ...]
) -> None:
    server = uwsgi("--processes", "1", *options)
    with httpx.Client(base_url=server.url, timeout=10) as client, ThreadPoolExecutor(1) as pool:
        reply = pool.submit(client.get, "lifecycle/drain/b/")
        # The view has started and answers 0.5 s later: the worker is busy now.
        wait_until((markers / "started-b").exists, "the drain view to start")
        server.process.send_signal(signal.SIGTERM)
        assert reply.result().status_code == 200  # the request in flight finished
    assert stop(server) == 0
    assert (markers / "done-b").exists()  # and its worker drained before it left
    pid = int((markers / "started-b").read_text())
    assert f"Shared loop stopped (pid {pid})" in server.stderr()
    assert_quiet(server.stderr())


def test_uwsgi_workers_forked_after_the_master_used_the_loop_get_their_own_of_everything(
    uwsgi: Callable[..., Server], markers: Path
) -> None:
    # The master runs the app's import, which awaits on the loop and spawns a
    # thread-sensitive call: it has a waker and a background thread of its own
    # that the workers, forked from C, must not inherit.
    server = uwsgi("--processes", "2", module="tests.integration.wsgi_loop_at_import:application")
    close = {"Connection": "close"}
    with httpx.Client(base_url=server.url, timeout=10, headers=close) as client:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.get("lifecycle/loop/").json(), range(60)))
        workers = {answer["pid"] for answer in answers}
        assert len(workers) == 2  # each answered all it was given: no wake-up was stolen
        ran = [client.get("lifecycle/spawn-sync/6/").json() for _ in range(6)]
        assert [answer["ran"] for answer in ran] == [6] * 6, ran
    assert stop(server) == 0  # the workers heard SIGTERM and drained
    assert all(f"Shared loop stopped (pid {pid})" in server.stderr() for pid in workers)
    assert_quiet(server.stderr())


def test_a_uwsgi_worker_reloaded_drains_within_its_mercy(
    uwsgi: Callable[..., Server], markers: Path
) -> None:
    # SHUTDOWN_TIMEOUT (30 s) would outlast the master's mercy (6 s) on a
    # reload: the drain gets what is left of it, cuts the stuck work and logs
    # it, and the worker exits before the master's SIGKILL.
    server = uwsgi("--processes", "1", "--worker-reload-mercy", "6", shutdown_timeout=30.0)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        old = client.get("lifecycle/stuck/").json()["pid"]
        server.process.send_signal(signal.SIGHUP)  # uWSGI's graceful reload
        wait_until(lambda: f"Shared loop stopped (pid {old})" in server.stderr(), "the drain")
        stderr = server.stderr()
        assert "uWSGI's worker-reload-mercy (6 s) ends" in stderr
        assert "Shutdown cut" in stderr
        assert "NO MERCY" not in stderr
        new = client.get("lifecycle/loop/").json()["pid"]  # the reloaded worker serves
    assert new != old
    assert stop(server) == 0
    assert "NO MERCY" not in server.stderr()
