"""The status socket: permissions, protocol, hostile input, fork, stale sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import django_looptoken as looptoken
from django_looptoken import _status_server, _status_socket
from django_looptoken._status_socket import ask, collect
from tests.status_worker import silent_processes, socket_of
from tests.support.processes import DEADLINE_S, wait_until
from tests.test_fork import in_child

FOREIGN_UID = 4242


def exchange(path: Path, payload: bytes, *, half_close: bool = False) -> bytes:
    """Send ``payload``, optionally half-close, and read until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(DEADLINE_S)
        sock.connect(str(path))
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def error_of(answer: bytes) -> str:
    assert answer.endswith(b"\n")
    assert answer.count(b"\n") == 1
    message = json.loads(answer)
    assert set(message) == {"error"}
    return str(message["error"])


def loop_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- where and with which permissions ---------------------------------------------


def test_dir_is_0700_and_socket_0600_owned_by_us(served: Path, status_dir: Path) -> None:
    dir_info = os.lstat(status_dir)
    sock_info = os.lstat(served)
    assert stat.S_ISDIR(dir_info.st_mode)
    assert stat.S_IMODE(dir_info.st_mode) == 0o700
    assert stat.S_ISSOCK(sock_info.st_mode)
    assert stat.S_IMODE(sock_info.st_mode) == 0o600
    assert dir_info.st_uid == sock_info.st_uid == os.getuid()
    assert os.listdir(status_dir) == [socket_of(status_dir, os.getpid()).name]


def test_the_socket_is_removed_when_the_loop_stops(status_dir: Path) -> None:
    with looptoken.start_loop():
        path = socket_of(status_dir, os.getpid())
        wait_until(path.exists, "the status socket")
    assert not path.exists()
    assert os.listdir(status_dir) == []


def test_a_restarted_loop_serves_again(status_dir: Path) -> None:
    path = socket_of(status_dir, os.getpid())
    for _ in range(2):
        with looptoken.start_loop():
            wait_until(path.exists, "the status socket")
            assert ask(str(path))["state"] == "running"
        assert not path.exists()


def test_the_default_dir_is_per_user_in_the_temp_dir() -> None:
    import tempfile

    assert _status_socket.status_dir(None) == os.path.join(
        tempfile.gettempdir(), f"django-looptoken-{os.getuid()}"
    )


@pytest.mark.parametrize("problem", ["symlink", "mode", "owner"])
def test_an_unsafe_dir_is_refused_and_the_loop_still_runs(
    problem: str,
    looptoken_settings: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    path = tmp_path / "status"
    if problem == "symlink":
        path.symlink_to(real)
        expected = "is a symlink"
    elif problem == "mode":
        path.mkdir()
        path.chmod(0o755)
        expected = "has mode 0755; it must be 0700"
    elif os.getuid() == 0:
        path.mkdir(mode=0o700)
        os.chown(path, FOREIGN_UID, FOREIGN_UID)
        expected = f"owned by uid {FOREIGN_UID}"
    else:  # without root, a directory of root's is someone else's
        path = Path("/")
        expected = "owned by uid 0"
    looptoken_settings(STATUS_DIR=str(path))
    with caplog.at_level(logging.ERROR, logger="django_looptoken"), looptoken.start_loop():
        wait_until(lambda: caplog.records, "the refusal")
        assert looptoken.await_(asyncio.sleep(0, "still runs")) == "still runs"
    (record,) = caplog.records
    assert "The status socket is off" in record.getMessage()
    assert expected in record.getMessage()
    assert os.listdir(real) == []


def test_collect_refuses_an_unsafe_dir(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    listing = collect(str(link))
    assert listing.error is not None
    assert "is a symlink" in listing.error
    assert collect(str(tmp_path / "missing")).error is None  # nothing served yet


# -- the protocol --------------------------------------------------------------------


def test_a_status_request_gets_one_json_line(served: Path) -> None:
    answer = exchange(served, b'{"op": "status"}\n')
    assert answer.count(b"\n") == 1
    status = json.loads(answer)
    assert status["pid"] == os.getpid()
    assert status["state"] == "running"
    assert status["tokens"] == 1
    assert ask(str(served))["pid"] == os.getpid()


def test_a_line_ended_by_half_closing_is_answered(served: Path) -> None:
    answer = exchange(served, b'{"op": "status"}', half_close=True)
    assert json.loads(answer)["pid"] == os.getpid()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\n", "not JSON"),
        (b"status\n", "not JSON"),
        (b"\xff\xfe\xfd\n", "not UTF-8"),
        (b'{"op": "pickle"}\n', "unknown request"),
        (b"[1, 2]\n", "unknown request"),
        (b"[" * 3000 + b"\n", "not JSON"),  # too deep for the parser
        (b'{"op": "status", "op": 1}\n', "unknown request"),
    ],
)
def test_bad_requests_get_an_error_line(served: Path, payload: bytes, expected: str) -> None:
    assert expected in error_of(exchange(served, payload))


