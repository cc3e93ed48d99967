"""Every code example of README.md and docs/*.md runs here, so the docs cannot drift.

Contributing to the docs: the conventions this file enforces.

* Every fenced block names its language. ```python blocks run; ```console,
  ```text, ```ini, ```json, ```yaml and ```mermaid blocks are not Python and do not.
* The ```python blocks of one file run in order, in one module per file
  (``looptoken_docs_api`` for docs/api.md, so ``__name__`` can serve as
  ``ROOT_URLCONF``), one test per block, its id ``docs/api.md:42``. A later
  block may use what an earlier one defined; a block selected alone (``-k``)
  runs the blocks before it first. Tracebacks point at the Markdown lines.
* They run in this process with the suite's settings (``tests.settings``),
  where ``AUTOSTART`` is off, as in a plain script: an example that needs a
  running loop holds a token (``with looptoken.start_loop():``) and releases
  it (the autouse leak check in conftest fails a block that leaves one). The
  test database is there (transactional, emptied after each block).
* A view an example defines is called by an example of the same file
  (``RequestFactory``, or the test client with ``ROOT_URLCONF=__name__``).
* Servers: examples read ``UPSTREAM_URL`` (an aiohttp server answering
  ``/weather``, ``/news`` and ``/slow?seconds=S``), ``REDIS_URL`` and
  ``POSTGRES_DSN`` from the environment. A file that names one of them gets
  that server, started once for the session on a free 127.0.0.1 port and
  stopped by its pid at the end (tests.support.services.py).
  ``make services`` installs Debian's redis-server and PostgreSQL.
* Settings blocks are checked against Django: the ``INSTALLED_APPS`` and
  ``MIDDLEWARE`` entries import, ``LOOPTOKEN`` passes the system checks, and
  ``LOGGING`` configures logging (in a subprocess).
* ```python title="shop/views.py" (a file name) makes the block a file of a
  project (docs/testing.md): tests/test_pytest_plugin.py writes the files out
  and runs the project's tests with pytest and Django's runner; not run here.
* ```python title="not run" marks an example that cannot run here (the
  "before" of score.asyncio, whose loop never stops). Only the files and
  counts in ``NOT_RUN_ALLOWED`` may have them, and they must still parse.

Reference checks: docs/settings.md gives every ``LOOPTOKEN`` key with its
real default and every check id; docs/api.md has a section, with a running
example, for every public name; docs/troubleshooting.md quotes every message
the package raises, warns or logs at WARNING or above.
"""

from __future__ import annotations

import ast
import importlib
import json
import linecache
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils.module_loading import import_string

import django_looptoken
from django_looptoken import checks, conf
from django_looptoken.conf import DEFAULTS
from tests.support.doc_blocks import Block, blocks
from tests.support.services import postgres_server, redis_server, upstream

# One run: each recipe runs in a project of its own, with the backend its settings name.
pytestmark = pytest.mark.one_backend

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = ["README.md", *(f"docs/{path.name}" for path in sorted((ROOT / "docs").glob("*.md")))]
BLOCKS = {name: blocks(ROOT, name) for name in DOC_FILES}
NOT_PYTHON = {"console", "text", "ini", "json", "yaml", "mermaid"}
NOT_RUN_ALLOWED = {"docs/migrating.md": 1}
PYTHON = [
    b
    for name in DOC_FILES
    for b in BLOCKS[name]
    if b.lang == "python" and not b.not_run and b.file is None  # files: test_pytest_plugin
]
SERVICES: dict[str, Callable[[], AbstractContextManager[str]]] = {
    "UPSTREAM_URL": upstream,
    "REDIS_URL": redis_server,
    "POSTGRES_DSN": postgres_server,
}


def _text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


# -- running the examples --------------------------------------------------------


class Services:
    """The servers examples name, each started on first need and kept for the session."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._urls: dict[str, str] = {}

    def url(self, variable: str) -> str:
        if variable not in self._urls:
            self._urls[variable] = self._stack.enter_context(SERVICES[variable]())
        return self._urls[variable]


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with ExitStack() as stack:
        yield Services(stack)


@dataclass
class FileRun:
    """The module one file's examples run in, and how many of them have run."""

    module: types.ModuleType
    done: int = 0
    broken: str | None = None
    modules: list[str] = field(default_factory=list)


_runs: dict[str, FileRun] = {}


@pytest.fixture(scope="module", autouse=True)
def _forget_example_modules() -> Iterator[None]:
    yield
    for run in _runs.values():
        sys.modules.pop(run.module.__name__, None)
    _runs.clear()


