"""The queue-mode crash test (``scripts/torture --queue``): worker processes on a share group
while the broker and the workers are SIGKILLed at random; a checker over their histories.

- ``worker.py``: one share-group member; writes what it was delivered and what it acknowledged.
- ``checker.py``: every task accepted or dead-lettered, none lost, none accepted twice, delivered
  again only after a lock expiry, a release or a crash, delivery counts increasing.
- ``__main__.py``: the run (broker, tasks, workers, nemesis, drain, check).
"""
