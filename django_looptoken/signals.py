"""Signals about the shared loop's life, each sent with ``loop=``.

The sender is the loop's class (e.g. ``uvloop.Loop``). Receivers run on the
loop's own thread, so they must be quick and synchronous; they may schedule
coroutines with ``loop.create_task``. A receiver that raises is logged on the
``django_looptoken`` logger and does not stop the others.

* ``loop_started``: the loop runs and hands out tokens.
* ``loop_stopping``: the shutdown sequence begins (tasks not yet cancelled).
* ``loop_stopped``: the sequence is over; the loop closes right after.
"""

import asyncio
import logging

from django.dispatch import Signal

logger = logging.getLogger("django_looptoken")

loop_started = Signal()
loop_stopping = Signal()
loop_stopped = Signal()

_NAMES = {
    loop_started: "loop_started",
    loop_stopping: "loop_stopping",
    loop_stopped: "loop_stopped",
}


def send(signal: Signal, loop: asyncio.AbstractEventLoop) -> None:
    """Send one of the signals above for ``loop`` (the app does, on the loop
    thread); a receiver that raises is logged, and the others still run."""
    for receiver, result in signal.send_robust(sender=type(loop), loop=loop):
        if isinstance(result, Exception):
            name = _NAMES[signal]
            logger.error("A %s receiver failed: %r", name, receiver, exc_info=result)
