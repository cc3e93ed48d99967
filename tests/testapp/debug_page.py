"""Reading Django's technical 500 page (DEBUG) the way a developer does."""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Callable
from typing import Any


def page_text(content: bytes) -> str:
    """The page with its HTML entities decoded."""
    return html.unescape(content.decode())


def frames(content: bytes) -> list[tuple[str, int, str]]:
    """(file, line, function) of each frame of the page's traceback, outermost first."""
    return [
        (path, int(line), name)
        for path, line, name in re.findall(
            r'File "([^"]+)", line (\d+), in (\w+)', page_text(content)
        )
    ]


def line_of(function: Callable[..., Any], text: str) -> int:
    """The number of the first source line of ``function`` that contains ``text``."""
    lines, first = inspect.getsourcelines(function)
    return first + next(i for i, line in enumerate(lines) if text in line)
