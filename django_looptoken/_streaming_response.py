"""Async-iterator ``StreamingHttpResponse``s, sent chunk by chunk under WSGI.

Django's ``StreamingHttpResponse.__iter__`` collects a whole async iterator
with ``async_to_sync`` before a WSGI server sees the first chunk.
``LoopTokenMiddleware`` hands such responses here instead: their content
becomes ``iterate()`` over the async iterator, so each chunk is fetched on
the shared loop when the server asks for it, and the server's ``close()``
(after the last chunk, or when the client went away) closes the async
iterator there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from django.http import HttpRequest, StreamingHttpResponse

from django_looptoken.streams import SyncIterator, iterate

logger = logging.getLogger("django_looptoken")


def is_async_stream(response: object) -> bool:
    """Whether ``response`` is a ``StreamingHttpResponse`` over an async iterator."""
    return getattr(response, "is_async", False) is True and hasattr(response, "_iterator")


def stream_chunk_by_chunk(response: StreamingHttpResponse, request: HttpRequest) -> None:
    """Make ``response`` iterate its async content through ``iterate()``."""
    # _iterator is the view's own async iterator: Django's streaming_content
    # wraps it in a generator whose closing would not close it.
    source = response._iterator  # type: ignore[attr-defined]
    chunks = _Chunks(iterate(source), response.make_bytes, request)
    # The setter notes chunks.close among the response's closers.
    response.streaming_content = chunks


class _Chunks(Iterator[bytes]):
    """The response's chunks as bytes; a failure is logged with the request."""

    __slots__ = ("_items", "_make_bytes", "_request")

    def __init__(
        self, items: SyncIterator[Any], make_bytes: Callable[[Any], bytes], request: HttpRequest
    ) -> None:
        self._items = items
        self._make_bytes = make_bytes
        self._request = request

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> bytes:
        try:
            return self._make_bytes(next(self._items))
        except StopIteration:
            raise
        except Exception:
            # The status line went out with the first chunk: the server can
            # only cut the connection, which it does when this propagates.
            logger.exception(
                "The async stream of %s %s failed after its response began; "
                "the connection is closed.",
                self._request.method,
                self._request.get_full_path(),
            )
            raise

    def close(self) -> None:
        """Close the async iterator on the loop (the WSGI server calls this)."""
        self._items.close()
