"""Group commit: make appended bytes durable, sharing one fdatasync among concurrent appenders.

An appender that needs its bytes on disk calls ``wait_durable(offset)``. If a sync is already
running, it waits for it; when that sync ends, whoever still needs more becomes the next syncer and
flushes everything written so far. N concurrent appends thus cost about two fdatasyncs, not N.

Locking: its own condition variable. Callers must not hold the partition lock while waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class GroupCommit:
    def __init__(self, sync: Callable[[], int], durable_offset: int) -> None:
        #: Flushes everything written so far and returns the offset it made durable.
        self._sync = sync
        self.durable_offset = durable_offset
        self._syncing = False
        self._condition = threading.Condition()

    def wait_durable(self, offset: int) -> None:
        """Return once every offset below ``offset`` is on disk."""
        while True:
            with self._condition:
                while self.durable_offset < offset and self._syncing:
                    self._condition.wait()
                if self.durable_offset >= offset:
                    return
                self._syncing = True
            try:
                reached = self._sync()
            except BaseException:
                with self._condition:
                    self._syncing = False
                    self._condition.notify_all()
                raise
            with self._condition:
                self.durable_offset = max(self.durable_offset, reached)
                self._syncing = False
                self._condition.notify_all()

    def reset(self, durable_offset: int) -> None:
        """After a truncation the durable offset may move back."""
        with self._condition:
            self.durable_offset = durable_offset
