"""Loop tokens: score.asyncio's ``start_loop`` / ``release_loop`` API.

The shared loop runs while at least one token is held. The last release runs
the shutdown sequence and stops the loop; the next ``start_loop()`` starts a
fresh one.
"""

from __future__ import annotations

import asyncio
import warnings
from types import TracebackType

from django_looptoken._loop_run import LoopRun
from django_looptoken._runtime import runtime
from django_looptoken.conf import validate_timeout


class LoopToken:
    """Keeps the shared loop running until released.

    Release it with ``token.release()``, ``release_loop(token)`` or by using it
    as a context manager. Releasing twice is a no-op. A token garbage-collected
    while held is released and a ``ResourceWarning`` is emitted.
    """

    __slots__ = ("_held", "_run")

    def __init__(self, run: LoopRun) -> None:
        self._run = run
        # Emptied by the first release. list.pop() is atomic, so of two
        # threads releasing at once exactly one gets the run; a list costs
        # less to make than a lock, and the middleware makes one per request.
        self._held = [run]

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop this token keeps (or kept) running."""
        return self._run.loop

    @property
    def held(self) -> bool:
        """Whether this token still keeps the shared loop alive."""
        return bool(self._held) and runtime().is_current(self._run)

    def release(self) -> None:
        """Release the token; if it was the last one, stop the loop."""
        try:
            run = self._held.pop()
        except IndexError:
            return  # released before
        runtime().release(run)

    def __enter__(self) -> LoopToken:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<LoopToken {'held' if self.held else 'released'}>"

    def __del__(self) -> None:
        if not self._held or not runtime().is_current(self._run):
            return  # released, the common case, checked first: one per request
        # Finalizers can run anywhere, even inside the runtime's lock, so the
        # release is handed to the loop's thread instead of done here.
        try:
            self._run.loop.call_soon_threadsafe(self.release)
        except RuntimeError:
            return  # the loop is closing; its tokens no longer count
        warnings.warn(
            "A LoopToken was garbage-collected while held; it has been released. "
            "Release tokens explicitly or use 'with looptoken.start_loop():'.",
            ResourceWarning,
            stacklevel=1,
            source=self,
        )


def start_loop() -> LoopToken:
    """Make sure the shared loop runs in its thread and return a token for it.

    Thread-safe. Never returns a token on a loop that is stopping: a call
    racing with a stop waits and starts a fresh loop, or raises
    ``LoopStoppedError`` while the process shuts down.
    """
    return LoopToken(runtime().acquire())


def release_loop(token: LoopToken) -> None:
    """Release ``token`` (the same as ``token.release()``)."""
    if not isinstance(token, LoopToken):
        raise TypeError(f"release_loop() takes a LoopToken from start_loop(), not {token!r}.")
    token.release()


def get_loop() -> asyncio.AbstractEventLoop:
    """The shared loop: the one running now, or the one the next start will run.

    From other threads, use it only through thread-safe calls
    (``call_soon_threadsafe``, ``asyncio.run_coroutine_threadsafe``).
    """
    return runtime().get_loop()


def shutdown(timeout: float | None = None) -> None:
    """Release the app's token, drain the others, run the shutdown sequence.

    Waits up to ``timeout`` seconds (default ``SHUTDOWN_TIMEOUT``), drain and
    sequence together, and returns when the loop is closed. Tokens still held
    then stop counting and their holders' waits end with ``LoopStoppedError``.
    A later ``start_loop()`` starts a fresh loop.
    """
    runtime().shutdown(validate_timeout(timeout, "shutdown", zero_ok=True))
