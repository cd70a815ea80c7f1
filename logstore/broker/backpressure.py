"""Backpressure: a budget of bytes that produce requests may hold while they wait.

A producer faster than the disk (``flush=always``) makes requests pile up waiting for fsyncs; each
holds its batch bytes. ``ByteBudget`` caps the total: a request that does not fit waits until
others finish (so acks slow down), and one that waits longer than the timeout is refused with
``LimitExceededError`` (RESOURCE_EXHAUSTED). A request larger than the whole budget is let through
alone, so it cannot wait forever.

Threading: event loop thread only.
"""

from __future__ import annotations

import asyncio

from logstore.errors import LimitExceededError


class ByteBudget:
    def __init__(self, limit: int, timeout_s: float) -> None:
        self.limit = limit
        self.timeout_s = timeout_s
        self.used = 0
        self._changed = asyncio.Condition()

    def _fits(self, size: int) -> bool:
        return self.used + size <= self.limit or self.used == 0

    async def acquire(self, size: int) -> None:
        if self._fits(size):
            self.used += size
            return
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._fits(size)), self.timeout_s)
            except TimeoutError:
                raise LimitExceededError(
                    f"{self.used} bytes already wait for the disk (max_unflushed_bytes="
                    f"{self.limit}); slow down or retry",
                    limit_name="max_unflushed_bytes",
                    limit=self.limit,
                ) from None
            self.used += size

    def release(self, size: int) -> None:
        self.used -= size
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
