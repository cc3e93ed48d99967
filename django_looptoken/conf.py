"""The ``LOOPTOKEN`` setting, read in one place.

Values are read live from ``django.conf.settings`` (so ``override_settings``
works) and cached until Django's ``setting_changed`` signal says otherwise.
Without configured Django settings (a plain script) the defaults apply.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    "BACKEND": "auto",
    "AUTOSTART": True,
    "ASYNC_VIEWS": True,
    "DEFAULT_TIMEOUT": None,
    "SHUTDOWN_TIMEOUT": 30.0,
    "EXECUTOR_MAX_WORKERS": None,
    "DEBUG": False,
    "SLOW_CALLBACK_DURATION": 0.1,
    "STATUS_DIR": None,
    "WATCHDOG_SECONDS": 5.0,
}


class LoopTokenSettings:
    """Typed access to ``settings.LOOPTOKEN`` merged over :data:`DEFAULTS`.

    It never raises for bad values: ``checks.py`` reports those, and the
    runtime refuses to start a loop from settings that fail the checks.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    def user_settings(self) -> object:
        """The raw ``LOOPTOKEN`` value as the user wrote it (``{}`` if unset)."""
        if not settings.configured:
            return {}
        return getattr(settings, "LOOPTOKEN", {})

    def merged(self) -> dict[str, Any]:
        """Every key, with the user's values over the defaults."""
        if self._cache is None:
            user = self.user_settings()
            self._cache = {**DEFAULTS, **(user if isinstance(user, dict) else {})}
        return self._cache

    def clear_cache(self) -> None:
        """Forget the cached values (called when Django settings change)."""
        self._cache = None

    @property
    def BACKEND(self) -> str:
        """Which event loop implementation to run."""
        return str(self.merged()["BACKEND"])

    @property
    def AUTOSTART(self) -> bool:
        """Start the loop when the app loads and hold the app's token."""
        return bool(self.merged()["AUTOSTART"])

    @property
    def ASYNC_VIEWS(self) -> bool:
        """Run Django's own async views under WSGI on the shared loop."""
        return bool(self.merged()["ASYNC_VIEWS"])

    @property
    def DEFAULT_TIMEOUT(self) -> float | None:
        """Seconds for ``await_``-style calls that give no timeout."""
        value = self.merged()["DEFAULT_TIMEOUT"]
        return None if value is None else float(value)

    @property
    def SHUTDOWN_TIMEOUT(self) -> float:
        """Seconds the shutdown sequence waits for protected tasks."""
        return float(self.merged()["SHUTDOWN_TIMEOUT"])

    @property
    def EXECUTOR_MAX_WORKERS(self) -> int | None:
        """Size of the loop's default executor (``None``: Python's default)."""
        value = self.merged()["EXECUTOR_MAX_WORKERS"]
        return None if value is None else int(value)

    @property
    def DEBUG(self) -> bool:
        """asyncio debug mode on the shared loop."""
        return bool(self.merged()["DEBUG"])

    @property
    def SLOW_CALLBACK_DURATION(self) -> float:
        """Seconds after which a callback counts as slow."""
        return float(self.merged()["SLOW_CALLBACK_DURATION"])

    @property
    def STATUS_DIR(self) -> str | None:
        """Directory of the per-process status sockets (``None``: automatic)."""
        value = self.merged()["STATUS_DIR"]
        return None if value is None else os.fspath(value)

    @property
    def WATCHDOG_SECONDS(self) -> float | None:
        """Seconds of loop stall before its stack is logged (``None``: off)."""
        value = self.merged()["WATCHDOG_SECONDS"]
        return None if value is None else float(value)


looptoken_settings = LoopTokenSettings()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "LOOPTOKEN":
        looptoken_settings.clear_cache()


setting_changed.connect(_on_setting_changed)
