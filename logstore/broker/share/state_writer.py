"""Group commit of share-partition state: every change made during one event-loop tick, by any
number of fetches and acknowledgements of any members and groups, is written to
``__share_group_state`` as one append per state-log partition at the end of the tick.

A call that changed state marks its share-partition (``mark``; the records changed are in the
window's ``dirty`` column) and awaits ``commit()``. The first mark of a tick schedules the
write with ``loop.call_soon``, so it runs after every callback already queued (the other
requests of the same tick); it writes, for each marked share-partition, one delta with the runs
of its dirty records — or a snapshot of its whole window when one is due (the first write, a
reset, every ``DELTAS_PER_SNAPSHOT`` deltas) — then clears the dirty marks and drops the done
records at the window's head. ``commit()`` returns once that append (and any dead-letter copies
``add_write`` was told of) is durable as the topics' flush policies say: written to the log
(``flush=interval``, the state topic's default: a process crash loses nothing), or fsynced too
(``flush=always``; one fdatasync per log shared by every waiter, on the executor). In a cluster
(``locate`` and ``replicated`` set, see ``leadership.py``) each share-partition's entry goes to
its state partition at this broker's leader epoch of it, and ``commit()`` also waits until the
state partitions' high watermarks cover the append (acks=all); a share-partition this broker no
longer leads is not written, and the tick's waiters get its ``NotLeaderError``.

Threading: event loop thread only (the share coordinator's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

from logstore.broker.internal import append_entries
from logstore.broker.share.partition import SharePartition
from logstore.broker.share.state_log import (
    DELTA,
    DELTAS_PER_SNAPSHOT,
    SNAPSHOT,
    PartitionKey,
    ShareStateLog,
)
from logstore.errors import LogstoreError
from logstore.storage import PartitionLog
from logstore.storage.config import FLUSH_ALWAYS

#: (log, end offset) pairs a commit waits for.
Writes = list[tuple[PartitionLog, int]]


class StateWriter:
    def __init__(self, state_log: ShareStateLog, loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
        self.state_log = state_log
        self._loop = loop
        self._executor = executor
        self._marked: dict[PartitionKey, SharePartition] = {}
        self._snapshots: set[PartitionKey] = set()
        self._extra: Writes = []
        self._tick: asyncio.Future[Writes] | None = None
        #: Appends to ``__share_group_state`` so far (each holds every change of one tick).
        self.appends = 0
        #: In a cluster: the state partition of a share-partition and this broker's leader epoch
        #: of it (raises ``NotLeaderError``); None on a single node (``log_for``, epoch 0).
        self.locate: Callable[[PartitionKey], tuple[PartitionLog, int]] | None = None
        #: In a cluster: waits until the writes are replicated to the state partitions' ISRs.
        self.replicated: Callable[[Writes], Awaitable[None]] | None = None

    def mark(self, key: PartitionKey, sp: SharePartition, *, snapshot: bool = False) -> None:
        """``sp`` changed (or needs a snapshot): write it at the end of this tick."""
        self._marked[key] = sp
        if snapshot:
            self._snapshots.add(key)
        self._schedule()

    def add_write(self, write: tuple[PartitionLog, int]) -> None:
        """Another write (a dead-letter copy) this tick's commit waits for."""
        self._extra.append(write)
        self._schedule()

    def forget(self, keep: Callable[[PartitionKey], bool]) -> None:
        """Drop the marks of share-partitions that are gone (a deleted topic)."""
        for key in [k for k in self._marked if not keep(k)]:
            del self._marked[key]
            self._snapshots.discard(key)

    def _schedule(self) -> asyncio.Future[Writes]:
        if self._tick is None:
            self._tick = self._loop.create_future()
            self._loop.call_soon(self._write)
        return self._tick

    async def commit(self) -> None:
        """Wait until every change marked so far is durable (nothing marked: at once)."""
        if self._tick is None:
            return
        writes = await asyncio.shield(self._tick)
        await self.durable(writes)

    async def durable(self, writes: Writes) -> None:
        """Wait until each write is on disk as its topic's flush policy says."""
        ends: dict[int, tuple[PartitionLog, int]] = {}
        for partition_log, end in writes:
            if partition_log.config.flush == FLUSH_ALWAYS:
                seen = ends.get(id(partition_log))
                if seen is None or seen[1] < end:
                    ends[id(partition_log)] = (partition_log, end)
        if ends:
            await asyncio.gather(*(
                self._loop.run_in_executor(self._executor, partition_log.wait_durable, end)
                for partition_log, end in ends.values()
            ))
        if self.replicated is not None:
            await self.replicated(writes)

    def _write(self) -> None:
        tick, self._tick = self._tick, None
        marked, self._marked = self._marked, {}
        snapshots, self._snapshots = self._snapshots, set()
        writes, self._extra = self._extra, []
        assert tick is not None
        failure: LogstoreError | None = None
        try:
            entries: dict[int, tuple[PartitionLog, int, list[tuple[bytes, bytes | None]]]] = {}
            for key, sp in marked.items():
                if self.locate is None:
                    partition_log, epoch = self.state_log.log_for(*key), 0
                else:
                    try:
                        partition_log, epoch = self.locate(key)
                    except LogstoreError as exc:  # no longer led here: its next leader reloads it
                        failure = failure or exc
                        continue
                record = self._entry(key, sp, key in snapshots)
                entries.setdefault(id(partition_log), (partition_log, epoch, []))[2].append(record)
            for partition_log, epoch, batch in entries.values():
                last = append_entries(partition_log, batch, sync=False, leader_epoch=epoch)
                writes.append((partition_log, last + 1))
                self.appends += 1
        except BaseException as exc:
            tick.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if failure is not None:
            tick.set_exception(failure)
            tick.exception()  # (housekeeping's expiries wait for no tick: not an unretrieved error)
            return
        tick.set_result(writes)

    def _entry(self, key: PartitionKey, sp: SharePartition, snapshot: bool) -> tuple[bytes, bytes]:
        """The delta (or snapshot) of ``sp``; its dirty marks cleared, its done head dropped."""
        window = sp.window
        if snapshot or sp.sequence == 0 or sp.sequence > DELTAS_PER_SNAPSHOT:
            window.dirty[:] = False
            window.advance()
            sp.generation += 1
            sp.sequence = 1
            return self.state_log.state_entry(key, SNAPSHOT, sp.generation, 0, window, window.runs())
        record = self.state_log.state_entry(
            key, DELTA, sp.generation, sp.sequence, window, window.runs(window.dirty_indices()))
        window.dirty[:] = False
        sp.sequence += 1
        window.advance()
        return record
