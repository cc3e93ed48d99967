"""The server of a status socket, in a thread of its own.

A process whose loop is blocked must still answer, and say what blocks it:
so the socket is served by one daemon thread per life of the loop
(``looptoken-status``), never by the loop. The thread waits on a selector for
the listening socket, its connections and a wake-up pipe (``close()``).

Each connection: one request line in (at most ``REQUEST_LIMIT`` bytes), one
JSON line out, then close, all within ``REQUEST_SECONDS``; at most
``MAX_CONNECTIONS`` at once, the others are closed at once. The request's
``op`` picks the handler that builds the answer, in this thread.

Under gevent the thread is a native one, and so are its selector and sockets
(``_socket.socket``, the C class gevent never patches): nothing here may wait
on a hub.
"""

from __future__ import annotations

import _socket
import contextlib
import json
import logging
import os
import selectors
import time
from collections.abc import Callable, Mapping
from typing import Any

from django_looptoken._greenlets import (
    NativeEvent,
    native_selector_class,
    native_thread_id,
    read_nowait,
    start_thread,
    write_nowait,
)
from django_looptoken._status_socket import make_dir, socket_path

logger = logging.getLogger("django_looptoken")

REQUEST_LIMIT = 4096
REQUEST_SECONDS = 2.0
MAX_CONNECTIONS = 32
BACKLOG = 64
# How long close() waits for the thread to let go of its sockets.
JOIN_SECONDS = 1.0

# An answer for each op: called with the request object, in the server's thread.
Handler = Callable[[dict[str, Any]], dict[str, Any]]

_HOW = 'send {"op": "status"}'


