"""The end-to-end benchmark's servers, for real: every contender answers its ten items.

No load and no timing (speed lives in ``bench/``): this starts the benchmark's
own upstream and gunicorn servers and checks that what it would measure is
right, so a broken benchmark fails here rather than printing wrong tables.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from bench import bench_e2e

POOLED = [
    c
    for c in bench_e2e.CONTENDERS
    if c.key.split("/")[0] in ("thread", "runs_async", "async_views", "await_multiple")
]
NEW_CLIENT = [c for c in bench_e2e.CONTENDERS if c.key.startswith("django/")]


def test_every_contender_answers_and_pools_persist(tmp_path: Path) -> None:
    args = argparse.Namespace(delay=0.005, connections=4, pool=32, backend="auto")
    with contextlib.ExitStack() as stack:
        upstream, sites = bench_e2e.start_all(stack, args, tmp_path)
        servers = [upstream.process, *(s for site in sites.values() for s in site.servers)]

        # Ten items from every contender on every server; the plain site runs
        # without the app, the looptoken one has ASYNC_VIEWS in effect.
        loops = bench_e2e.check_sites(sites)
        assert set(loops) == {"plain", "looptoken"}

        def opened_by(contender: bench_e2e.Contender, port: int) -> int:
            before = upstream.connections()
            response = bench_e2e.get(f"http://127.0.0.1:{port}/{contender.path}")
            bench_e2e.check_answer(contender, response)
            return upstream.connections() - before

        for contender in POOLED:
            for port in sites[contender.site].ports:
                opened_by(contender, port)  # the pool is warm after this one
                assert opened_by(contender, port) == 0, contender.key
        for contender in NEW_CLIENT:
            assert opened_by(contender, sites["plain"].ports[0]) == 10, contender.key

    assert all(server.popen.returncode is not None for server in servers)
    assert bench_e2e.server_noise(servers) == []