def test_an_empty_half_closed_connection_gets_an_error_line(served: Path) -> None:
    assert "empty request" in error_of(exchange(served, b"", half_close=True))


def test_a_long_line_is_cut_off_after_the_limit(served: Path) -> None:
    limit = _status_server.REQUEST_LIMIT
    assert "longer than" in error_of(exchange(served, b"x" * (limit + 1)))


def test_a_silent_client_is_dropped_after_the_request_time(
    served: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_status_server, "REQUEST_SECONDS", 0.2)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(DEADLINE_S)
        sock.connect(str(served))
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, without an answer
        assert time.monotonic() - started < DEADLINE_S / 2


def test_hostile_barrage_then_status_and_await_still_work(
    served: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(5)
    limit = _status_server.REQUEST_LIMIT

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(DEADLINE_S)
        sock.connect(str(served))
        return sock

    def drain(sock: socket.socket) -> bytes:
        """What the server sent before it closed (or reset) the connection."""
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
        return data

    with caplog.at_level(logging.WARNING):
        # Many connections at once, all silent: more than the server serves at a time.
        crowd = [connect() for _ in range(_status_server.MAX_CONNECTIONS + 16)]
        try:
            wait_until(lambda: _connections() == _status_server.MAX_CONNECTIONS, "a full house")
            # The loop still does other work meanwhile.
            assert looptoken.await_(asyncio.sleep(0, "busy?"), timeout=DEADLINE_S) == "busy?"
        finally:
            for sock in crowd:
                sock.close()
        wait_until(lambda: _connections() == 0, "the crowd to be dropped")
        # Random bytes, with and without a newline, some longer than the limit.
        for round_ in range(30):
            junk = rng.randbytes(rng.randrange(1, 2 * limit)) + b"\n" * (round_ % 2)
            with connect() as sock:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(junk)  # the server may answer and close before the end
                    sock.shutdown(socket.SHUT_WR)
                answer = drain(sock)
            if len(junk) <= limit:  # whole requests always get their error line
                assert "error" in json.loads(answer), answer
        with connect() as sock:
            sock.sendall(b"\xc3\x28\xa0\xa1" * 100 + b"\n")
            assert "not UTF-8" in error_of(drain(sock))
        with connect() as sock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"{" * (1 << 20))  # the server stops reading after the limit
            answer = drain(sock)
            assert answer == b"" or "longer than" in error_of(answer)
        half_closed = [connect() for _ in range(10)]
        for sock in half_closed:
            sock.shutdown(socket.SHUT_WR)
        for sock in half_closed:
            assert "empty request" in error_of(drain(sock))
            sock.close()
        assert ask(str(served))["state"] == "running"
        assert looptoken.await_(asyncio.sleep(0, "fine"), timeout=DEADLINE_S) == "fine"
        wait_until(lambda: _connections() == 0, "every hostile connection to be gone")
    assert not loop_errors(caplog), [r.getMessage() for r in loop_errors(caplog)]


def _connections() -> int:
    from django_looptoken import _monitor
    from django_looptoken._runtime import runtime

    run = runtime().current_run
    assert run is not None
    monitor = _monitor.monitor_of(run)
    assert monitor is not None
    return len(monitor.server.connections)


# -- fork -------------------------------------------------------------------------------


