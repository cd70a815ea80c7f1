"""The torture run: a real broker killed, paused and restarted under load, and a history checker.

- ``workload``: producer, transactional producer and consumer processes writing JSON-lines history;
- ``nemesis``: what counts as unsynced, and the page-cache loss that damages it;
- ``broker``: the ``logstore serve`` subprocess the nemesis acts on;
- ``checker``: the anomaly definitions (in its docstring) and the checker;
- ``__main__``: the run (``scripts/torture --kills N --seconds S``).
"""
