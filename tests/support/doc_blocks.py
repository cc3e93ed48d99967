"""Fenced code blocks of a Markdown file, with the line each starts on."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: ``lang`` and ``attrs`` come from its info string."""

    name: str  # the file, relative to the repository: docs/api.md
    line: int  # 1-based line of the opening fence
    lang: str
    attrs: str
    code: str

    @property
    def where(self) -> str:
        """``docs/api.md:42``."""
        return f"{self.name}:{self.line}"

    @property
    def file(self) -> str | None:
        """The project file a ``python title="shop/views.py"`` block belongs to
        (docs/testing.md; tests/test_pytest_plugin.py runs that project)."""
        title = re.search(r'title="([^"]+\.\w+)"', self.attrs)
        return title[1] if title else None

    @property
    def not_run(self) -> bool:
        """A ``python title="not run"`` block (see tests/test_docs.py)."""
        return 'title="not run"' in self.attrs


def blocks(root: Path, name: str) -> list[Block]:
    """Every fenced block of ``root / name``, in order; an unclosed fence is an error."""
    path = root / name
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip()
        lang, _, attrs = info.partition(" ")
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end])
            end += 1
        if end == len(lines):
            raise ValueError(f"{name}:{index + 1}: the code block is never closed")
        code = textwrap.dedent("\n".join(body)) + "\n"
        found.append(Block(name, index + 1, lang, attrs.strip(), code))
        index = end + 1
    return found
