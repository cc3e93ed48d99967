"""The process's shared loop: its state machine and token count.

One ``Runtime`` per process. A lock guards the state; while the loop runs,
tokens are counted without it, and only a release that may be the last
takes it. Starting and stopping the loop happen outside the lock, and
callers that arrive meanwhile wait on a condition for the transition to
finish (anyio's blocking-portal pattern). After a fork the child drops the
parent's runtime untouched and builds its own; ``_process_hooks`` installs
the process-wide hooks (fork, settings change, exit) that drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable
from enum import Enum

from django_looptoken import _greenlets, _shutdown, _waiting, signals
from django_looptoken._backends import build_loop, resolve_loop_factory
from django_looptoken._loop_run import LoopRun
from django_looptoken._native_pool import give_native_executor
from django_looptoken.conf import eventlet_async_views_problem, looptoken_settings
from django_looptoken.exceptions import LoopStoppedError

logger = logging.getLogger("django_looptoken")


class State(str, Enum):
    """Where the shared loop is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


# Plain names for the members: on Python 3.11 each State.X lookup costs more
# than the whole token count, and acquire/release run on every await_.
STOPPED, STARTING, RUNNING, STOPPING = State


def new_loop() -> asyncio.AbstractEventLoop:
    """Build an unstarted loop from the settings (backend, debug, executor);
    ImproperlyConfigured, naming every problem, if the settings are invalid."""
    conf = looptoken_settings
    conf.raise_if_invalid()
    loop = build_loop(conf.BACKEND, resolve_loop_factory(conf.BACKEND))
    loop.set_debug(conf.DEBUG)
    loop.slow_callback_duration = conf.SLOW_CALLBACK_DURATION
    # A pool whose threads the exit does not wait for (see _native_pool), of
    # the size asyncio's own default executor would have.
    give_native_executor(loop, conf.EXECUTOR_MAX_WORKERS or min(32, (os.cpu_count() or 1) + 4))
    return loop


