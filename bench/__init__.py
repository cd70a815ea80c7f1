"""Benchmarks for logstore: ``scripts/bench [SUITE] [--quick] [--json FILE]``.

Each suite is a module with ``add_arguments(parser)`` (its own options, if any) and
``run(options, progress) -> list[Result]``; ``__main__.SUITES`` names them, and running with no
suite runs ``__main__.DEFAULT_SUITES``. Timing, the results table, JSON output and progress live in
``common.py``, so a suite only decides what to time.

    storage   bench/storage.py  in-process: encode, decode, validate, append, read, index lookups
"""
