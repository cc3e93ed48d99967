"""Old import path of ``tests.support.services``, kept while in-flight branches land."""

from tests.support.services import postgres_server, redis_server, upstream  # noqa: F401
