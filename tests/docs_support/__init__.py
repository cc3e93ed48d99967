"""What tests/test_docs.py needs: Markdown code blocks, and the real servers
the recipes talk to (an aiohttp upstream, redis-server, PostgreSQL)."""
