"""WSGI application that uses the shared loop while it is imported, as an app
warming a client up at load would: in uWSGI's preforked mode that happens in
the master, before the workers are forked from C."""

import asyncio

from asgiref.sync import sync_to_async

import django_looptoken as looptoken
from tests.wsgi import application


async def _warm_up() -> None:
    await asyncio.sleep(0)
    await sync_to_async(lambda: None)()  # starts the background executor's thread


looptoken.await_(asyncio.sleep(0))  # makes this thread's waker
# uWSGI's master keeps no loop of its own: work spawned there holds a token.
with looptoken.start_loop():
    looptoken.spawn(_warm_up()).result(timeout=10)

__all__ = ["application"]
