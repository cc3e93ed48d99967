"""Status sockets: where each process serves its status, and the client.

Wire protocol (JSON lines, never pickle): the client connects to
``<STATUS_DIR>/<pid>.<project tag>.sock`` and sends one line, a JSON object
with an ``op``: ``{"op": "status"}`` (the process's ``status()``),
``{"op": "tasks"}`` (its loop's pending tasks) or ``{"op": "cancel", "task":
id}``; the server answers one line, a JSON object, ``{"error": "..."}`` for
anything it cannot answer, and closes the connection. The server
(``_status_server``) runs in a thread of its own, so a blocked loop still
answers. The directory must be a real directory owned by this user with
mode ``0700``, the socket is ``0600`` and appears under its final name only
once it listens, so a client never mistakes a starting server for a stale
one.

The project tag (``project_tag()``) is a short hash of the process's
settings module: the client tells the sockets of other projects sharing the
directory from the name alone, without asking them, so a silent process of
another project is never shown.

The client (``collect()``) is what ``manage.py loopstatus`` and the status
page use: it asks every socket it wants at once, all of them within one time
limit, refuses sockets of other users, and removes the sockets of dead
processes.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import json
import logging
import os
import pwd
import re
import selectors
import socket
import stat
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from django_looptoken._greenlets import waiting_selector_class

logger = logging.getLogger("django_looptoken")

# The client's bound on one answer (a status line is a few KiB; a task
# listing is bounded by the number of tasks it shows).
ANSWER_LIMIT = 4 * 1024 * 1024
# How long the client waits for every answer, all asked together.
CLIENT_SECONDS = 2.0
# While a socket's backlog is full, its connect is tried again this often.
RETRY_CONNECT_SECONDS = 0.02
STATUS_REQUEST: dict[str, Any] = {"op": "status"}

# <pid>.<tag>.sock; a name without a tag is a socket of an older version.
_NAME = re.compile(r"^(\d+)(?:\.([0-9a-f]{12}))?\.sock(\.new)?$")


class StatusDirError(Exception):
    """The status directory is missing, unsafe or unusable; the message says why."""


def status_dir(configured: str | None) -> str:
    """The directory for status sockets: the setting, or a per-user temp dir."""
    if configured is not None:
        return os.path.abspath(configured)
    return os.path.join(tempfile.gettempdir(), f"django-looptoken-{os.getuid()}")


def check_dir(path: str) -> None:
    """Raise StatusDirError unless ``path`` is a directory (not a symlink)
    owned by this user with mode 0700."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise StatusDirError(f"status directory {path} cannot be read: {exc.strerror}.") from exc
    if stat.S_ISLNK(info.st_mode):
        raise StatusDirError(
            f"status directory {path} is a symlink; refusing it. Remove it, or set "
            'LOOPTOKEN["STATUS_DIR"] to a directory of your own.'
        )
    if not stat.S_ISDIR(info.st_mode):
        raise StatusDirError(f"status directory {path} is not a directory.")
    if info.st_uid != os.getuid():
        raise StatusDirError(
            f"status directory {path} is owned by uid {info.st_uid}, not by this user "
            f'(uid {os.getuid()}); refusing it. Set LOOPTOKEN["STATUS_DIR"] to a '
            "directory of your own."
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode != 0o700:
        raise StatusDirError(
            f"status directory {path} has mode {mode:04o}; it must be 0700 (chmod 700 {path})."
        )


def check_path(path: str) -> None:
    """Raise StatusDirError unless no other user can change what ``path`` leads to.

    Walks ``path`` from ``/``, following symlinks: every existing entry on the
    way must be owned by this user or root, and every directory it is in must
    not be writable by others, unless that directory is sticky (``/tmp``:
    there only an entry's owner may replace it). A directory writable by its
    group is safe only when that group is the user's private group (named
    after the user, as umask 002 systems make them). Missing components are
    fine: ``make_dir`` creates them.
    """
    uid = os.getuid()
    parts = path.split(os.sep)
    current = os.sep
    links = 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        entry = os.path.join(current, name)
        try:
            parent = os.stat(current)
            info = os.lstat(entry)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StatusDirError(
                f"status directory {path}: {entry} cannot be read: {exc.strerror}."
            ) from exc
        if info.st_uid not in (0, uid):
            raise StatusDirError(
                f"status directory {path} is unsafe: {entry} is owned by uid {info.st_uid}, "
                f"who could make it lead elsewhere."
            )
        others_write = parent.st_mode & stat.S_IWOTH or (
            parent.st_mode & stat.S_IWGRP and not _private_group(parent.st_gid, uid)
        )
        if others_write and not parent.st_mode & stat.S_ISVTX:
            raise StatusDirError(
                f"status directory {path} is unsafe: {current} is writable by other users, "
                f"who could replace {entry}."
            )
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > 40:
                raise StatusDirError(f"status directory {path}: too many symlinks.")
            try:
                target = os.readlink(entry)
            except OSError as exc:
                raise StatusDirError(
                    f"status directory {path}: {entry} cannot be read: {exc.strerror}."
                ) from exc
            if os.path.isabs(target):
                current = os.sep
            parts[:0] = target.split(os.sep)
            continue
        current = entry


def _private_group(gid: int, uid: int) -> bool:
    try:
        return grp.getgrgid(gid).gr_name == pwd.getpwuid(uid).pw_name
    except KeyError:
        return False


def make_dir(path: str) -> None:
    """Create ``path`` (and missing parents) with mode 0700, then check it and
    its whole path (StatusDirError).

    Modes are set with chmod, which the umask does not cut: under umask 277 a
    directory made with mode 0700 would be 0500 and then refused.
    """
    check_path(path)
    missing: list[str] = []
    head = path
    while not os.path.lexists(head) and head != os.path.dirname(head):
        missing.insert(0, head)
        head = os.path.dirname(head)
    for directory in missing:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # another process made it just now; checked below
        except OSError as exc:
            raise StatusDirError(f"status directory {path} cannot be created: {exc}.") from exc
        os.chmod(directory, 0o700)
    # Made by another worker under a strict umask, not yet chmodded: only ours
    # to read anyway (no group or other bits), so give it the mode it needs.
    with contextlib.suppress(OSError):
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077:
            os.chmod(path, 0o700)
    check_path(path)
    check_dir(path)


def project_tag(project: str | None) -> str:
    """The tag of a project (its settings module, None: none) in socket names."""
    return hashlib.sha256((project or "").encode()).hexdigest()[:12]


def socket_path(directory: str, pid: int, project: str | None) -> str:
    """Where process ``pid`` of ``project`` serves its status."""
    return os.path.join(directory, f"{pid}.{project_tag(project)}.sock")


# -- the client ----------------------------------------------------------------------


@dataclass
class Listing:
    """What ``collect()`` found in the status directory."""

    directory: str
    processes: list[dict[str, Any]] = field(default_factory=list)
    # Live processes that did not answer in time: (pid, why).
    silent: list[tuple[int, str]] = field(default_factory=list)
    # Things the user should know: refused sockets, stale sockets removed.
    notes: list[str] = field(default_factory=list)
    # Set when the directory itself is unusable; nothing was asked then.
    error: str | None = None
    # Live processes of other projects, left out (and not asked) by ``tag``.
    others: int = 0


def collect(
    directory: str,
    *,
    exclude_pid: int | None = None,
    only_pid: int | None = None,
    tag: str | None = None,
    timeout: float | None = None,
    request: dict[str, Any] = STATUS_REQUEST,
) -> Listing:
    """Ask the status sockets in ``directory`` for their status (or what
    ``request`` asks), all at once; with ``only_pid``, only that process's.

    With ``tag`` (``project_tag()``), only the sockets of that project are
    asked; the others are counted in ``others``. Every answer is awaited
    within one ``timeout`` (default ``CLIENT_SECONDS``) in all, however many
    processes stay silent. Sockets not owned by this user are refused (never
    connected to); sockets of dead processes, or that refuse connections, are
    removed. A missing directory means no process has served a status yet.
    """
    listing = Listing(directory)
    if not os.path.lexists(directory):
        return listing
    try:
        check_path(directory)
        check_dir(directory)
        names = sorted(os.listdir(directory))
    except (OSError, StatusDirError) as exc:
        listing.error = str(exc)
        return listing
    targets: list[tuple[int, str, os.stat_result]] = []
    for name in names:
        match = _NAME.match(name)
        if match is None:
            continue
        pid, path = int(match.group(1)), os.path.join(directory, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue  # its process just removed it
        if info.st_uid != os.getuid():
            listing.notes.append(
                f"Refused {path}: owned by uid {info.st_uid}, not by you (uid {os.getuid()})."
            )
            continue
        if not stat.S_ISSOCK(info.st_mode):
            listing.notes.append(f"Ignored {path}: not a socket.")
            continue
        if pid == exclude_pid or only_pid not in (None, pid):
            continue
        if not _alive(pid):
            _remove_stale(path, info, f"process {pid} is gone", listing)
        elif match.group(3) is not None:
            continue  # a .new socket is not listening yet
        elif tag is not None and match.group(2) != tag:
            listing.others += 1
        else:
            targets.append((pid, path, info))
    answers = ask_all([path for _, path, _ in targets], timeout, request)
    for (pid, path, info), (status, problem) in zip(targets, answers, strict=True):
        if status is not None:
            listing.processes.append(status)
        elif problem == "refused":
            _remove_stale(path, info, f"process {pid} does not serve it", listing)
        elif problem != "gone":
            listing.silent.append((pid, problem))
    listing.processes.sort(key=lambda status: int(status.get("pid", 0)))
    return listing


def request_line(request: dict[str, Any]) -> bytes:
    """``request`` as the line the server reads."""
    return json.dumps(request, separators=(",", ":")).encode() + b"\n"


def ask(
    path: str, timeout: float | None = None, request: dict[str, Any] = STATUS_REQUEST
) -> dict[str, Any]:
    """One request (a status, by default) to the socket at ``path``; the answer.
    Raises OSError, or ValueError for an answer that is not one or an error."""
    timeout = CLIENT_SECONDS if timeout is None else timeout
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request_line(request))
        answer = bytearray()
        while b"\n" not in answer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete answer in time")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("closed before a complete answer")
            answer += chunk
            if len(answer) > ANSWER_LIMIT:
                raise ValueError(f"answer longer than {ANSWER_LIMIT} bytes")
    return _parse(answer)


def _parse(answer: bytes | bytearray) -> dict[str, Any]:
    message = json.loads(answer[: answer.index(b"\n")])
    if not isinstance(message, dict):
        raise ValueError("the answer is not a JSON object")
    if "error" in message:
        raise ValueError(f"the process answered an error: {message['error']}")
    return message


Outcome = tuple[dict[str, Any] | None, str]


class _Query:
    """One request of ``ask_all()``, on a non-blocking socket."""

    def __init__(self, path: str, line: bytes) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.unsent = line
        self.answer = bytearray()
        self.outcome: Outcome | None = None

    def connect(self) -> bool:
        """Try to connect; False while the server's backlog is full."""
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.setblocking(False)
            self.sock.connect(self.path)
        except BlockingIOError:
            return False  # a Unix socket's connect does not wait: try it again
        except OSError as exc:
            self.fail(exc)
        return True

    def send(self) -> None:
        assert self.sock is not None
        try:
            self.unsent = self.unsent[self.sock.send(self.unsent) :]
        except BlockingIOError:
            pass
        except OSError as exc:
            self.fail(exc)

    def receive(self) -> None:
        assert self.sock is not None
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(exc)
            return
        if not chunk:
            self.fail(ConnectionResetError("closed before a complete answer"))
            return
        self.answer += chunk
        try:
            if b"\n" in self.answer:
                self.outcome = _parse(self.answer), ""
            elif len(self.answer) > ANSWER_LIMIT:
                raise ValueError(f"answer longer than {ANSWER_LIMIT} bytes")
        except ValueError as exc:  # json's errors are ValueErrors too
            self.outcome = None, f"bad answer: {exc}"

    def fail(self, exc: OSError) -> None:
        if isinstance(exc, FileNotFoundError):
            self.outcome = None, "gone"
        elif isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
            self.outcome = None, "refused"
        else:
            self.outcome = None, f"could not ask it: {exc}"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def ask_all(
    paths: list[str], timeout: float | None = None, request: dict[str, Any] = STATUS_REQUEST
) -> list[Outcome]:
    """Ask every socket in ``paths`` at once (for its status, by default);
    (answer, "") or (None, why) each.

    All of them get the same ``timeout`` (default ``CLIENT_SECONDS``) from
    now: N silent processes cost one time limit, not N. ``why`` is ``"gone"``
    (no socket), ``"refused"`` (nobody listens) or a sentence.
    """
    timeout = CLIENT_SECONDS if timeout is None else timeout
    deadline = time.monotonic() + timeout
    line = request_line(request)
    queries = [_Query(path, line) for path in paths]
    waiting_to_connect: list[_Query] = []
    with waiting_selector_class()() as selector:
        try:
            for query in queries:
                if query.connect():
                    _watch(selector, query)
                else:
                    waiting_to_connect.append(query)
            while selector.get_map() or waiting_to_connect:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if waiting_to_connect:
                    remaining = min(remaining, RETRY_CONNECT_SECONDS)
                for key, _ in selector.select(remaining):
                    query = key.data
                    if query.unsent:
                        query.send()
                    else:
                        query.receive()
                    _watch(selector, query)
                for query in [q for q in waiting_to_connect if q.connect()]:
                    waiting_to_connect.remove(query)
                    _watch(selector, query)
        finally:
            for query in queries:
                query.close()
    silent = f"no answer within {timeout:g} s (is the process stopped or hung?)"
    return [query.outcome or (None, silent) for query in queries]


def _watch(selector: selectors.BaseSelector, query: _Query) -> None:
    """Wait for what ``query`` needs next: to send, to receive, or nothing."""
    sock = query.sock
    if sock is None:
        return  # no socket could be made: the outcome says why
    registered = sock in selector.get_map()
    if query.outcome is not None:
        if registered:
            selector.unregister(sock)
        return
    events = selectors.EVENT_WRITE if query.unsent else selectors.EVENT_READ
    if registered:
        selector.modify(sock, events, query)
    else:
        selector.register(sock, events, query)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, but another user's: the pid was reused
    return True


def _remove_stale(path: str, seen: os.stat_result, why: str, listing: Listing) -> None:
    try:
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) == (seen.st_dev, seen.st_ino):
            os.unlink(path)
            listing.notes.append(f"Removed the stale status socket {path} ({why}).")
    except FileNotFoundError:
        pass
    except OSError as exc:
        listing.notes.append(f"Could not remove the stale status socket {path}: {exc}.")
