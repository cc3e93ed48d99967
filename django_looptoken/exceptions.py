"""Exceptions raised by django_looptoken."""


class LoopStoppedError(RuntimeError):
    """The shared loop stopped (or may not start) while a caller needed it.

    Raised at once to callers waiting on a loop that is shut down, and to
    calls that arrive while the process is shutting down.
    """
