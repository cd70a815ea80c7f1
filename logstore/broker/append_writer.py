"""The broker's writer thread: large appends leave the event loop.

A produce request's page-cache write (``PartitionLog.append``: ``os.pwritev``, the kernel copying
every byte into the page cache) cost the broker's one event-loop thread 0.3-0.8 ms per MiB on the
2-core box, as much as gRPC's receive of the same bytes (``perf``: ``copy_folio_from_iter``, half
of the loop thread's samples during 1 KiB ``send_batch``). ``pwritev`` releases the GIL, so the
produce path hands a large request's appends to this one thread and the loop meanwhile serves
other work: the next request of the same stream is received while this one is written (see
``LogStoreService.ProduceStream``). In the restaurant: the cook who takes the orders at the pass
no longer also carries each tray to the cold room; a runner does, one tray at a time, and the
waiter hears "done" only when the tray is on the shelf.

What stays as it was: the answer is sent only after the write returned (nothing acknowledged is
lost), ``flush=always`` still waits for the fsync after it, and the appends of one partition stay
in request order. A partition whose append is on the thread is *busy* until the produce path has
also updated its producer state: any other request for it waits (``wait_free``), so a sequence
check never runs against a state that misses an append in flight.

Threading: every method runs on the event loop thread. The thread runs only the function passed to
``run``, one at a time in submission order (a one-worker executor); ``PartitionLog.append`` is safe
there (the log's own lock; its append listeners hand wake-ups back to the loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from logstore.storage import PartitionLog

T = TypeVar("T")
R = TypeVar("R")

class AppendWriter:
    """One writer thread for the broker, and which partitions have an append on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._executor: ThreadPoolExecutor | None = None  # started by the first large append
        #: Partitions whose append is on the thread, each with a future resolved when it is not.
        self._busy: dict[PartitionLog, asyncio.Future[None]] = {}

    def busy(self, logs: Iterable[PartitionLog]) -> asyncio.Future[None] | None:
        """A future that resolves when one of ``logs`` stops being busy, or None if none is."""
        for partition_log in logs:
            future = self._busy.get(partition_log)
            if future is not None:
                return future
        return None

    async def wait_free(self, logs: Iterable[PartitionLog]) -> bool:
        """Return once none of ``logs`` is busy; returns whether it had to wait."""
        logs = list(logs)
        waited = False
        while (future := self.busy(logs)) is not None:
            await asyncio.shield(future)
            waited = True
        return waited

    async def run(self, logs: Iterable[PartitionLog], work: Callable[[], T],
                  then: Callable[[T], R]) -> R:
        """Mark ``logs`` busy, run ``work()`` on the writer thread, then ``then(result)`` on the
        loop, free ``logs`` and return what ``then`` returned. The logs must not be busy
        (``wait_free`` first). ``then`` runs even if the caller is cancelled meanwhile: a write
        that happened is always accounted for (producer state) before the partitions are free."""
        logs = list(logs)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logstore-writer")
        written = self._loop.run_in_executor(self._executor, work)  # (raises: nothing is busy)
        done: asyncio.Future[None] = self._loop.create_future()
        for partition_log in logs:
            assert partition_log not in self._busy, "a busy partition was given to the writer"
            self._busy[partition_log] = done
        answer: asyncio.Future[R] = self._loop.create_future()

        def finish(written: asyncio.Future[T]) -> None:
            try:
                result = then(written.result())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                if not answer.cancelled():
                    answer.set_exception(exc)
            else:
                if not answer.cancelled():
                    answer.set_result(result)
            finally:
                for partition_log in logs:
                    del self._busy[partition_log]
                done.set_result(None)

        written.add_done_callback(finish)
        return await answer

    async def close(self) -> None:
        """Wait until no partition is busy (every append on the thread written and accounted
        for), then stop the thread. The broker refuses new requests first."""
        while self._busy:
            await asyncio.shield(next(iter(self._busy.values())))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
