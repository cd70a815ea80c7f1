"""Long-poll wake-ups: futures waiting for an append to a partition.

A fetch or subscription that finds nothing new registers a future under each partition it reads;
the partition log's append listener (called on whatever thread appended) resolves them. No
sleep-polling anywhere.

Each waiter owns its future and awaits it directly; ``wait``'s timeout is a loop timer that
resolves the same future with False. So an append on the loop's thread resumes the waiter at the
loop's next turn (``asyncio.wait_for`` over a ``shield`` would take three turns: the shield's
callback, the waiter's, then the task), which is what a pushed record's latency is made of.

Locking: the waiter table is touched only on the event loop's thread; a listener called from
another thread hops onto the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from logstore.storage import PartitionLog

Key = tuple[str, int]


class Wakeups:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._waiters: dict[Key, set[asyncio.Future[bool]]] = {}

    def on_append(self, partition_log: PartitionLog) -> None:
        """The partition log's listener: wake everyone waiting on it."""
        key = (partition_log.topic, partition_log.partition)
        if key not in self._waiters:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake(key)
        else:
            self._loop.call_soon_threadsafe(self._wake, key)

    def _wake(self, key: Key) -> None:
        for future in self._waiters.pop(key, ()):
            if not future.done():
                future.set_result(True)

    def wake(self, keys: Iterable[Key]) -> None:
        """Wake the waiters of these partitions (records became available without an append).
        Loop thread only."""
        for key in keys:
            if key in self._waiters:
                self._wake(key)

    def wake_all(self) -> None:
        """Shutting down: let every waiter return now."""
        for key in list(self._waiters):
            self._wake(key)

    def register(self, keys: Iterable[Key]) -> asyncio.Future[bool]:
        """A future of the caller's own, resolved (True) by the first append to any of ``keys``."""
        future: asyncio.Future[bool] = self._loop.create_future()
        for key in keys:
            self._waiters.setdefault(key, set()).add(future)
        return future

    def unregister(self, keys: Iterable[Key], future: asyncio.Future[bool]) -> None:
        for key in keys:
            waiting = self._waiters.get(key)
            if waiting is not None:
                waiting.discard(future)
                if not waiting:
                    del self._waiters[key]

    @property
    def waiting(self) -> int:
        return sum(len(v) for v in self._waiters.values())


async def wait(future: asyncio.Future[bool], timeout: float) -> bool:
    """Wait for ``future`` (from ``register``) up to ``timeout`` seconds; True if an append
    resolved it. On timeout the future is resolved with False, so it must be the caller's own."""
    if future.done():
        return future.result() if not future.cancelled() else False
    if timeout <= 0:
        return False
    timer = asyncio.get_running_loop().call_later(timeout, _expire, future)
    try:
        return await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)
