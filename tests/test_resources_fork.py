"""loop_resource after os.fork(): the child makes its own instance on its own loop."""

from __future__ import annotations

import asyncio
import os

import pytest

import django_looptoken as looptoken
from django_looptoken.resources import LoopResource
from tests.test_fork import Report, in_child

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()"),
]


class Pool:
    """Stands for a connection pool bound to the loop it was made on."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


async def _get(resource: LoopResource[Pool]) -> Pool:
    return resource.get()


def test_a_forked_child_gets_a_fresh_instance_and_leaves_the_parents_alone(
    token: looptoken.LoopToken,
) -> None:
    pool = looptoken.loop_resource(Pool, close="aclose")
    parents = looptoken.await_(_get(pool))

    def child() -> Report:
        with looptoken.start_loop():  # the parent's token does not count here
            mine = looptoken.await_(_get(pool))
            return {
                "fresh": mine is not parents,
                "on_the_childs_loop": mine.loop is looptoken.get_loop(),
                "reused": looptoken.await_(_get(pool)) is mine,
                "parents_open": not parents.closed,
            }

    assert in_child(child) == {
        "fresh": True,
        "on_the_childs_loop": True,
        "reused": True,
        "parents_open": True,
    }
    assert looptoken.await_(_get(pool)) is parents
    assert not parents.closed
