"""App loading: AUTOSTART, invalid settings, management commands, process exit.

``django.setup()`` runs once per process, so app loading is tested in fresh
interpreters, each with its own settings module written to ``tmp_path``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

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
    tmp_path: Path,
    args: list[str],
    *,
    settings_module: str = "lt_settings",
    extra_settings: str = "",
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python *args`` in ``tmp_path`` with it on the path; return result and seconds.

    ``extra_settings`` is appended to the settings module first."""
    if extra_settings:
        module = tmp_path / f"{settings_module}.py"
        module.write_text(module.read_text() + extra_settings)
    pythonpath = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "PYTHONDEVMODE": "1",
        "DJANGO_SETTINGS_MODULE": settings_module,
        **(extra_env or {}),
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


def test_invalid_settings_log_once_at_setup_and_refuse_each_use(tmp_path: Path) -> None:
    """Bad settings never crash django.setup(): one ERROR record names every
    problem and its fix, no loop starts, and each use raises the same text."""
    write_settings(tmp_path, looptoken_setting={"BACKEND": 42, "SHUTDOWN_TIMOUT": 5})
    result, _ = run_script(
        tmp_path,
        """
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s %(message)s")

        import django

        django.setup()
        print("setup ok")

        from django.core.exceptions import ImproperlyConfigured

        import django_looptoken as looptoken
        from django_looptoken._runtime import runtime

        assert runtime().app_token_run is None
        for use in (looptoken.start_loop, looptoken.get_loop):
            try:
                use()
            except ImproperlyConfigured as exc:
                print(repr(str(exc)))
            else:
                raise SystemExit(f"{use.__name__}() used a loop from invalid settings")
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "setup ok"
    raised = [ast.literal_eval(line) for line in lines[1:]]
    assert len(raised) == 2
    assert raised[0] == raised[1]
    assert "looptoken.E003" in raised[0]
    assert "looptoken.E002: LOOPTOKEN has an unknown key 'SHUTDOWN_TIMOUT'." in raised[0]
    assert "Fix: Did you mean 'SHUTDOWN_TIMEOUT'?" in raised[0]
    assert result.stderr.count("ERROR django_looptoken") == 1
    assert f"ERROR django_looptoken {raised[0]}" in result.stderr
    assert "Shared loop started" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["x", None])
def test_invalid_shutdown_timeout_never_raises_at_exit(tmp_path: Path, value: object) -> None:
    """An invalid SHUTDOWN_TIMEOUT is reported, never a traceback at exit, in a
    script or in loopstatus."""
    write_settings(tmp_path, looptoken_setting={"SHUTDOWN_TIMEOUT": value})
    result, _ = run_script(tmp_path, "import django\n\ndjango.setup()\nprint('done')\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert_clean_stderr(result.stderr)
    assert "looptoken.E006" in result.stderr
    result, _ = run_python(tmp_path, ["-m", "django", "loopstatus"])
    assert "Traceback" not in result.stderr, result.stderr


COMMAND_SOURCE = """\
import asyncio
import os

from django.core.management.base import BaseCommand

import django_looptoken as looptoken
from django_looptoken._runtime import runtime
from django_looptoken._status import project
from django_looptoken._status_socket import socket_path
from django_looptoken.conf import looptoken_settings


class Command(BaseCommand):
    help = "Runs a coroutine on the shared loop."

    def add_arguments(self, parser):
        parser.add_argument("--app-token", action="store_true")
        parser.add_argument("--spawn", action="store_true")

    def handle(self, *args, **options):
        assert runtime().current_run is None, "the loop ran before the command needed it"
        if options["spawn"]:  # the first use may be a spawn: it starts the loop too
            self.stdout.write(looptoken.spawn(asyncio.sleep(0.01, result="ok")).result(10))
        else:
            self.stdout.write(looptoken.await_(asyncio.sleep(0.01, result="ok")))
        if options["app_token"]:
            if runtime().app_token_run is runtime().current_run is not None:
                self.stdout.write("app token held")
            socket = socket_path(looptoken_settings.STATUS_DIR, os.getpid(), project())
            if os.path.exists(socket):
                self.stdout.write("status socket served")
"""

LOG_DEBUG = """
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "formatters": {"plain": {"format": "%(levelname)s %(message)s"}},
    "loggers": {"django_looptoken": {"handlers": ["stderr"], "level": "DEBUG"}},
}
"""

DATABASE = """
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
"""


def _command_app(tmp_path: Path) -> Path:
    commands = tmp_path / "useloopapp" / "management" / "commands"
    commands.mkdir(parents=True)
    for package in (commands, commands.parent, commands.parent.parent):
        (package / "__init__.py").write_text("")
    (commands / "useloop.py").write_text(COMMAND_SOURCE)
    return commands.parent.parent


def test_management_command_using_await_exits_promptly(tmp_path: Path) -> None:
    """A command's first use starts the loop, which takes the app's token (the
    loop then stays up until exit), logged at DEBUG, not INFO."""
    _command_app(tmp_path)
    settings_module = write_settings(
        tmp_path,
        installed_apps=("django_looptoken", "useloopapp"),
        looptoken_setting={"STATUS_DIR": str(tmp_path / "status")},
    )
    result, elapsed = run_python(
        tmp_path,
        ["-m", "django", "useloop", "--app-token", f"--settings={settings_module}"],
        extra_settings=LOG_DEBUG,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ok", "app token held", "status socket served"]
    assert "DEBUG Shared loop started" in result.stderr
    assert "INFO" not in result.stderr
    assert_clean_stderr(result.stderr)
    assert elapsed < PROMPT_EXIT_SECONDS


def test_management_command_whose_first_use_is_spawn_starts_the_loop(tmp_path: Path) -> None:
    _command_app(tmp_path)
    settings_module = write_settings(
        tmp_path,
        installed_apps=("django_looptoken", "useloopapp"),
        looptoken_setting={"STATUS_DIR": str(tmp_path / "status")},
    )
    result, _ = run_python(
        tmp_path,
        ["-m", "django", "useloop", "--spawn", "--app-token", f"--settings={settings_module}"],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ok", "app token held", "status socket served"]
    assert_clean_stderr(result.stderr)


MIGRATE_HOOK = """\
import os
import threading

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def report(sender, **kwargs):
    if sender.name != "django.contrib.contenttypes":  # an app with models: it gets the signal
        return
    print("threads:", sorted(t.name for t in threading.enumerate()))
    directory = os.environ["LOOPTOKEN_TEST_STATUS_DIR"]
    print("sockets:", sorted(os.listdir(directory)) if os.path.exists(directory) else [])


