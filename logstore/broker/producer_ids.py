"""Producer ids handed out from blocks reserved outside the broker (a cluster reserves them from
a counter in etcd, see ``cluster/producer_ids.py``; a single node records its blocks in
``__transaction_state`` instead and never uses this pool).

A block is the range [start, end); ids are taken in order and never twice: a block that is
replaced before it is used up is simply abandoned.

Threading: event loop thread only (the broker's).
"""

from __future__ import annotations

from logstore.errors import MetadataUnavailableError


class ProducerIdPool:
    def __init__(self) -> None:
        self._next = 0
        self._end = 0

    def left(self) -> int:
        """How many ids the current block still holds."""
        return self._end - self._next

    def add_block(self, start: int, end: int) -> None:
        """Hand out [start, end) from now on (what is left of the previous block is abandoned)."""
        if not 0 <= start < end:
            raise ValueError(f"a producer id block must be a non-empty range, not [{start}, {end})")
        self._next, self._end = start, end

    def take(self) -> int:
        """The next id; ``MetadataUnavailableError`` when no block is reserved (the caller
        reserves one first, from the metadata store; the client retries)."""
        if self._next >= self._end:
            raise MetadataUnavailableError("no producer id block is reserved on this broker (is etcd reachable?)")
        producer_id = self._next
        self._next += 1
        return producer_id
