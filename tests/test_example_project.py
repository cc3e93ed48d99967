"""The example project `make demo` serves: its checks pass and its page answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"

SCRIPT = """
import django
django.setup()
from django.test import Client
response = Client().get("/")
print(response.status_code)
print(response.content.decode())
"""


def run_in_example(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example.settings", "PYTHONDEVMODE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=60
    )


def test_example_project_passes_its_checks() -> None:
    result = run_in_example("manage.py", "check", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_example_index_fans_out_on_the_shared_loop() -> None:
    result = run_in_example("-c", SCRIPT)
    assert result.returncode == 0, result.stderr
    status, *body = result.stdout.splitlines()
    assert status == "200"
    assert body[0].startswith("3 upstream calls at once")
    assert body[1:4] == [f"upstream {i} answered after 0.3 s" for i in (1, 2, 3)]
    assert body[4].startswith("shared loop: uvloop")
    assert "Traceback" not in result.stderr
