"""Whether greenlets replaced this process's threads (gevent's or eventlet's
monkey-patching), which the shared loop cannot run under yet.

After ``monkey.patch_all()`` a ``threading.Thread`` is a greenlet on the
one OS thread: the loop would never yield to the hub, and every request
greenlet would look like the loop's thread. The app refuses to start a loop
there (``looptoken.E012``) and keeps serving the pages that do not use it.
"""

from __future__ import annotations

import sys


def monkey_patched() -> str | None:
    """``"gevent"`` or ``"eventlet"`` if it patched ``threading`` here, else None."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return "gevent"
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("thread"):
        return "eventlet"
    return None


def may_patch_later() -> bool:
    """Whether gevent or eventlet is imported, so this process (a server's
    worker just forked, say) may be monkey-patched before it serves."""
    return "gevent" in sys.modules or "eventlet" in sys.modules
