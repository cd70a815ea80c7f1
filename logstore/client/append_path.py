"""``Producer.send``'s path into the accumulator: ``append`` (a mixin of ``Accumulator``, which
owns the state named below; split from ``accumulator.py`` so each file keeps to one concept).

The fast path (a keyless bytes value into an open batch) holds ``gate``'s token, not the lock:
``list.pop`` and ``list.append`` of the token are atomic, ~25 ns against ~90 for a lock's
acquire and release. Every other change of the open batches, ``sticky_open`` or the topics holds
the lock *and* the token (``Exclusive``, ``_shut``), and the fast path never waits for the lock
while it holds the token, so the two never meet and nothing deadlocks. The fast path also hands
out the last ``RecordFuture`` again when its caller dropped it (``spare``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from logstore.client.batch import MIXED, ProducerBatch, RecordFuture
from logstore.client.bulk import as_key, as_value, checked_headers
from logstore.client.partitioner import Partitioner
from logstore.records import RECORD_OVERHEAD
from logstore.records.headers import encode_headers

if TYPE_CHECKING:
    from logstore.client.accumulator import TopicState

#: ``sys.getrefcount`` of ``Accumulator.spare`` inside ``append`` when no caller holds it (the
#: attribute, a local and the call's argument). Without getrefcount (not CPython) no future is
#: ever reused.
_SPARE_UNREFERENCED = 3
_refcount: Callable[[Any], int] = getattr(sys, "getrefcount", lambda _obj: 0)


class Exclusive:
    """``with accumulator.exclusive:`` holds the lock and the gate's token."""

    __slots__ = ("_accumulator",)

    def __init__(self, accumulator: AppendPath) -> None:
        self._accumulator = accumulator

    def __enter__(self) -> None:
        self._accumulator.lock.acquire()
        try:
            self._accumulator._shut()
        except BaseException:
            self._accumulator.lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self._accumulator.gate.append(None)
        self._accumulator.lock.release()


