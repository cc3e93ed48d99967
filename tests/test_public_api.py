"""The package root exports exactly the documented public names (docs/api.md)."""

from __future__ import annotations

import pytest

import django_looptoken as looptoken

# One run: inspects the public names; no loop runs.
pytestmark = pytest.mark.one_backend

PUBLIC = {
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
}


def test_the_exported_names_are_pinned() -> None:
    assert set(looptoken.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(looptoken, name).__doc__, f"{name} has no docstring"


def test_loop_stopped_error_is_a_runtime_error() -> None:
    assert issubclass(looptoken.LoopStoppedError, RuntimeError)


def test_signals_live_in_their_module() -> None:
    from django_looptoken import signals

    assert {"loop_started", "loop_stopping", "loop_stopped"} <= set(vars(signals))
