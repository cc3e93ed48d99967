"""Under a real ASGI server (uvicorn), async views run on the server's loop,
and a ``loop_resource`` gives them one instance per loop, closed with it."""

from __future__ import annotations

import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.processes import (
    NOISE,
    Launcher,
    Server,
    free_port,
    stop,
    wait_for_server_exit,
    wait_until,
)
from tests.testapp import events

EVENTS = "tests.integration.requests_settings"  # with LOOPTOKEN_TEST_EVENTS


def test_an_async_view_under_uvicorn_reuses_its_loops_resource_closed_at_ctrl_c(
    launcher: Launcher, tmp_path: Path
) -> None:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
    server = launcher.launch(
        "uvicorn",
        [*command, "tests.asgi:application"],
        port=port,
        settings=EVENTS,
        extra_env={"LOOPTOKEN_TEST_EVENTS": str(tmp_path)},
    )
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answers = [client.get("where/plain/").json() for _ in range(3)]
    # One server loop, not the shared one (under ASGI nothing is rerouted),
    # and one instance on it for every request.
    assert len({(a["pid"], a["loop"], a["pool"]) for a in answers}) == 1
    assert answers[0]["on_shared_loop"] is False
    pid, loop, pool = answers[0]["pid"], answers[0]["loop"], answers[0]["pool"]

    # Ctrl-C: uvicorn finishes, asyncio.Runner closes its loop's async
    # generators, and with them the loop's instances.
    stop(server, signal.SIGINT)
    log = events.log_path(tmp_path, pid).read_text().splitlines()
    assert f"pool_closed {pool} {loop}" in log, log
    for noise in NOISE:
        assert noise not in server.stderr()


def _lifecycle_uvicorn(
    launcher: Launcher, markers: Path, *options: str, new_session: bool = False
) -> Server:
    """uvicorn with ``options`` serving the lifecycle views, which leave their
    markers in ``markers`` (made here)."""
    markers.mkdir()
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
    return launcher.launch(
        "uvicorn",
        [*command, *options, "tests.asgi:application"],
        port=port,
        settings="tests.integration.lifecycle_settings",
        extra_env={"LOOPTOKEN_TEST_MARKERS": str(markers)},
        new_session=new_session,
    )


@pytest.mark.parametrize("stop_with", ["sigterm", "ctrl-c"])
def test_uvicorn_workers_drain_protected_work_on_a_stop(
    launcher: Launcher, tmp_path: Path, stop_with: str
) -> None:
    markers = tmp_path / "markers"
    ctrl_c = stop_with == "ctrl-c"
    server = _lifecycle_uvicorn(launcher, markers, "--workers", "2", new_session=ctrl_c)
    names = [f"job{n}" for n in range(6)]
    with httpx.Client(base_url=server.url, timeout=30) as client, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda name: client.get(f"lifecycle/drain/{name}/"), names))
    assert all(answer.status_code == 200 for answer in answers)
    # Each job finishes 0.5 s after its response: the workers must wait for it.
    # uvicorn re-raises SIGTERM after its graceful shutdown; without the app's
    # answer to that, the default action kills each worker before its drain.
    if ctrl_c:
        # A terminal's Ctrl-C: SIGINT to the foreground process group, the
        # master and every worker at once.
        os.killpg(server.process.pid, signal.SIGINT)
        assert wait_for_server_exit(server, 30) == 0
    else:
        stop(server, signal.SIGTERM, timeout=30)
    assert sorted(path.name for path in markers.glob("done-*")) == [f"done-{n}" for n in names]
    for noise in NOISE:
        assert noise not in server.stderr(), server.stderr()


def test_uvicorn_an_aborted_request_leaves_no_token_held(
    launcher: Launcher, tmp_path: Path
) -> None:
    """The client leaves before the response: the request's token is released
    all the same (Django closes the response; failing that, the token goes
    with the request's thread), so only the app's and this request's remain."""
    markers = tmp_path / "markers"
    server = _lifecycle_uvicorn(launcher, markers)
    with pytest.raises(httpx.ReadTimeout):  # the view answers after 0.5 s
        httpx.get(server.url + "lifecycle/drain/left/", timeout=0.1)
    wait_until((markers / "done-left").exists, "the aborted view's work to finish")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        wait_until(
            lambda: client.get("tokens/").json() == {"held": True, "tokens": 2},
            "the aborted request's token to be released",
        )
    stop(server, signal.SIGTERM, timeout=30)
    for noise in NOISE:
        assert noise not in server.stderr(), server.stderr()
