"""``manage.py loopstatus``: table, JSON, projects, refusals, --watch, nothing running."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from tests.status_worker import (
    ROOT,
    LineReader,
    manage,
    running_worker,
    silent_processes,
    socket_of,
    worker_env,
)
from tests.support.processes import DEADLINE_S

WATCH = ("loopstatus", "--watch", "0.2")


def loopstatus(*args: str) -> tuple[str, str]:
    """Run the command in this process; return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("loopstatus", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def rows_by_pid(table: str) -> dict[int, list[str]]:
    lines = table.strip().splitlines()
    return {int(line.split()[0]): line.split() for line in lines[1:]}


def test_the_table_shows_each_live_process(status_dir: Path) -> None:
    with running_worker(status_dir) as one, running_worker(status_dir) as two:
        out, err = loopstatus()
    header, *_ = out.splitlines()
    assert header.split()[:4] == ["PID", "ROLE", "STATE", "BACKEND"]
    assert "PROJECT" not in header  # only with --all
    rows = rows_by_pid(out)
    assert set(rows) == {one.pid, two.pid}
    for row in rows.values():
        assert row[1] == "worker"
        assert row[2] == "running"
        assert row[3] == "uvloop.Loop"  # BACKEND "auto" with uvloop installed
        assert row[5] == "1"  # the worker's token
    assert err == ""


def test_json_has_every_process_with_its_status(status_dir: Path) -> None:
    with running_worker(status_dir, LOOPTOKEN_TEST_BACKEND="asyncio") as worker:
        worker.tell("hold 3", "held")
        report = json.loads(loopstatus("--json")[0])
        worker.tell("release", "released")
    assert report["status_dir"] == str(status_dir)
    assert report["project"] == "tests.settings"
    (process,) = report["processes"]
    assert process["pid"] == worker.pid
    assert process["backend"] == "asyncio.unix_events._UnixSelectorEventLoop"
    assert process["tasks"] == 3
    assert process["project"] == "tests.settings"
    assert "would_start" not in report


def test_other_projects_only_with_all(status_dir: Path) -> None:
    other = {"DJANGO_SETTINGS_MODULE": "tests.integration.server_settings"}
    with running_worker(status_dir, **other) as worker:
        out, _ = loopstatus()
        assert "No live process of project tests.settings" in out
        assert "1 process(es) of other projects run there: use --all." in out
        everything, _ = loopstatus("--all")
        report = json.loads(loopstatus("--json", "--all")[0])
    row = rows_by_pid(everything)[worker.pid]
    assert row[-1] == "tests.integration.server_settings"
    assert [p["pid"] for p in report["processes"]] == [worker.pid]


def test_silent_processes_of_other_projects_only_with_all(status_dir: Path) -> None:
    with (
        silent_processes(status_dir, 1, "tests.settings") as (ours,),
        silent_processes(status_dir, 2, "another.project.settings") as theirs,
    ):
        out, _ = loopstatus()
        report = json.loads(loopstatus("--json")[0])
        everything, _ = loopstatus("--all")
    assert set(rows_by_pid(out)) == {ours}
    assert rows_by_pid(out)[ours][2:4] == ["no", "answer"]
    assert [silent["pid"] for silent in report["silent"]] == [ours]
    assert set(rows_by_pid(everything)) == {ours, *theirs}


@pytest.mark.one_backend  # it shows the project's default settings
def test_with_nothing_running_it_says_what_would_start(status_dir: Path) -> None:
    out, err = loopstatus()
    assert f"No live process of project tests.settings serves a status in {status_dir}" in out
    assert "backend: uvloop.Loop (uvloop is installed)" in out
    assert "BACKEND = 'auto'" in out
    assert f"STATUS_DIR = '{status_dir}'" in out
    assert "WATCHDOG_SECONDS = 5.0" in out
    assert err == ""
    report = json.loads(loopstatus("--json")[0])
    assert report["processes"] == []
    assert report["would_start"]["backend"] == "uvloop.Loop"
    assert report["would_start"]["uvloop_installed"] is True


def test_with_invalid_settings_it_shows_the_errors(settings: Any, status_dir: Path) -> None:
    settings.LOOPTOKEN = {**settings.LOOPTOKEN, "BACKEND": "nope"}
    out, _ = loopstatus()
    assert "nothing: the LOOPTOKEN setting is invalid" in out
    assert "looptoken.E004" in out


def test_sockets_of_other_users_are_refused_with_a_message(
    status_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_worker(status_dir) as worker:
        path = socket_of(status_dir, worker.pid)
        if os.getuid() == 0:
            os.chown(path, 4242, 4242)
            out, err = loopstatus()
            os.chown(path, 0, 0)  # the worker removes it at exit
        else:  # without root, pretend this user is someone else
            monkeypatch.setattr(os, "getuid", lambda: 4242)
            with pytest.raises(CommandError, match="owned by uid"):
                loopstatus()
            return
    assert f"Refused {path}: owned by uid 4242" in err
    assert "No live process" in out


def test_an_unsafe_status_dir_is_a_command_error(status_dir: Path) -> None:
    status_dir.mkdir(mode=0o755)
    status_dir.chmod(0o755)
    with pytest.raises(CommandError, match="has mode 0755; it must be 0700"):
        loopstatus()


def test_bad_watch_values_are_command_errors(status_dir: Path) -> None:
    for value in ("0", "-1", "nan"):
        with pytest.raises(CommandError, match="--watch takes a number of seconds above 0"):
            loopstatus("--watch", value)


def test_help_describes_the_options(status_dir: Path) -> None:
    result = manage(status_dir, "loopstatus", "--help")
    assert result.returncode == 0
    for text in ("--json", "--watch SECONDS", "--all", "live process"):
        assert text in result.stdout


def test_the_command_leaves_out_its_own_loop(status_dir: Path) -> None:
    # With AUTOSTART the command's own process runs a loop (and a socket) too.
    with running_worker(status_dir) as worker:
        result = manage(status_dir, "loopstatus", "--json", LOOPTOKEN_TEST_AUTOSTART="1")
    assert result.returncode == 0, result.stderr
    assert [p["pid"] for p in json.loads(result.stdout)["processes"]] == [worker.pid]
    assert "Traceback" not in result.stderr


def test_watch_refreshes_until_ctrl_c(status_dir: Path) -> None:
    with running_worker(status_dir) as worker:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.status_worker",
                "manage",
                "loopstatus",
                "--watch",
                "0.2",
            ],
            cwd=ROOT,
            env=worker_env(status_dir, LOOPTOKEN_TEST_AUTOSTART="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            reader = LineReader(process)
            refreshes = 0
            while refreshes < 3:
                line = reader.read_line()
                if line.startswith("Every 0.2 s, until Ctrl-C."):
                    refreshes += 1
                if line.startswith(str(worker.pid)):
                    assert "running" in line
            process.send_signal(signal.SIGINT)
            assert process.wait(DEADLINE_S) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            stderr = process.stderr.read().decode() if process.stderr else ""
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr


def test_the_table_follows_tasks_as_they_come_and_go(status_dir: Path) -> None:
    with running_worker(status_dir) as worker:
        before = rows_by_pid(loopstatus()[0])[worker.pid]
        worker.tell("hold 4", "held")
        during = rows_by_pid(loopstatus()[0])[worker.pid]
        worker.tell("release", "released")
        deadline = time.monotonic() + DEADLINE_S
        while (after := rows_by_pid(loopstatus()[0])[worker.pid])[6] != "0":
            assert time.monotonic() < deadline, "the tasks did not finish"
            time.sleep(0.02)
    columns = before  # PID ROLE STATE BACKEND UPTIME TOKENS TASKS AWAITS ...
    assert (columns[6], during[6], after[6]) == ("0", "4", "0")
    assert int(after[7]) >= 1  # the worker's await_ calls are counted