def _new_run(name: str) -> FileRun:
    module_name = "looptoken_docs_" + re.sub(r"\W", "_", Path(name).stem.lower())
    module = types.ModuleType(module_name)
    module.__file__ = str(ROOT / name)
    sys.modules[module_name] = module
    return FileRun(module)


def _execute(block: Block, namespace: dict[str, object]) -> None:
    # Blank lines first, so that tracebacks give the Markdown file's line
    # numbers; the padded source goes to linecache, so that they show the code.
    source = "\n" * block.line + block.code
    filename = f"<{block.where}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    _check_settings(block, namespace)


def _check_settings(block: Block, namespace: dict[str, object]) -> None:
    """A settings example must be settings Django accepts."""
    assigned = {
        target.id
        for node in ast.parse(block.code).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    for app in namespace["INSTALLED_APPS"] if "INSTALLED_APPS" in assigned else []:  # type: ignore[attr-defined]
        if app is not Ellipsis:
            importlib.import_module(app)
    for middleware in namespace["MIDDLEWARE"] if "MIDDLEWARE" in assigned else []:  # type: ignore[attr-defined]
        if middleware is not Ellipsis:
            import_string(middleware)
    if "LOOPTOKEN" in assigned:
        with override_settings(LOOPTOKEN=namespace["LOOPTOKEN"]):
            assert checks.settings_errors() == [], f"{block.where}: LOOPTOKEN fails the checks"
    if "LOGGING" in assigned:
        configure = (
            "import json, sys, logging.config; logging.config.dictConfig(json.loads(sys.argv[1]))"
        )
        subprocess.run(
            [sys.executable, "-c", configure, json.dumps(namespace["LOGGING"])], check=True
        )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("block", PYTHON, ids=lambda block: block.where)
def test_example_runs(block: Block, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    same_file = [b for b in PYTHON if b.name == block.name]
    for variable in SERVICES:
        if any(variable in b.code for b in same_file):
            monkeypatch.setenv(variable, services.url(variable))
    position = same_file.index(block)
    run = _runs.get(block.name)
    if run is None or run.done > position:  # first, or run again (a rerun, -k)
        run = _runs[block.name] = _new_run(block.name)
    if run.broken is not None:
        pytest.fail(f"{run.broken} failed, and the later blocks of the file build on it")
    for earlier in same_file[run.done : position + 1]:
        try:
            _execute(earlier, run.module.__dict__)
        except Exception as exc:
            run.broken = earlier.where
            if earlier is not block:
                raise AssertionError(
                    f"an earlier block of the file, {earlier.where}, failed"
                ) from exc
            raise
        run.done += 1


# -- conventions -------------------------------------------------------------------


def test_every_block_names_a_language_we_know() -> None:
    unknown = [
        f"{b.where} ({b.lang or 'no language'})"
        for name in DOC_FILES
        for b in BLOCKS[name]
        if b.lang != "python" and b.lang not in NOT_PYTHON
    ]
    assert not unknown, f"write ```python (it runs) or one of {sorted(NOT_PYTHON)}: {unknown}"


def test_not_run_blocks_are_rare_and_still_parse() -> None:
    for name in DOC_FILES:
        not_run = [b for b in BLOCKS[name] if b.lang == "python" and b.not_run]
        assert len(not_run) <= NOT_RUN_ALLOWED.get(name, 0), f"{name}: too many not-run blocks"
        for block in not_run:
            ast.parse(block.code, filename=block.where)
    assert PYTHON, "no example found"


def _views(tree: ast.AST) -> set[str]:
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.args.args
        and node.args.args[0].arg == "request"
    }


def _used_names(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | {
        node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
    }


def test_every_view_an_example_defines_is_called_by_one() -> None:
    for name in DOC_FILES:
        trees = [ast.parse(b.code) for b in BLOCKS[name] if b.lang == "python" and not b.not_run]
        used = set().union(*(_used_names(tree) for tree in trees)) if trees else set()
        defined = set().union(*(_views(tree) for tree in trees)) if trees else set()
        assert defined <= used, f"{name}: views defined but never called: {defined - used}"


def test_the_readme_lists_every_docs_page() -> None:
    readme = _text("README.md")
    section = readme[readme.index("## Documentation") :]
    for name in DOC_FILES[1:]:
        assert f"]({name})" in section, f"README's Documentation section does not link {name}"


# -- the settings reference -------------------------------------------------------


def test_settings_reference_gives_every_key_with_its_real_default() -> None:
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| `([^`]+)` \|", _text("docs/settings.md"), re.M)
    documented = {key: ast.literal_eval(default) for key, default in rows}
    assert documented == DEFAULTS
    whole_dict = next(b for b in BLOCKS["docs/settings.md"] if b.code.startswith("LOOPTOKEN = {"))
    assert ast.literal_eval(whole_dict.code.partition("=")[2].strip()) == DEFAULTS
    for key in DEFAULTS:
        assert re.search(rf"^### `{key}`$", _text("docs/settings.md"), re.M), f"no section {key}"


def test_every_check_id_is_documented() -> None:
    sources = (ROOT / checks.__file__).read_text() + (ROOT / conf.__file__).read_text()
    ids = set(re.findall(r'"(looptoken\.[EW]\d{3})"', sources))
    assert len(ids) >= 11
    for page in ("docs/settings.md", "docs/troubleshooting.md"):
        missing = {check_id for check_id in ids if check_id not in _text(page)}
        assert not missing, f"{page} does not document {sorted(missing)}"


# -- the API reference ------------------------------------------------------------

API_NAMES = [
    *django_looptoken.__all__,
    "LoopTokenMiddleware",
    "loop_started",
    "loop_stopping",
    "loop_stopped",
    "django_looptoken.urls",
    "loopstatus",
]


def _sections(name: str) -> dict[str, tuple[int, int]]:
    """Heading line -> (first line, line after the section), 1-based."""
    lines = _text(name).splitlines()
    headings = [
        (index + 1, len(line) - len(line.lstrip("#")), line)
        for index, line in enumerate(lines)
        if re.match(r"#+ ", line)
    ]
    sections = {}
    for position, (start, level, line) in enumerate(headings):
        end = next((s for s, lv, _ in headings[position + 1 :] if lv <= level), len(lines) + 1)
        sections[line] = (start, end)
    return sections


@pytest.mark.parametrize("public", API_NAMES)
def test_api_reference_has_a_section_with_an_example_for(public: str) -> None:
    pattern = re.compile(rf"`@?(?:[\w.]+\.)?{re.escape(public)}(?![\w])")
    found = [span for heading, span in _sections("docs/api.md").items() if pattern.search(heading)]
    assert found, f"docs/api.md has no heading naming `{public}`"
    start, end = found[0]
    examples = [b for b in PYTHON if b.name == "docs/api.md" and start < b.line < end]
    assert examples, f"the `{public}` section of docs/api.md has no ```python example"


