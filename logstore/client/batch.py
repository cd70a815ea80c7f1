"""A producer batch (records bound for one partition) and the futures it resolves.

``ProducerBatch`` holds what ``send`` appended (values in a list; keys, headers and explicit
timestamps sparsely, index -> item) until the sender encodes it, or bytes ``send_batch`` encoded.
When the broker answers, ``complete(base_offset)`` or ``fail(error)`` resolves every record at
once: a ``RecordFuture`` is just (batch, index), its offset ``base_offset + index``.

Thread-safety: records are appended under the accumulator's lock; completion happens once, on the
produce stream's reader thread; ``wait``/``add_callback`` may be called from any thread.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
from crc32c import crc32c

from logstore.client import bulk
from logstore.client.models import BatchMetadata, RecordMetadata
from logstore.errors import LogstoreError
from logstore.records import read_header
from logstore.records.encode import now_ms
from logstore.records.layout import (
    ATTRIBUTES_POSITION,
    CRC_POSITION,
    CRC_START,
    PRODUCER_ID_POSITION,
    TRANSACTIONAL_FLAG,
)

log = logging.getLogger("logstore.client")

MIXED = -2  # ProducerBatch.value_length when values differ in length
EMPTY = -3  # ... before the first value


class ProducerBatch:
    """Records bound for one partition, sent (and answered) as one record batch."""

    __slots__ = (
        "topic",
        "partition",
        "values",
        "value_length",
        "nulls",
        "keys",
        "timestamps",
        "headers",
        "size",
        "opened",
        "timestamp",
        "encoded",
        "stamp",
        "count",
        "base_offset",
        "error",
        "done",
        "attempts",
        "_event",
        "_callbacks",
    )

    def __init__(self, topic: str, partition: int, opened: float) -> None:
        self.topic = topic
        self.partition = partition
        self.values: list[Any] = []
        #: Every value's length while they are all the same (-1: all null), else MIXED.
        self.value_length = EMPTY
        #: Some value is None (a tombstone).
        self.nulls = False
        self.keys: dict[int, bytes] = {}
        self.timestamps: dict[int, int] = {}
        self.headers: dict[int, bytes] = {}  # encoded by Accumulator.append
        #: Bytes the batch will take, estimated as records are appended.
        self.size = 0
        #: time.monotonic() when the batch was opened: linger counts from here.
        self.opened = opened
        #: Milliseconds since the epoch when opened: the records' default timestamp.
        self.timestamp = now_ms()
        self.encoded: bytes | None = None
        #: The producer id, epoch, base sequence and transactional flag ``encoded`` carries
        #: (None: not idempotent).
        self.stamp: bulk.Stamp | None = None
        self.count = 0
        self.base_offset = -1
        self.error: LogstoreError | None = None
        self.done = False
        #: Times the batch was sent again after a retriable answer (NOT_LEADER, ...); once
        #: above 0 its bytes, and the sequence they carry, never change.
        self.attempts = 0
        self._event = threading.Event()
        self._callbacks: list[Callable[[ProducerBatch], object]] = []

    @classmethod
    def of_encoded(
        cls, topic: str, partition: int, encoded: bytes, count: int,
        stamp: bulk.Stamp | None = None,
    ) -> ProducerBatch:
        batch = cls(topic, partition, time.monotonic())
        batch.encoded = encoded
        batch.stamp = stamp
        batch.count = count
        batch.size = len(encoded)
        return batch

    def __repr__(self) -> str:
        state = "done" if self.done else "pending"
        return f"ProducerBatch({self.topic!r}, {self.partition}, {self.record_count} records, {state})"

    @property
    def record_count(self) -> int:
        return self.count if self.encoded is not None and not self.values else len(self.values)

    def encode(self, codec: str, stamp: bulk.Stamp | None = None) -> bytes:
        """The batch's bytes (encoding the lists once; the lists are released afterwards).

        Usually one record batch; several back to back when explicit timestamps lie weeks apart
        (a batch stores them as <i4 deltas). Either way offsets are dense: base + index.
        ``stamp`` is the producer id, epoch, first sequence and transactional flag the batch must
        carry; bytes encoded earlier with another stamp are re-stamped (``restamp``).
        """
        if self.encoded is not None:
            if stamp is not None and stamp != self.stamp:
                self.encoded = restamp(self.encoded, stamp)
                self.stamp = stamp
            return self.encoded
        values = self.values
        count = len(values)
        if self.nulls:
            value_column = bulk.to_column(values)
        else:
            if self.value_length >= 0:
                lengths = np.full(count, self.value_length, dtype=np.int32)
            else:
                lengths = np.fromiter(map(len, values), np.int32, count)
            value_column = (lengths, np.frombuffer(b"".join(values), dtype=np.uint8))
        key_column = bulk.to_column(_dense(self.keys, count), "keys") if self.keys else None
        header_column = None
        if self.headers:  # already encoded by append; records without headers take b""
            encoded: list[bytes] = [b""] * count
            for index, item in self.headers.items():
                encoded[index] = item
            header_column = bulk.to_column(encoded, "headers")
        timestamps: Any = self.timestamp
        if self.timestamps:
            timestamps = np.full(count, self.timestamp, dtype=np.int64)
            timestamps[list(self.timestamps)] = list(self.timestamps.values())
        piece = bulk.Slice(self.partition, value_column, key_column, header_column, timestamps)
        self.encoded = bulk.encode_slice(piece, codec, stamp)
        self.stamp = stamp
        self.count = count
        self.values = []
        self.keys = {}
        self.headers = {}
        self.timestamps = {}
        return self.encoded

    # -- completion --------------------------------------------------------------------------

    def complete(self, base_offset: int) -> None:
        self.base_offset = base_offset
        self._finish()

    def fail(self, error: LogstoreError) -> None:
        self.error = error
        self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.encoded = None
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # a user's callback must not stop the others or the producer
                log.exception("a producer callback raised")

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def add_callback(self, callback: Callable[[ProducerBatch], object]) -> None:
        """Run ``callback(batch)`` once the batch is done (at once if it is already)."""
        if not self.done:
            self._callbacks.append(callback)
            if not self.done:
                return
            try:  # finished between the check and the append: run it here unless _finish did
                self._callbacks.remove(callback)
            except ValueError:
                return
        callback(self)


def restamp(encoded: bytes, stamp: bulk.Stamp) -> bytes:
    """``encoded`` (record batches back to back) with another producer id, epoch, sequence and
    transactional flag: the header fields are rewritten and each crc recomputed. Only needed
    when a batch was encoded ahead with a sequence that did not hold (see ``Sequencer``)."""
    producer_id, producer_epoch, sequence, transactional = stamp
    data = bytearray(encoded)
    view = memoryview(data)
    position = 0
    while position < len(data):
        header = read_header(data, position)
        attributes = header.attributes & ~TRANSACTIONAL_FLAG
        if transactional:
            attributes |= TRANSACTIONAL_FLAG
        _ATTRIBUTES.pack_into(data, position + ATTRIBUTES_POSITION, attributes)
        _PRODUCER.pack_into(data, position + PRODUCER_ID_POSITION, producer_id, producer_epoch, 0,
                            sequence)
        crc = crc32c(view[position + CRC_START: position + header.batch_length])
        _CRC.pack_into(data, position + CRC_POSITION, crc)
        position += header.batch_length
        sequence = (sequence + header.record_count) & bulk.SEQUENCE_MASK
    view.release()
    return bytes(data)


_ATTRIBUTES = struct.Struct("<H")
_PRODUCER = struct.Struct("<qhhi")  # producer_id, producer_epoch, reserved, base_sequence
_CRC = struct.Struct("<I")


def _dense(sparse: dict[int, Any], count: int) -> list[Any]:
    if len(sparse) == count:
        return list(sparse.values())  # keys were added in index order
    dense: list[Any] = [None] * count
    for index, item in sparse.items():
        dense[index] = item
    return dense


class RecordFuture:
    """The result of one ``Producer.send``: a ``RecordMetadata(partition, offset)``.

    Has the ``concurrent.futures.Future`` methods a caller needs (``result``, ``exception``,
    ``done``, ``add_done_callback``); it is only (batch, index), so 10,000 of them resolve when
    their batch does, with no per-record work.
    """

    __slots__ = ("_batch", "_index")

    _batch: ProducerBatch
    _index: int

    def done(self) -> bool:
        return self._batch.done

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return not self._batch.done

    def result(self, timeout: float | None = None) -> RecordMetadata:
        batch = self._batch
        if not batch.done and not batch.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout} s")
        if batch.error is not None:
            raise batch.error
        if batch.base_offset < 0:
            return RecordMetadata(batch.partition, -1)
        return RecordMetadata(batch.partition, batch.base_offset + self._index)

    def exception(self, timeout: float | None = None) -> LogstoreError | None:
        batch = self._batch
        if not batch.done and not batch.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout} s")
        return batch.error

    def add_done_callback(self, fn: Callable[[RecordFuture], object]) -> None:
        """``fn(future)`` once the record is acknowledged or failed (in the producer's thread)."""
        self._batch.add_callback(lambda _batch: fn(self))

    def __repr__(self) -> str:
        batch = self._batch
        return f"RecordFuture({batch.topic!r}, {batch.partition}, index={self._index}, done={batch.done})"


def batch_group_future(batches: list[ProducerBatch]) -> Future[list[BatchMetadata]]:
    """One future for several batches: their (partition, base, last offset), or the first error."""
    future: Future[list[BatchMetadata]] = Future()
    remaining = [len(batches)]
    lock = threading.Lock()

    def on_done(_batch: ProducerBatch) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        errors = [batch.error for batch in batches if batch.error is not None]
        if errors:
            future.set_exception(errors[0])
            return
        future.set_result(
            [
                BatchMetadata(batch.partition, batch.base_offset,
                              batch.base_offset + batch.count - 1 if batch.base_offset >= 0 else -1)
                for batch in batches
            ]
        )

    if not batches:
        future.set_result([])
    for batch in batches:
        batch.add_callback(on_done)
    return future