class StatusServer:
    """The status socket of one life of the shared loop."""

    def __init__(
        self, handlers: Mapping[str, Handler], directory: str, project: str | None
    ) -> None:
        self.handlers = handlers
        self.path = socket_path(directory, os.getpid(), project)
        # Live connections, by file descriptor (the server's thread alone writes).
        self.connections: dict[int, _Connection] = {}
        self._directory = directory
        self._inode: tuple[int, int] | None = None
        self._wake_read = self._wake_write = -1
        self._stopping = False
        self._ended = NativeEvent()
        self._thread_id: int | None = None

    def bind(self) -> _socket.socket:
        """Make the directory and a listening 0600 socket under the final name.

        Bound under a temporary name, made 0600 and listening before the
        rename, so the final name never shows a socket that refuses
        connections (which a client would take for a stale one).
        """
        make_dir(self._directory)
        temporary = self.path + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)  # our pid's: left by a process that died here before
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.bind(temporary)
            os.chmod(temporary, 0o600)
            sock.listen(BACKLOG)
            os.rename(temporary, self.path)  # replaces a stale socket of a dead same pid
            info = os.stat(self.path)
            self._inode = (info.st_dev, info.st_ino)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return sock

    def serve(self, sock: _socket.socket) -> None:
        """Serve connections on ``sock`` (from ``bind()``) in a new thread, until
        ``close()``. Every descriptor the thread uses is open when this returns."""
        selector = native_selector_class()()
        try:
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_read, False)
            os.set_blocking(self._wake_write, False)
            selector.register(sock, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            start_thread(lambda: self._run(sock, selector), "looptoken-status")
        except BaseException:
            selector.close()
            sock.close()
            self._close_pipe()
            self._unlink()
            raise

    def close(self) -> None:
        """Remove the socket file, stop serving, drop live connections."""
        self._unlink()
        self._stopping = True
        if self._wake_write < 0:
            return  # never served
        with contextlib.suppress(OSError):
            write_nowait(self._wake_write, b"!")
        if self._thread_id != native_thread_id():
            self._ended.wait(JOIN_SECONDS)
        # Closed here, not by the thread: a descriptor closed under this
        # write could be reused by then, and the byte land in another file.
        self._close_pipe()

    def _run(self, listener: _socket.socket, selector: selectors.BaseSelector) -> None:
        self._thread_id = native_thread_id()
        try:
            while not self._stopping:
                deadline = min((c.deadline for c in self.connections.values()), default=None)
                timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                for key, _ in selector.select(timeout):
                    if key.fileobj is listener:
                        self._accept(listener, selector)
                    elif key.data is not None:
                        key.data.step(self._respond)
                self._tidy(selector)
        except Exception:
            logger.exception(
                "The status socket's thread failed; the socket is off (pid %d).", os.getpid()
            )
        finally:
            for connection in self.connections.values():
                connection.sock.close()
            self.connections.clear()
            selector.close()
            listener.close()
            self._ended.set()

    def _accept(self, listener: _socket.socket, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                fd, _ = listener._accept()  # type: ignore[attr-defined]  # C-level, unannotated
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: the client sees no answer
                logger.warning("The status socket could not accept a connection: %s", exc)
                return
            sock = _socket.socket(fileno=fd)
            if len(self.connections) >= MAX_CONNECTIONS:
                sock.close()  # too many at once: the client sees the connection close
                continue
            sock.setblocking(False)
            connection = self.connections[fd] = _Connection(sock)
            selector.register(sock, selectors.EVENT_READ, connection)

    def _tidy(self, selector: selectors.BaseSelector) -> None:
        """Close connections that are done or out of time; wait to write where needed."""
        now = time.monotonic()
        for fd, connection in list(self.connections.items()):
            if connection.done or connection.deadline <= now:
                selector.unregister(connection.sock)
                connection.sock.close()
                del self.connections[fd]
            elif connection.unsent and not connection.waits_to_write:
                connection.waits_to_write = True
                selector.modify(connection.sock, selectors.EVENT_WRITE, connection)
        with contextlib.suppress(OSError):
            read_nowait(self._wake_read, 64)  # close()'s wake-up, if it was one

    def _respond(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            return {"error": "the request is not UTF-8"}
        except (ValueError, RecursionError):
            return {"error": f"the request is not JSON; {_HOW}"}
        op = request.get("op") if isinstance(request, dict) else None
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            ops = ", ".join(repr(op) for op in self.handlers)
            return {"error": f"unknown request; {_HOW} (ops: {ops})"}
        try:
            return handler(request)
        except Exception:
            logger.exception("Answering %r on the status socket failed.", request.get("op"))
            return {"error": "internal error, see the server's log"}

    def _close_pipe(self) -> None:
        for fd in {self._wake_read, self._wake_write} - {-1}:
            os.close(fd)
        self._wake_read = self._wake_write = -1

    def _unlink(self) -> None:
        # Only our own socket: a later process with our pid may have replaced it.
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("Could not remove the status socket %s: %s", self.path, exc)
        self._inode = None


class _Connection:
    """One client: one request line in, one JSON line out, then close."""

    __slots__ = ("buffer", "deadline", "done", "sock", "unsent", "waits_to_write")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.deadline = time.monotonic() + REQUEST_SECONDS
        self.unsent = b""
        self.waits_to_write = False
        self.done = False

    def step(self, respond: Callable[[bytes], dict[str, Any]]) -> None:
        """Read the request, or write what is left of the answer."""
        if self.unsent:
            self._send()
            return
        try:
            chunk = self.sock.recv(REQUEST_LIMIT + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.done = True
            return
        if not chunk:  # a client may half-close after its line, with or without the newline
            self._reply(respond(bytes(self.buffer)) if self.buffer else _EMPTY)
            return
        self.buffer += chunk
        end = self.buffer.find(b"\n")
        if end >= 0:
            self._reply(respond(bytes(self.buffer[:end])))
        elif len(self.buffer) > REQUEST_LIMIT:
            self._reply({"error": f"request longer than {REQUEST_LIMIT} bytes"})

    def _reply(self, message: dict[str, Any]) -> None:
        self.buffer.clear()
        self.unsent = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        self._send()

    def _send(self) -> None:
        try:
            self.unsent = self.unsent[self.sock.send(self.unsent) :]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the client went away
            self.unsent = b""
        self.done = not self.unsent


_EMPTY = {"error": f"empty request; {_HOW}"}
