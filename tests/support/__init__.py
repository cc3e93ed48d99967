"""What the tests share: ``processes`` (ports, deadlines, stopping by pid, the
server launcher), ``services`` (a real aiohttp upstream, redis-server and
PostgreSQL) and ``doc_blocks`` (the code blocks of the docs)."""
