"""Views of the example project."""

import asyncio
import time

from django.http import HttpRequest, HttpResponse

import django_looptoken as looptoken


async def fetch(name: str, delay: float) -> str:
    """Stand-in for a slow upstream call."""
    await asyncio.sleep(delay)
    return f"{name} answered after {delay:.1f} s"


def index(request: HttpRequest) -> HttpResponse:
    """Three 0.3 s calls at once from a plain sync view: about 0.3 s in all."""
    started = time.perf_counter()
    outcomes = looptoken.await_multiple(fetch(f"upstream {i}", 0.3) for i in range(1, 4))
    elapsed = time.perf_counter() - started
    lines = [value for ok, value in outcomes if ok]
    loop = looptoken.get_loop()
    body = "\n".join(
        [
            f"{len(lines)} upstream calls at once in {elapsed:.2f} s",
            *lines,
            f"shared loop: {type(loop).__module__}.{type(loop).__qualname__}",
        ]
    )
    return HttpResponse(body, content_type="text/plain")