class WatchConfig(AppConfig):
    name = "watchapp"

    def ready(self):
        post_migrate.connect(report)
"""


def test_migrate_starts_no_loop(tmp_path: Path) -> None:
    """`manage.py migrate` with AUTOSTART on starts no loop thread, watchdog or
    status socket, and logs nothing of the loop."""
    app = tmp_path / "watchapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "apps.py").write_text(MIGRATE_HOOK)
    status = tmp_path / "status"
    settings_module = write_settings(
        tmp_path,
        installed_apps=("django.contrib.contenttypes", "django_looptoken", "watchapp"),
        looptoken_setting={"STATUS_DIR": str(status)},
    )
    result, _ = run_python(
        tmp_path,
        ["-m", "django", "migrate", "-v", "0", f"--settings={settings_module}"],
        extra_settings=LOG_DEBUG + DATABASE,
        extra_env={"LOOPTOKEN_TEST_STATUS_DIR": str(status)},
    )
    assert result.returncode == 0, result.stderr
    threads = [line for line in result.stdout.splitlines() if line.startswith("threads:")]
    assert threads, result.stdout
    assert not any("looptoken" in line for line in threads), result.stdout
    assert "sockets: []" in result.stdout
    assert "Shared loop" not in result.stderr
    assert_clean_stderr(result.stderr)


def test_plain_script_still_starts_the_loop_at_load(tmp_path: Path) -> None:
    """Outside management commands (servers, scripts) AUTOSTART starts the loop
    at load, logged at INFO."""
    write_settings(tmp_path)
    (tmp_path / "lt_settings.py").write_text((tmp_path / "lt_settings.py").read_text() + LOG_DEBUG)
    result, _ = run_script(
        tmp_path,
        """
        import django

        django.setup()

        from django_looptoken._runtime import runtime

        print(runtime().app_token_run is not None)
        """,
    )
    assert result.stdout.strip() == "True", result.stderr
    assert "INFO Shared loop started" in result.stderr


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


def test_check_deploy_reports_invalid_settings(tmp_path: Path) -> None:
    """`manage.py check --deploy` lists every problem with its hint, and the
    check itself starts no loop (a BACKEND that builds none is reported)."""
    write_settings(tmp_path, looptoken_setting={"SHUTDOWN_TIMOUT": 5, "BACKEND": "os.getcwd"})
    result, _ = run_python(tmp_path, ["-m", "django", "check", "--deploy"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "looptoken.E002" in result.stderr
    assert "HINT: Did you mean 'SHUTDOWN_TIMEOUT'?" in result.stderr
    assert "looptoken.E009" in result.stderr
    assert "Traceback" not in result.stderr


def test_middleware_without_the_app_is_reported_where_it_loads(tmp_path: Path) -> None:
    """Servers run no checks: the process that loads the middleware without the
    app logs E010 once, and a check in that process reports it."""
    write_settings(tmp_path, installed_apps=("django.contrib.contenttypes",))
    (tmp_path / "lt_settings.py").write_text(
        (tmp_path / "lt_settings.py").read_text()
        + 'MIDDLEWARE = ["django_looptoken.middleware.LoopTokenMiddleware"]\n'
        + 'ROOT_URLCONF = "lt_settings"\nurlpatterns = []\nALLOWED_HOSTS = ["*"]\n'
    )
    result, _ = run_script(
        tmp_path,
        """
        import io
        import logging

        logging.basicConfig(format="%(levelname)s %(message)s")

        from django.core.management import call_command
        from django.core.management.base import SystemCheckError
        from django.core.wsgi import get_wsgi_application

        get_wsgi_application()  # what gunicorn, uWSGI and waitress do
        try:
            call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
        except SystemCheckError as error:
            print("check:", "looptoken.E010" in str(error))
        """,
    )
    assert result.stdout.strip() == "check: True", result.stdout + result.stderr
    assert result.stderr.count("ERROR looptoken.E010: LoopTokenMiddleware is in MIDDLEWARE") == 1
