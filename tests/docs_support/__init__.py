"""Old import path of ``tests.support``, kept while in-flight branches land."""
