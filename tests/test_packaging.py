"""The wheel a user builds from a checkout: quiet, complete, licensed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# One run: builds and inspects the wheel; no loop runs.
pytestmark = pytest.mark.one_backend

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["setup.cfg", "pyproject.toml", "README.md", "LICENSE"]


def test_the_wheel_builds_without_warnings_and_carries_templates_and_license(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "django_looptoken",
        source / "django_looptoken",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    # setuptools' warnings name their class (SetuptoolsDeprecationWarning...)
    # and box themselves in "!!"; pip's own "WARNING:" lines are about indexes.
    warnings = [line for line in output.splitlines() if "Warning" in line or "!!" in line]
    assert not warnings, output
    (wheel,) = (tmp_path / "dist").glob("django_looptoken-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "django_looptoken/templates/django_looptoken/status.html" in names
    assert "django_looptoken/py.typed" in names
    assert any(name.endswith("/LICENSE") for name in names)
