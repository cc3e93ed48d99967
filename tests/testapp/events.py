"""What a test server's loop went through, written as lines to a file the test reads.

``$LOOPTOKEN_TEST_EVENTS`` names the directory; each process writes
``events-<pid>.log``. Without it nothing is written.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from django_looptoken import signals


def log_path(directory: str | Path, pid: int) -> Path:
    """Where process ``pid`` writes its events."""
    return Path(directory, f"events-{pid}.log")


def record(event: str) -> None:
    """Append ``event`` as one line (one write, so lines never interleave)."""
    directory = os.environ.get("LOOPTOKEN_TEST_EVENTS")
    if not directory:
        return
    fd = os.open(log_path(directory, os.getpid()), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{event}\n".encode())
    finally:
        os.close(fd)


def _receiver(name: str) -> object:
    def receive(sender: type, loop: asyncio.AbstractEventLoop, **kwargs: object) -> None:
        assert isinstance(loop, sender)
        record(f"{name} {id(loop)}")

    return receive


def record_loop_signals() -> None:
    """Record ``loop_started``, ``loop_stopping`` and ``loop_stopped`` with the loop's id."""
    for name in ("loop_started", "loop_stopping", "loop_stopped"):
        getattr(signals, name).connect(_receiver(name), weak=False)
