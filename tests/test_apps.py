"""App loading: AUTOSTART, invalid settings, management commands, process exit.

``django.setup()`` runs once per process, so app loading is tested in fresh
interpreters, each with its own settings module written to ``tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import django_looptoken as looptoken

# A finished process must exit well before this; SHUTDOWN_TIMEOUT is 30 s.
PROMPT_EXIT_SECONDS = 10.0

EXIT_NOISE = (
    "Task was destroyed but it is pending",
    "Event loop is closed",
    "was never awaited",
    "Traceback",
)

SETTINGS_TEMPLATE = """\
SECRET_KEY = "test-apps-not-secret"
USE_TZ = True
INSTALLED_APPS = {installed_apps!r}
{looptoken}
"""


def write_settings(
    tmp_path: Path,
    *,
    looptoken_setting: object = None,
    installed_apps: tuple[str, ...] = ("django_looptoken",),
) -> str:
    """Write ``lt_settings.py`` to ``tmp_path``; return its module name."""
    line = "" if looptoken_setting is None else f"LOOPTOKEN = {looptoken_setting!r}"
    (tmp_path / "lt_settings.py").write_text(
        SETTINGS_TEMPLATE.format(installed_apps=list(installed_apps), looptoken=line)
    )
    return "lt_settings"


def run_python(
    tmp_path: Path, args: list[str], *, settings_module: str = "lt_settings"
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python *args`` in ``tmp_path`` with it on the path; return result and seconds."""
    pythonpath = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "PYTHONDEVMODE": "1",
        "DJANGO_SETTINGS_MODULE": settings_module,
    }
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result, time.monotonic() - start


def run_script(tmp_path: Path, source: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Write ``source`` to a script in ``tmp_path`` and run it."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return run_python(tmp_path, [str(script)])


def assert_clean_stderr(stderr: str) -> None:
    """No traceback and none of asyncio's exit-time complaints."""
    for noise in EXIT_NOISE:
        assert noise not in stderr, f"{noise!r} in stderr:\n{stderr}"


def test_autostart_runs_loop_after_setup_and_exits_promptly(tmp_path: Path) -> None:
    """With AUTOSTART (the default) the loop runs once setup returns, and the
    process still exits on its own, quickly and quietly."""
    write_settings(tmp_path)
    result, elapsed = run_script(
        tmp_path,
        """
        import asyncio

        import django

        django.setup()

        import django_looptoken as looptoken
        from django_looptoken._runtime import runtime

        assert looptoken.get_loop().is_running(), "loop not running after setup"
        assert runtime().app_token_run is not None, "the app holds no token"


        async def which_loop():
            await asyncio.sleep(0)
            return asyncio.get_running_loop()


        assert looptoken.await_(which_loop()) is looptoken.get_loop()
        print(looptoken.await_(asyncio.sleep(0.01, result="awaited")))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "awaited"
    assert_clean_stderr(result.stderr)
    assert elapsed < PROMPT_EXIT_SECONDS


def test_autostart_off_leaves_loop_stopped(tmp_path: Path) -> None:
    write_settings(tmp_path, looptoken_setting={"AUTOSTART": False})
    result, _ = run_script(
        tmp_path,
        """
        import django

        django.setup()

        import django_looptoken as looptoken
        from django_looptoken._runtime import runtime

        assert not looptoken.get_loop().is_running(), "AUTOSTART off but the loop runs"
        assert runtime().app_token_run is None
        print("stopped")
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stopped"
    assert_clean_stderr(result.stderr)


def test_invalid_settings_log_at_setup_and_refuse_start(tmp_path: Path) -> None:
    """Bad settings never crash django.setup(): the error id is logged, no loop
    starts, and an explicit start_loop() raises ImproperlyConfigured."""
    write_settings(tmp_path, looptoken_setting={"BACKEND": 42})
    result, _ = run_script(
        tmp_path,
        """
        import logging

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

        import django

        django.setup()
        print("setup ok")

        from django.core.exceptions import ImproperlyConfigured

        import django_looptoken as looptoken
        from django_looptoken._runtime import runtime

        assert runtime().app_token_run is None
        try:
            looptoken.start_loop()
        except ImproperlyConfigured as exc:
            print("refused:", exc)
        else:
            raise SystemExit("start_loop() started a loop from invalid settings")
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "setup ok"
    assert lines[1].startswith("refused:")
    assert "looptoken.E003" in lines[1]
    logged = [line for line in result.stderr.splitlines() if "looptoken.E003" in line]
    assert logged, result.stderr
    assert logged[0].startswith("ERROR django_looptoken")
    assert "Traceback" not in result.stderr


COMMAND_SOURCE = """\
import asyncio

from django.core.management.base import BaseCommand

import django_looptoken as looptoken


class Command(BaseCommand):
    help = "Runs a coroutine on the shared loop."

    def handle(self, *args, **options):
        self.stdout.write(looptoken.await_(asyncio.sleep(0.01, result="ok")))
"""


def test_management_command_using_await_exits_promptly(tmp_path: Path) -> None:
    commands = tmp_path / "useloopapp" / "management" / "commands"
    commands.mkdir(parents=True)
    for package in (commands, commands.parent, commands.parent.parent):
        (package / "__init__.py").write_text("")
    (commands / "useloop.py").write_text(COMMAND_SOURCE)
    settings_module = write_settings(tmp_path, installed_apps=("django_looptoken", "useloopapp"))
    result, elapsed = run_python(
        tmp_path, ["-m", "django", "useloop", f"--settings={settings_module}"]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert_clean_stderr(result.stderr)
    assert elapsed < PROMPT_EXIT_SECONDS


def test_score_asyncio_documented_behaviour(backend: str) -> None:
    """score.asyncio's documented example: ten tokens, the loop runs until the last goes."""
    assert not looptoken.get_loop().is_running()
    tokens: list[looptoken.LoopToken] = []
    try:
        for _ in range(10):
            tokens.append(looptoken.start_loop())
            assert looptoken.get_loop().is_running()
        while len(tokens) > 1:
            looptoken.release_loop(tokens.pop())
            assert looptoken.get_loop().is_running()
        looptoken.release_loop(tokens.pop())
        assert not looptoken.get_loop().is_running()
    finally:
        for token in tokens:
            token.release()


def test_score_asyncio_tokens_share_one_loop(backend: str) -> None:
    """All tokens held at once keep the same loop; a start after the last release
    runs a fresh one."""
    with looptoken.start_loop():
        first = looptoken.get_loop()
        with looptoken.start_loop():
            assert looptoken.get_loop() is first
    with looptoken.start_loop():
        assert looptoken.get_loop() is not first
        assert looptoken.get_loop().is_running()
    assert first.is_closed()
