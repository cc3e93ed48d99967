"""Signals about the shared loop's life, each sent with ``loop=``.

The sender is the loop's class (e.g. ``uvloop.Loop``). Receivers run on the
loop's own thread, so they must be quick and synchronous; they may schedule
coroutines with ``loop.create_task``. A receiver that raises is logged on the
``django_looptoken`` logger and does not stop the others.

* ``loop_started``: the loop runs and hands out tokens.
* ``loop_stopping``: the shutdown sequence begins (tasks not yet cancelled).
* ``loop_stopped``: the sequence is over; the loop closes right after.
"""

from django.dispatch import Signal

loop_started = Signal()
loop_stopping = Signal()
loop_stopped = Signal()
