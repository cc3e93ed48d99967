"""The benchmark site for ``bench_instructions.py``: clock-driven monitoring slowed down.

Under callgrind a request takes ~50x longer, so the lag probe and the
watchdog, which tick on a clock, would be counted ~50x per request; running
them 10x less often leaves what the app costs per request.
"""

from bench.e2e_site.settings import *  # noqa: F403
from bench.e2e_site.settings import MODE

if MODE == "looptoken":
    LOOPTOKEN = {"BACKEND": "auto", "SLOW_CALLBACK_DURATION": 1.0, "WATCHDOG_SECONDS": None}
