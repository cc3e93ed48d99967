"""django_looptoken: one long-lived event loop per process for synchronous Django.

Layout (every public name is re-exported here):

* ``tokens``: the loop's life, score.asyncio's API: ``start_loop``,
  ``release_loop``, ``LoopToken``, ``get_loop``, ``shutdown``.
* ``bridge``: running coroutines from sync code: ``await_``,
  ``await_multiple``, ``spawn``, ``shutdown_waits_for``.
* ``resources``: ``loop_resource`` and ``LoopResource``, per-loop objects.
* ``streams``: ``iterate`` and ``enter``, async iterators and async context
  managers consumed from sync code.
* ``decorators``: ``runs_async``; ``middleware``: ``LoopTokenMiddleware``.
* ``exceptions``: ``LoopStoppedError``.
* ``status()`` (from ``_status``): a snapshot of this process's loop; the
  status socket, ``manage.py loopstatus`` and ``urls`` (the staff page) show it.
* ``signals``: ``loop_started``, ``loop_stopping``, ``loop_stopped``.
* ``conf`` and ``checks``: the ``LOOPTOKEN`` setting, its validation, and the
  system checks that wrap it.
* ``testing`` and ``pytest_plugin``: helpers and fixtures for a project's tests.
* private modules (leading underscore): the runtime, one loop's life, the
  blocking call, thread-sensitive hand-back, backends, the shutdown sequence,
  process hooks, the monitor (lag probe, watchdog, status socket), the
  status report; docs/internals.md lists each one's job.
"""

from django_looptoken import _process_hooks  # noqa: F401 - fork, settings and exit hooks
from django_looptoken._status import status
from django_looptoken.bridge import await_, await_multiple, shutdown_waits_for, spawn
from django_looptoken.decorators import runs_async
from django_looptoken.exceptions import LoopStoppedError
from django_looptoken.resources import LoopResource, loop_resource
from django_looptoken.streams import enter, iterate
from django_looptoken.tokens import LoopToken, get_loop, release_loop, shutdown, start_loop

__all__ = [
    "LoopResource",
    "LoopStoppedError",
    "LoopToken",
    "await_",
    "await_multiple",
    "enter",
    "get_loop",
    "iterate",
    "loop_resource",
    "release_loop",
    "runs_async",
    "shutdown",
    "shutdown_waits_for",
    "spawn",
    "start_loop",
    "status",
]
