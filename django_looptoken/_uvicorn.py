"""uvicorn's workers must not re-raise the stop signal over the exit drain.

uvicorn's ``Server.capture_signals`` records SIGTERM/SIGINT, shuts the
server down gracefully, restores the handlers it found when it started
(``SIG_DFL`` in a ``--workers N`` child) and raises the recorded signals
again. The default SIGTERM then kills the worker before the interpreter's
exit hooks run, so protected work would be lost. Once the app's handler has
chained to uvicorn's, the signal has done its job (uvicorn stops serving);
forgetting it lets ``Server.run`` return and the process exit normally,
through the drain.
"""

from __future__ import annotations

from typing import Any


def forget_captured_signal(handler: Any, signum: int) -> None:
    """If ``handler`` is a uvicorn server's ``handle_exit``, keep it from re-raising ``signum``."""
    server = getattr(handler, "__self__", None)
    if not type(server).__module__.startswith("uvicorn."):
        return
    captured = getattr(server, "_captured_signals", None)
    if isinstance(captured, list):
        # Only this signal: any other one it recorded keeps uvicorn's meaning.
        captured[:] = [recorded for recorded in captured if recorded != signum]
