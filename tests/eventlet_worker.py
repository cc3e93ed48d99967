"""A process under eventlet whose loop is held by a call that eventlet
patched: ``time.sleep`` in a coroutine yields to the hub, with the loop
still in that coroutine. ``python -m tests.eventlet_worker STOP_FILE``
prints ``ready <pid>`` and holds the loop so until ``STOP_FILE`` exists;
SIGTERM ends it. Settings as for ``tests.status_worker``.
"""

import eventlet

eventlet.monkey_patch()

import asyncio  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from tests.status_worker import configure  # noqa: E402


async def sleeps_in_a_coroutine(stop_file: str) -> None:
    """Hold the loop in eventlet's patched ``time.sleep`` until ``stop_file`` exists."""
    while not os.path.exists(stop_file):  # noqa: ASYNC240 - holds the loop, on purpose
        time.sleep(0.01)  # noqa: ASYNC251 - holds the loop, as the listing must show
    await asyncio.sleep(0)


def main() -> None:
    """Start the loop, hold it, wait to be stopped."""
    configure()
    import django

    django.setup()
    import django_looptoken as looptoken

    with looptoken.start_loop():
        looptoken.spawn(sleeps_in_a_coroutine(sys.argv[1]))
        print(f"ready {os.getpid()}", flush=True)
        eventlet.sleep(120)  # until SIGTERM


if __name__ == "__main__":
    main()
