"""The Django site the end-to-end benchmark serves under gunicorn (``bench/bench_e2e.py``).

It is the benchmark's own, apart from ``example_project/``, so that the
example can change freely and the benchmark keeps measuring the same views.
``E2E_MODE`` picks one of two sites from the same code:

* ``plain``: Django alone, without django_looptoken (not installed, not even
  imported): a sync client, Django's own async views and a hand-written loop
  thread; what a project has before adopting the app.
* ``looptoken``: the app installed, ``LoopTokenMiddleware`` on, as the README
  recommends: ``@runs_async``, ``ASYNC_VIEWS`` and ``await_multiple``.

Both serve ``trivial/`` (a sync view doing nothing) to weigh the app's cost
on views that do not use it.
"""