def test_a_forked_child_serves_its_own_socket_and_leaves_the_parents(served: Path) -> None:
    status_dir = served.parent

    def child() -> dict[str, Any]:
        with looptoken.start_loop():
            own = socket_of(status_dir, os.getpid())
            wait_until(own.exists, "the child's socket")
            answer = ask(str(own))
            parents = ask(str(served))
        return {
            "pid": os.getpid(),
            "answered_pid": answer["pid"],
            "parent_answered_pid": parents["pid"],
            "own_left": own.exists(),
        }

    report = in_child(child)
    assert report["answered_pid"] == report["pid"] != os.getpid()
    assert report["parent_answered_pid"] == os.getpid()
    assert not report["own_left"]  # removed by the child's shutdown
    assert served.exists()
    assert ask(str(served))["pid"] == os.getpid()


# -- the client: stale and foreign sockets -----------------------------------------------


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


@contextlib.contextmanager
def _bound_socket(path: Path, *, listen: bool) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        if listen:
            sock.listen()
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def test_collect_removes_sockets_of_dead_and_non_listening_processes(status_dir: Path) -> None:
    status_dir.mkdir(mode=0o700)
    dead = _dead_pid()
    dead_path = socket_of(status_dir, dead)
    unfinished = Path(f"{socket_of(status_dir, _dead_pid())}.new")
    refusing = socket_of(status_dir, os.getppid())  # a live pid, but nobody listens
    with (
        _bound_socket(dead_path, listen=True),
        _bound_socket(unfinished, listen=False),
        _bound_socket(refusing, listen=False),
    ):
        listing = collect(str(status_dir))
    assert listing.processes == []
    assert listing.silent == []
    assert listing.error is None
    assert os.listdir(status_dir) == []
    notes = "\n".join(listing.notes)
    assert f"process {dead} is gone" in notes
    assert f"process {os.getppid()} does not serve it" in notes
    assert len(listing.notes) == 3


def test_collect_refuses_sockets_of_other_users_without_connecting(
    served: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign = socket_of(served.parent, os.getppid())
    with _bound_socket(foreign, listen=True) as listener:
        if os.getuid() == 0:
            os.chown(foreign, FOREIGN_UID, FOREIGN_UID)
        else:  # without root, make every other file look foreign instead
            real_lstat = os.lstat

            def lstat(path: Any) -> os.stat_result:
                info = real_lstat(path)
                if os.fspath(path) != os.fspath(foreign):
                    return info
                fields = list(info)
                fields[stat.ST_UID] = FOREIGN_UID
                return os.stat_result(fields)

            monkeypatch.setattr(_status_socket.os, "lstat", lstat)
        listing = collect(str(served.parent))
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected to it
        assert foreign.exists()  # and nobody removed it
    assert [p["pid"] for p in listing.processes] == [os.getpid()]
    (note,) = listing.notes
    assert f"Refused {foreign}: owned by uid {FOREIGN_UID}" in note


def test_a_process_whose_loop_is_blocked_still_answers_and_says_so(served: Path) -> None:
    blocking, release = threading.Event(), threading.Event()

    async def block() -> None:
        blocking.set()
        release.wait(DEADLINE_S)

    blocked = looptoken.spawn(block())
    try:
        assert blocking.wait(DEADLINE_S)
        # The socket's thread answers however long the loop is held, and the
        # answer says it once the hold passes SLOW_CALLBACK_DURATION.
        wait_until(lambda: ask(str(served))["blocked_s"] > 0, "the answer to say it")
        (status,) = collect(str(served.parent)).processes
    finally:
        release.set()
    blocked.result(timeout=DEADLINE_S)
    assert status["pid"] == os.getpid()
    assert status["blocked_s"] > 0
    wait_until(lambda: ask(str(served))["blocked_s"] == 0, "the loop to run again")


def test_collect_lists_a_process_that_does_not_answer_as_silent(
    status_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_status_socket, "CLIENT_SECONDS", 0.3)
    with silent_processes(status_dir, 1, "tests.settings") as (pid,):
        listing = collect(str(status_dir))
        assert listing.processes == []
        ((silent, why),) = listing.silent
        assert silent == pid
        assert "no answer within 0.3 s" in why
        assert socket_of(status_dir, pid).exists()  # a live process's socket is never removed


def test_collect_can_leave_out_its_own_process(served: Path) -> None:
    assert collect(str(served.parent), exclude_pid=os.getpid()).processes == []