class Runtime:
    """Token counting and the loop's start/stop transitions for one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = STOPPED
        self._run: LoopRun | None = None
        # The running loop, None in every other state: what each request reads
        # to route async views (ASYNC_VIEWS), so a plain attribute.
        self.running_loop: asyncio.AbstractEventLoop | None = None
        self._next_loop: asyncio.AbstractEventLoop | None = None
        # While set, no new loop may start: shutdown() is running, or the
        # process is exiting (then for good).
        self._closing = False
        self._exiting = False
        self.app_token_run: LoopRun | None = None
        # The app's token was on a loop whose thread died, or AUTOSTART waits
        # for a management command's first use: the next loop started carries
        # it (again), so AUTOSTART keeps meaning "always on once started".
        self._app_token_lost = False
        # AUTOSTART in uWSGI's master: no loop here, one in each forked worker.
        self._app_token_for_forked_workers = False
        self._on_app_token: Callable[[], None] | None = None
        # Starts and stops are news in a server, not in a management command.
        self.lifecycle_level = logging.INFO
        self.pid = os.getpid()

    # -- reading -------------------------------------------------------------

    @property
    def state(self) -> State:
        """The loop's state now."""
        return self._state

    @property
    def exiting(self) -> bool:
        """Whether the process is exiting (the exit hook has begun)."""
        return self._exiting

    @property
    def current_run(self) -> LoopRun | None:
        """The loop's life now (None when stopped)."""
        return self._run

    def run_for(self, loop: asyncio.AbstractEventLoop) -> LoopRun | None:
        """The current run if ``loop`` is the shared loop, else None."""
        run = self._run
        return run if run is not None and run.loop is loop else None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The loop running now, or the one the next start will run."""
        with self._lock:
            if self._run is not None:
                return self._run.loop
            if self._next_loop is None:
                self._next_loop = new_loop()
            return self._next_loop

    def _set_state(self, state: State) -> None:
        # Called with the lock held.
        self._state = state
        run = self._run
        if run is not None:
            run.accepting = state is RUNNING
        self.running_loop = run.loop if state is RUNNING and run is not None else None

    # -- tokens ---------------------------------------------------------------

    def acquire(self) -> LoopRun:
        """Count a token on the running loop, starting a loop if none runs.

        Never counts a token on a loop that is stopping: such a caller waits
        for the stop to finish and starts a fresh loop, or, while the process
        is shutting down, gets LoopStoppedError at once.
        """
        run = self._run
        if run is not None and run.accepting:
            # The usual case, without the lock: count first, then look again.
            # A stop clears ``accepting`` before it reads the count, so either
            # it sees this token and keeps running, or this sees it stopping.
            run.holders.append(None)
            if run.accepting:
                return run
            self.release(run)  # too late: uncount (maybe stopping it), then wait
        with self._lock:
            while True:
                run = self._run
                if self._state is RUNNING and run is not None:  # RUNNING implies a run
                    run.holders.append(None)
                    return run
                if self._closing:
                    raise LoopStoppedError(
                        "The shared loop is shutting down and may not start again now."
                    )
                if self._state is STOPPED:
                    break
                # In slices, as every wait here (see _waiting).
                self._changed.wait(_waiting.SIGNAL_CHECK_SECONDS)
            self._set_state(STARTING)
            loop, self._next_loop = self._next_loop, None
        try:
            run = LoopRun(
                loop or new_loop(), on_closed=self._on_closed, begin_shutdown=_shutdown.begin
            )
            run.start()
        except BaseException:
            with self._lock:
                self._set_state(STOPPED)
                self._changed.notify_all()
            raise
        with self._lock:
            self._run = run
            self._set_state(RUNNING)
            run.holders.append(None)
            took_app_token = self._app_token_lost
            if took_app_token:
                self._app_token_lost = False
                self.app_token_run = run
                run.holders.append(None)
            on_app_token, self._on_app_token = self._on_app_token, None
            self._changed.notify_all()
        logger.log(
            self.lifecycle_level,
            "Shared loop started: %s (pid %d).",
            type(run.loop).__qualname__,
            os.getpid(),
        )
        eventlet_problem = eventlet_async_views_problem()
        if eventlet_problem is not None:
            logger.warning("%s", eventlet_problem)
        if took_app_token and on_app_token is not None:
            on_app_token()
        run.loop.call_soon_threadsafe(signals.send, signals.loop_started, run.loop)
        return run

    def running_run(self) -> LoopRun:
        """The running loop's life, without counting a token; LoopStoppedError if none.

        A loop that AUTOSTART has left for the first use (in a management
        command) starts here, with the app's token.
        """
        with self._lock:
            if self._state is RUNNING:
                assert self._run is not None
                return self._run
            # AUTOSTART whose loop waits for first use (a management command),
            # or whose loop died: work for the loop is a use, so start it now.
            for_the_app = self._app_token_lost and not self._closing
        if for_the_app:
            run = self.acquire()  # the app's token comes with the new loop
            self.release(run)
            return run
        looptoken_settings.raise_if_invalid()  # the reason no loop runs, if it is one
        raise LoopStoppedError(
            "The shared loop is not running, so nothing would keep this work alive: "
            "hold a token (looptoken.start_loop()) or leave LOOPTOKEN['AUTOSTART'] on."
        )

    def release(self, run: LoopRun, stop_timeout: float | None = None) -> None:
        """Uncount a token of ``run``; the last one stops the loop.

        A token of a loop that is already gone (shut down, or the parent's
        before a fork) is ignored.
        """
        holders = run.holders
        holders.pop()
        if holders:
            return  # not the last: no lock needed
        with self._lock:
            if run is not self._run or self._state is not RUNNING:
                return
            # Stop accepting lock-free acquires before reading the count:
            # one that counted before this sees it here, one after sees
            # ``accepting`` false and waits (see acquire).
            run.accepting = False
            if holders:
                run.accepting = True
                return
            self._set_state(STOPPING)
            self._changed.notify_all()
        self._stop(
            run, looptoken_settings.SHUTDOWN_TIMEOUT if stop_timeout is None else stop_timeout
        )

    def is_current(self, run: LoopRun) -> bool:
        """Whether ``run`` is the loop's current life."""
        return run is self._run

    # -- stopping -------------------------------------------------------------

    def _stop(self, run: LoopRun, timeout: float) -> None:
        # RuntimeError: the loop already closed (its thread died); _on_closed ran.
        with contextlib.suppress(RuntimeError):
            run.loop.call_soon_threadsafe(_shutdown.begin, run, timeout)
        run.wait_closed(timeout)

    def _on_closed(self, run: LoopRun) -> None:
        with self._lock:
            if self._run is run:
                self._set_state(STOPPED)  # while self._run is still run: clears accepting
                self._run = None
                self._changed.notify_all()
            if run.crashed and self.app_token_run is run:
                self.app_token_run = None
                self._app_token_lost = True
        logger.log(self.lifecycle_level, "Shared loop stopped (pid %d).", os.getpid())

    def shutdown(self, timeout: float | None = None) -> None:
        """Release the app token, drain other tokens up to ``timeout``, stop the loop."""
        budget = looptoken_settings.SHUTDOWN_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + budget
        with self._lock:
            run = self._run
            if run is not None and run.on_loop_thread():
                raise RuntimeError(
                    "shutdown() waits for the shared loop to stop, so it cannot be called "
                    "from the loop's own thread; call it from synchronous code."
                )
            self._closing = True
            app_run, self.app_token_run = self.app_token_run, None
        try:
            if app_run is not None:
                self.release(app_run, stop_timeout=budget)
            with self._lock:
                run = self._run
                if run is None:
                    return
                # Drain: in-flight holders finish; the last release stops the loop.
                _waiting.wait_for(
                    self._changed,
                    lambda: self._run is not run or self._state is STOPPING,
                    max(deadline - time.monotonic(), 0),
                )
                forced = self._run is run and self._state is RUNNING
                if forced:
                    self._set_state(STOPPING)
            remaining = max(deadline - time.monotonic(), 0.0)
            if forced:
                logger.warning(
                    "Shutdown drain timed out with %d token(s) held; stopping the loop anyway.",
                    run.tokens,
                )
                self._stop(run, remaining)
            else:
                run.wait_closed(remaining)
        finally:
            with self._lock:
                self._closing = self._exiting

    def exit(self, timeout: float | None = None, shorter_because: str | None = None) -> None:
        """At interpreter exit: shut down for good and close the unstarted loop.

        The drain takes up to ``timeout`` (``SHUTDOWN_TIMEOUT`` by default);
        ``shorter_because`` says why it is less, when it is.
        """
        if timeout is None:
            timeout = looptoken_settings.SHUTDOWN_TIMEOUT
        with self._lock:
            self._exiting = True
            run = self._run
        if run is not None:
            logger.log(
                self.lifecycle_level,
                "Process exiting: draining the shared loop (up to %.1f s%s).",
                timeout,
                "" if shorter_because is None else f": {shorter_because}",
            )
        self.shutdown(timeout)
        self.forget_next_loop()

    def stop_now(self, grace: float) -> None:
        """Stop waiting for anything: cut the loop's work short, wait ``grace`` for it."""
        with self._lock:
            self._exiting = self._closing = True
            run = self._run
        if run is None or run.on_loop_thread():
            return
        with contextlib.suppress(RuntimeError):  # already closed
            run.loop.call_soon_threadsafe(_shutdown.hurry, run)
        _waiting.wait_event(run.closed, grace)

    def forget_next_loop(self) -> None:
        """Drop the unstarted loop ``get_loop()`` built (the settings changed)."""
        with self._lock:
            loop, self._next_loop = self._next_loop, None
        if loop is not None:
            loop.close()

    def hold_app_token_at_first_start(self, on_start: Callable[[], None] | None = None) -> None:
        """AUTOSTART whose loop waits for first use: the first loop started,
        when code first needs one, takes the app's token; ``on_start`` then
        runs in that caller's thread. Until then nothing runs: no loop,
        watchdog or socket."""
        with self._lock:
            self._app_token_lost = True
            self._on_app_token = on_start

    def leave_app_token_to_forked_workers(self) -> None:
        """AUTOSTART in a process that only forks the workers: start no loop
        here; each forked child takes the app's token at once. A use here
        still runs, on a loop that lives while tokens are held."""
        self._app_token_for_forked_workers = True

    def hold_app_token(self) -> None:
        """Start the loop for the app and count the app's token (AUTOSTART)."""
        run = self.acquire()
        with self._lock:
            previous, self.app_token_run = self.app_token_run, run
        if previous is not None:
            self.release(previous)


