"""When the coordinators' state snapshots are taken and written (see ``snapshot_file``).

While the broker runs, every ``state_snapshot_interval_ms`` the internal partitions whose log
grew since their last snapshot get a new one; at a clean shutdown, all of them that changed.
A snapshot is encoded on the event loop, where the state changes, so it is exactly the state
as of the log end at that moment; it is written on a worker thread once the records below its
offset are durable. One round is in flight at a time; a round that fails (a full disk) is
logged and retried at the next interval — the previous snapshot, or the log, still serves.

So the records a start-up replays are at most the ones appended in one interval before a
crash, and none after a clean shutdown.

Threading: ``tick`` and ``close`` on the event loop thread; writes on the executor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from logstore.broker.snapshot_file import PendingSnapshot
from logstore.storage.clock import Clock

log = logging.getLogger(__name__)

#: takes the snapshots of one coordinator's partitions: ``take(force=...)``
SnapshotSource = Callable[..., list[PendingSnapshot]]


class StateCheckpoints:
    def __init__(self, sources: Sequence[SnapshotSource], clock: Clock, interval_ms: int) -> None:
        self._sources = list(sources)
        self._clock = clock
        self._interval_ms = interval_ms
        self._last = clock.monotonic()
        self._in_flight: asyncio.Future[None] | None = None

    def _take(self) -> list[PendingSnapshot]:
        pending: list[PendingSnapshot] = []
        for take in self._sources:
            pending += take()
        return pending

    def tick(self, loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
        """Start a round of snapshots if the interval has passed and none is in flight."""
        if self._in_flight is not None and not self._in_flight.done():
            return
        now = self._clock.monotonic()
        if (now - self._last) * 1000 < self._interval_ms:
            return
        self._last = now
        pending = self._take()
        if pending:
            self._in_flight = loop.run_in_executor(executor, write_all, pending)

    async def close(self, loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
        """The last round, at a clean shutdown (after the last change to the state)."""
        if self._in_flight is not None:
            await asyncio.wait([self._in_flight])
        pending = self._take()
        if pending:
            await loop.run_in_executor(executor, write_all, pending)


def write_all(pending: Sequence[PendingSnapshot]) -> None:
    for snapshot in pending:
        try:
            snapshot.write()
        except Exception as exc:  # a full disk, a closed log: the older snapshot or the log serves
            log.warning("state snapshot %s not written: %s", snapshot.path, exc)
