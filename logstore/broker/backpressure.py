"""Backpressure: budgets of bytes that produce requests may hold while they wait.

A producer faster than the disk (``flush=always``) makes requests pile up waiting for fsyncs; each
holds its batch bytes. A ``ByteBudget`` caps such bytes: a request that does not fit waits until
others finish (so acks slow down), and one that waits longer than the timeout is refused with
``LimitExceededError`` (RESOURCE_EXHAUSTED) naming the limit. A request larger than the whole
budget is let through alone, so it cannot wait forever. The broker takes its budgets *before* it
appends, so a refused request has appended nothing.

``ByteBudgets`` keeps one budget per key (a partition, a client connection), created on first use
and dropped once idle, so a thousand connections that come and go leave nothing behind.
``Backpressure`` is what a produce request goes through: room in its client connection's budget
(every produce request), then in the budget of each partition where it will wait for an fsync (in
key order, so two requests never wait for each other), then in the total of such bytes.

Before all of that, ``QueuedRequests`` caps the bytes of produce requests the broker has *read
from the network* and not yet answered, all connections together (Kafka's
``queued.max.request.bytes``): while they reach ``max_queued_request_bytes`` the server reads no
more produce requests, so the rest stay in the clients' and the kernel's buffers instead of the
broker's heap. gRPC hands a request over whole and says its size only then, so:

- a ``Produce`` call *reserves* ``min(max_request_bytes, cap)`` before its request is read, and
  keeps its real size once read (``reserve`` / ``resize``): strict, the total never passes the
  cap (or one request alone); a call that finds no room for ``backpressure_timeout_ms`` is refused
  with ``LimitExceededError`` and its request is never read;
- a ``ProduceStream`` reads its next request only while the total is below the cap
  (``wait_below``, no timeout: room comes back as held requests are answered), then counts it
  (``take``); so the total may pass the cap by one request per stream that was waiting for its
  next request when the cap was reached (an idle stream waits in its read, holding nothing).

Threading: event loop thread only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Hashable

from logstore.errors import LimitExceededError


class ByteBudget:
    def __init__(self, limit: int, timeout_s: float, limit_name: str = "max_unflushed_bytes") -> None:
        self.limit = limit
        self.timeout_s = timeout_s
        self.limit_name = limit_name
        self.used = 0
        #: Requests waiting for room.
        self.waiting = 0
        self._changed = asyncio.Condition()

    def _fits(self, size: int) -> bool:
        return self.used + size <= self.limit or self.used == 0

    @property
    def idle(self) -> bool:
        return self.used == 0 and self.waiting == 0

    async def acquire(self, size: int) -> bool:
        """Take ``size`` bytes; returns whether it had to wait (the event loop ran meanwhile)."""
        if self._fits(size):
            self.used += size
            return False
        self.waiting += 1
        try:
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait_for(lambda: self._fits(size)), self.timeout_s)
                except TimeoutError:
                    raise LimitExceededError(
                        f"{self.used} bytes already wait ({self.limit_name}={self.limit}); "
                        f"slow down or retry",
                        limit_name=self.limit_name,
                        limit=self.limit,
                    ) from None
                self.used += size
        finally:
            self.waiting -= 1
        return True

    def take(self, size: int) -> None:
        """Take ``size`` bytes without waiting, even past the limit."""
        self.used += size

    async def wait_below(self) -> None:
        """Return once ``used`` is below the limit (at once if it is)."""
        if self.used < self.limit:
            return
        self.waiting += 1
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: self.used < self.limit)
        finally:
            self.waiting -= 1

    def release(self, size: int) -> None:
        self.used -= size
        if self.waiting:  # nobody waits (the common case): no task, no loop turn before a push
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


class ByteBudgets:
    """A ``ByteBudget`` of ``limit`` bytes per key."""

    def __init__(self, limit: int, timeout_s: float, limit_name: str) -> None:
        self.limit = limit
        self.timeout_s = timeout_s
        self.limit_name = limit_name
        self._budgets: dict[Hashable, ByteBudget] = {}

    def __len__(self) -> int:
        return len(self._budgets)

    async def acquire(self, key: Hashable, size: int) -> bool:
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = ByteBudget(self.limit, self.timeout_s, self.limit_name)
        try:
            return await budget.acquire(size)
        except BaseException:
            if budget.idle:  # it timed out and nobody else holds or waits for this key
                self._budgets.pop(key, None)
            raise

    def release(self, key: Hashable, size: int) -> None:
        budget = self._budgets.get(key)
        if budget is None:  # only zero-byte holders of an idle budget get here
            return
        budget.release(size)
        if budget.idle:
            del self._budgets[key]


class QueuedRequests:
    """Bytes of produce requests read and not yet answered, capped (see the module docstring)."""

    LIMIT_NAME = "max_queued_request_bytes"

    def __init__(self, limit: int, max_request_bytes: int, timeout_s: float, waits: Counter[str]) -> None:
        self.budget = ByteBudget(limit, timeout_s, self.LIMIT_NAME)
        #: What a Produce call reserves while its request is read.
        self.reservation = min(max_request_bytes, limit)
        self._waits = waits

    @property
    def used(self) -> int:
        return self.budget.used

    async def reserve(self) -> int:
        """Room to read one request (a Produce call); returns the bytes reserved."""
        if await self.budget.acquire(self.reservation):
            self._waits[self.LIMIT_NAME] += 1
        return self.reservation

    def resize(self, reserved: int, size: int) -> int:
        """The request read is ``size`` bytes: keep that much of ``reserved``; returns ``size``."""
        self.budget.release(reserved - size)
        return size

    @property
    def has_room(self) -> bool:
        """Whether a stream may read its next request now (``wait_below`` would not wait)."""
        return self.budget.used < self.budget.limit

    async def wait_below(self) -> None:
        """Wait until a stream may read its next request."""
        if self.budget.used >= self.budget.limit:
            self._waits[self.LIMIT_NAME] += 1
            await self.budget.wait_below()

    def take(self, size: int) -> int:
        """Count a request a stream has read; returns ``size``."""
        self.budget.take(size)
        return size

    def release(self, size: int) -> None:
        self.budget.release(size)


class Backpressure:
    def __init__(
        self, *, per_connection: int, per_partition: int, total: int, timeout_s: float,
        queued: int, max_request_bytes: int,
    ) -> None:
        self.connections = ByteBudgets(per_connection, timeout_s, "max_inflight_bytes_per_connection")
        self.partitions = ByteBudgets(per_partition, timeout_s, "max_unflushed_bytes_per_partition")
        self.total = ByteBudget(total, timeout_s, "max_unflushed_bytes")
        #: Produce requests that had to wait for room, by limit name (a metric).
        self.waits: Counter[str] = Counter()
        #: The cap on produce request bytes read and not yet answered (the server uses it).
        self.queued = QueuedRequests(queued, max_request_bytes, timeout_s, self.waits)

    async def hold(self, client: str | None, size: int, unflushed: dict[tuple[str, int], int]) -> bool:
        """Take room for a request of ``size`` bytes from ``client`` (None: no connection budget)
        that will wait for an fsync with ``unflushed`` bytes per partition. Returns whether it
        had to wait (the event loop ran meanwhile); LimitExceededError after the timeout, with
        nothing held."""
        taken: list[tuple[ByteBudgets, Hashable, int]] = []
        waited = False
        try:
            steps: list[tuple[ByteBudgets, Hashable, int]] = []
            if client is not None:
                steps.append((self.connections, client, size))
            steps += [(self.partitions, key, unflushed[key]) for key in sorted(unflushed)]
            for budgets, key, amount in steps:
                if await budgets.acquire(key, amount):
                    waited = True
                    self.waits[budgets.limit_name] += 1
                taken.append((budgets, key, amount))
            if unflushed and await self.total.acquire(sum(unflushed.values())):
                waited = True
                self.waits[self.total.limit_name] += 1
        except BaseException:
            for budgets, key, amount in taken:
                budgets.release(key, amount)
            raise
        return waited

    def release(self, client: str | None, size: int, unflushed: dict[tuple[str, int], int]) -> None:
        if unflushed:
            self.total.release(sum(unflushed.values()))
        for key, amount in unflushed.items():
            self.partitions.release(key, amount)
        if client is not None:
            self.connections.release(client, size)
