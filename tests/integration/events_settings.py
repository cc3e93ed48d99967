"""The request tests' server settings, with the loop's signals written to
``$LOOPTOKEN_TEST_EVENTS/events-<pid>.log``.

The receivers are connected here, before ``django.setup()``: the app starts
the loop (and sends ``loop_started``) in its ``ready()``.
"""

from tests.integration.requests_settings import *  # noqa: F403
from tests.testapp import events

events.record_loop_signals()