_runtime = Runtime()


def runtime() -> Runtime:
    """This process's runtime (a new one in a forked child)."""
    return _runtime


def _keep_forever(obj: object) -> None:
    # The parent's loop shares its selector, self-pipe and epoll set with the
    # child: closing or even freeing it here would break the parent's loop.
    # An extra reference the child never drops keeps it untouched until exit.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def start_afresh_in_forked_child() -> None:
    """In a forked child: drop the parent's runtime untouched and build this
    process's own (``_process_hooks`` calls it, however the fork happened)."""
    global _runtime
    parent = _runtime
    if parent.pid == os.getpid():
        return  # already done for this child (uWSGI may call both hooks)
    _keep_forever(parent)
    _runtime = Runtime()
    app_token = parent.app_token_run is not None or parent._app_token_for_forked_workers
    if app_token and not parent._exiting and _greenlets.may_patch_later():
        # A gevent worker monkey-patches itself right after the fork, and a
        # child about to exec needs no loop: start it at first use, where the
        # settings' check sees the process as it serves.
        looptoken_settings.clear_cache()
        _runtime.hold_app_token_at_first_start()
    elif app_token and not parent._exiting:
        try:
            _runtime.hold_app_token()
        except Exception:
            logger.exception("Starting the shared loop in the forked child failed.")