class AppendPath:
    """Provided by ``Accumulator``."""

    __slots__ = ()

    lock: threading.Lock
    gate: list[None]
    exclusive: Exclusive
    spare: RecordFuture
    batch_bytes: int
    admit: Callable[[], None] | None
    buffer_bytes: int
    ready_bytes: int
    partitioner: Partitioner
    topics: dict[str, TopicState]
    sticky_open: dict[str, ProducerBatch]
    learn: Callable[..., TopicState]
    _open: Callable[[TopicState, str, int], ProducerBatch]
    _close: Callable[..., None]
    _wait_for_space: Callable[[], None]
    send_direct: Callable[[], None] | None
    direct_due: bool

    def append(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        headers: Any = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordFuture:
        # The common case in the fewest calls: a keyless bytes value into an open batch, the
        # one of the topic's sticky partition (``sticky_open``) or of the partition given.
        # Anything else (and a record that must open its batch) takes ``_append_general``.
        if key is None and headers is None and timestamp is None and value.__class__ is bytes:
            gate = self.gate
            try:
                gate.pop()  # the token (see ``gate``)
            except IndexError:  # another append or a slow path holds it: take the lock instead
                return self._append_general(topic, value, key, headers, partition, timestamp)
            try:  # only a miss allocates (its KeyError) while the token is held, as few as
                # under a lock: a finalizer that send()s, run by a collection here, would hang
                batch = None
                if partition is None:
                    try:
                        batch = self.sticky_open[topic]
                    except KeyError:  # no batch open there (the first record, or one just closed)
                        pass
                elif partition >= 0:
                    try:
                        batch = self.topics[topic].open[partition]
                    except (KeyError, IndexError):  # an unknown topic or partition
                        pass
                if batch is not None:
                    values = batch.values
                    index = len(values)
                    values.append(value)
                    length = len(value)
                    if length != batch.value_length:
                        batch.value_length = MIXED  # the batch's first value set it
                    size = batch.size + length + RECORD_OVERHEAD
                    batch.size = size
                    # The last future handed out is reused when its caller dropped it (only
                    # ``spare``, ``future`` and getrefcount's argument refer to it): nobody can
                    # see the change, and an allocation and a free per record are saved.
                    future: RecordFuture | None = self.spare
                    if _refcount(future) == _SPARE_UNREFERENCED:
                        future._batch = batch  # type: ignore[union-attr]
                        future._index = index  # type: ignore[union-attr]
                    else:
                        future = None
            finally:
                gate.append(None)
            if batch is not None:
                if future is None:  # made after the gate: another thread's reuse check sees
                    future = RecordFuture()  # this one referenced, so it is never handed out
                    future._batch = batch
                    future._index = index
                    self.spare = future  # type: ignore[misc]  # a slot of Accumulator
                if size >= self.batch_bytes:
                    self._close_filled(batch)
                return future
        return self._append_general(topic, value, key, headers, partition, timestamp)

    def _append_general(
        self,
        topic: str,
        value: Any,
        key: Any,
        headers: Any,
        partition: int | None,
        timestamp: int | None,
    ) -> RecordFuture:
        """``append`` of a record with a key, headers, a timestamp or a partition, a value other
        than bytes, or one that opens its partition's batch (``admit`` first: it may refuse)."""
        admit = self.admit
        if admit is not None:
            admit()
        try:
            state = self.topics[topic]
        except KeyError:
            state = self.learn(topic)
        if value.__class__ is bytes:
            length = len(value)
        else:
            value, length = as_value(value)
        if key is not None and key.__class__ is not bytes:
            key = as_key(key)
        if partition is None:
            if key is None:
                partition = state.sticky
            else:
                partition = self.partitioner.for_key(key, state.count)
        elif partition < 0 or partition >= state.count:
            state = self.learn(topic, partition)
        if headers is not None:  # encoded here: bad headers raise now, and nothing under the lock
            headers = encode_headers(checked_headers(headers)) or None
        if timestamp is not None:
            timestamp = int(timestamp)
        extras = key is not None or headers is not None or timestamp is not None
        lock = self.lock
        lock.acquire()
        gate = self.gate
        try:
            gate.pop()
        except IndexError:
            self._shut()
        try:
            batch = state.open[partition]
            if batch is None:
                batch = self._open(state, topic, partition)
            values = batch.values
            index = len(values)
            values.append(value)
            if length != batch.value_length:
                if length < 0:
                    batch.nulls = True
                batch.value_length = length if index == 0 else MIXED
            size = batch.size + length + RECORD_OVERHEAD
            if extras:
                size += self._extras(batch, index, key, headers, timestamp)
            batch.size = size
            if size >= self.batch_bytes:
                self._close(state, batch)
                if self.ready_bytes > self.buffer_bytes:
                    self._wait_for_space()
        finally:
            direct = self.direct_due
            self.direct_due = False  # type: ignore[misc]  # a slot of Accumulator
            gate.append(None)
            lock.release()
        if direct:  # this record opened a batch while nothing was in flight (``_open``)
            self.send_direct()  # type: ignore[misc]
        future = RecordFuture()
        future._batch = batch
        future._index = index
        return future

    def _close_filled(self, batch: ProducerBatch) -> None:
        """The fast path filled ``batch``: close it (unless the sender just did), and block
        while too much waits."""
        with self.exclusive:
            state = self.topics[batch.topic]
            if state.open[batch.partition] is batch:
                self._close(state, batch)
            if self.ready_bytes > self.buffer_bytes:
                self._wait_for_space()

    def _shut(self) -> None:
        """Take the gate's token, holding the lock: wait for the fast path that has it (it gives
        it back within a few bytecodes, and never waits for the lock meanwhile)."""
        gate = self.gate
        tries = 0
        while True:
            try:
                gate.pop()
                return
            except IndexError:
                tries += 1
                time.sleep(0 if tries < 4 else 0.00005)  # let the holder's thread run

    def _extras(
        self, batch: ProducerBatch, index: int, key: Any, headers: Any, timestamp: Any
    ) -> int:
        size = 0
        if key is not None:
            batch.keys[index] = key
            size += len(key)
        if headers is not None:
            batch.headers[index] = headers
            size += len(headers)
        if timestamp is not None:
            batch.timestamps[index] = timestamp
        return size
