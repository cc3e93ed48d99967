"""The tests' own process helpers: a hung process fails with its stacks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import descendants, wait_for_exit

HANGS = """
import os, time
def hangs_here(who):
    os.write(1, f"{who}\\n".encode())  # one write: the two processes share the pipe
    time.sleep(600)
def child_hangs_here():
    hangs_here("child")
def parent_hangs_here():
    hangs_here("parent")
child_hangs_here() if os.fork() == 0 else parent_hangs_here()
"""


@pytest.mark.one_backend
def test_a_process_that_hangs_fails_with_the_stacks_of_it_and_its_children(
    tmp_path: Path,
) -> None:
    stderr_path = tmp_path / "hang.err"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-X", "dev", "-c", HANGS],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONDEVMODE": "1"},
        )
    assert process.stdout is not None
    try:
        # Both are in their functions once both said so.
        assert {process.stdout.readline(), process.stdout.readline()} == {b"child\n", b"parent\n"}
        with pytest.raises(AssertionError) as failure:
            wait_for_exit(process, 0.1, stderr_path)
    finally:
        if process.poll() is None:  # the test failed before the dump: stop both, by pid
            for child in descendants(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            process.kill()
            process.wait()
        process.stdout.close()
    said = str(failure.value)
    assert f"pid {process.pid} did not exit within 0.1 s" in said
    assert "in parent_hangs_here" in said
    assert "in child_hangs_here" in said  # the forked child's stack too
