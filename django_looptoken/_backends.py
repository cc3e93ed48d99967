"""Turning the ``BACKEND`` setting into a zero-argument loop factory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from django_looptoken import _greenlets

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: The backends named by a word, whose loops are built from known classes.
BUILTIN = ("auto", "asyncio", "uvloop")


def uvloop_available() -> bool:
    """Whether uvloop can be imported in this environment."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_loop_factory(backend: str) -> LoopFactory:
    """Return the loop factory ``backend`` names, or raise ImproperlyConfigured.

    ``auto`` prefers uvloop and falls back to asyncio. Loops are built from
    their classes directly: asyncio's event loop policies are deprecated.
    Under eventlet the loop is a green thread that must wait in eventlet's
    hub: ``auto`` and ``asyncio`` give such a loop, and nothing else can.
    """
    if _greenlets.monkey_patched() == "eventlet":
        if backend in ("auto", "asyncio"):
            return _hub_selector_loop
        raise ImproperlyConfigured(
            f'LOOPTOKEN["BACKEND"] is {backend!r}, but eventlet monkey-patched this '
            "process: the loop must wait in eventlet's hub, which only an asyncio loop "
            'can do here. Use "auto" or "asyncio" (or serve with gevent or threads).'
        )
    if backend in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if backend == "uvloop":
                raise ImproperlyConfigured(
                    'LOOPTOKEN["BACKEND"] is "uvloop" but uvloop is not installed: '
                    'pip install "django-looptoken[uvloop]", or use "auto" or "asyncio".'
                ) from None
        else:
            return uvloop.new_event_loop
    if backend in ("auto", "asyncio"):
        if _greenlets.monkey_patched() == "gevent":
            return _native_selector_loop
        return asyncio.SelectorEventLoop
    if "." not in backend:
        raise ImproperlyConfigured(
            f'LOOPTOKEN["BACKEND"] is {backend!r}: use "auto", "asyncio", "uvloop" '
            "or the dotted path of a zero-argument callable returning a new event loop."
        )
    try:
        factory = import_string(backend)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f'LOOPTOKEN["BACKEND"] {backend!r} cannot be imported: {exc}'
        ) from exc
    if not callable(factory):
        raise ImproperlyConfigured(
            f'LOOPTOKEN["BACKEND"] {backend!r} is not callable: it must name a '
            "zero-argument callable returning a new event loop."
        )
    return factory  # type: ignore[no-any-return]


def _native_selector_loop() -> asyncio.AbstractEventLoop:
    # Under gevent, selectors.DefaultSelector is gevent's, which would run a
    # hub in the loop's thread: the loop uses the one gevent replaced.
    default_selector = _greenlets.native_selector_class()
    return asyncio.SelectorEventLoop(default_selector())


def _hub_selector_loop() -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop(_greenlets.hub_loop_selector_class()())


def build_loop(backend: str, factory: LoopFactory) -> asyncio.AbstractEventLoop:
    """Call ``factory`` (what ``backend`` names) for a new, unstarted loop, or raise
    ImproperlyConfigured saying what it did instead (raised, returned something
    else, a running or closed loop)."""
    try:
        loop: object = factory()
    except Exception as exc:
        raise ImproperlyConfigured(
            f'LOOPTOKEN["BACKEND"] {backend!r} failed to build an event loop: '
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(loop, asyncio.AbstractEventLoop):
        raise ImproperlyConfigured(
            f'LOOPTOKEN["BACKEND"] {backend!r} returned {loop!r} '
            f"({type(loop).__qualname__}), not an event loop."
        )
    if loop.is_running() or loop.is_closed():
        state = "running" if loop.is_running() else "closed"
        raise ImproperlyConfigured(
            f'LOOPTOKEN["BACKEND"] {backend!r} returned a {state} event loop; '
            "it must return a new one each time."
        )
    return loop
