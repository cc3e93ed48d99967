"""Server settings for the streaming tests (tests/integration/test_streaming_servers.py)."""

from tests.integration.server_settings import *  # noqa: F403

ROOT_URLCONF = "tests.integration.streaming_views"