# -- troubleshooting: every message the package can raise or log --------------------

_LOGGED = {"warning", "error", "exception", "critical"}


def _message_parts(node: ast.expr) -> list[str] | None:
    """A message's constant text, split where values are filled in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.split(r"%[-\d.]*[sdrf]", node.value)
    if isinstance(node, ast.JoinedStr):
        parts = [""]
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts[-1] += str(value.value)
            else:
                parts.append("")
        return parts
    return None


def _is_message_call(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        if func.value.id == "logger":
            return name in _LOGGED
        if func.value.id == "warnings":
            return name == "warn"
    if isinstance(func, ast.Attribute) and name == "append":
        return getattr(func.value, "attr", "") == "notes"  # loopstatus's notes on stderr
    return name.endswith(("Error", "Exception", "Warning")) or name in {
        "ImproperlyConfigured",
        "PermissionDenied",
    }


def package_messages() -> dict[str, str]:
    """Stable leading words of each message -> where it is made."""
    messages = {}
    for path in sorted((ROOT / "django_looptoken").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.Call) and node.args and _is_message_call(node)):
                continue
            parts = _message_parts(node.args[0])
            if parts is None:
                continue  # built elsewhere (str(exc)): that message is collected there
            first = parts[0].split()
            words = first if len(first) >= 3 else max((p.split() for p in parts), key=len)
            if len(words) < 2:
                continue  # only forwards other messages ("%s: %s (hint: %s)")
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            messages[" ".join(words[:8])] = where
    return messages


def test_troubleshooting_quotes_every_message_the_package_raises_or_logs() -> None:
    page = " ".join(_text("docs/troubleshooting.md").split())
    messages = package_messages()
    assert len(messages) > 60, "the message walk found too little; has the code moved?"
    missing = {words: where for words, where in messages.items() if words not in page}
    assert not missing, "docs/troubleshooting.md lacks:\n" + "\n".join(
        f"  {where}: {words}" for words, where in sorted(missing.items(), key=lambda i: i[1])
    )
