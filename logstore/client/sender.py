"""The producer's sender thread: drain the accumulator, encode batches, send requests, resolve.

Loop: take ready batches (full, lingered, or everything when flushing) up to ``max_request_bytes``,
encode the ones ``send`` filled (``ProducerBatch.encode``), group them per partition in order into
one hand-serialized ``ProduceRequest`` (``wire.encode_produce_request``) and hand it to the
``ProduceStream``, which blocks while ``max_in_flight`` requests are unanswered. Responses arrive
on the stream's reader thread (``_on_response``): each batch gets its base offset, or its
partition's error, and its futures resolve.

Idempotence (``identity``): every batch is stamped with the producer id, epoch and its
partition's next sequence just before it is sent, in send order, and no more than 5 batches of a
partition are ever unanswered (the broker remembers 5 per partition, so any retry is recognized);
a partition at 5 waits for an answer. A stamped batch that fails for good leaves a gap in its partition's sequences: the
sender then waits for every answer and takes a new producer id (transactional producers do that
when the transaction is aborted). Transactions (``transaction``): batches are stamped
transactional; the broker adds each partition to the open transaction with its first batch.

Also refreshes partition counts every ``metadata_max_age_ms``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from logstore.client.accumulator import Accumulator
from logstore.client.batch import ProducerBatch
from logstore.client.channel import error_from_detail
from logstore.client.config import MAX_IN_FLIGHT_IDEMPOTENT, ProducerConfig
from logstore.client.stream import ProduceStream
from logstore.client.transactions import ProducerIdentity, Transaction
from logstore.client.wire import encode_produce_request
from logstore.errors import LogstoreError

log = logging.getLogger("logstore.client")

#: How long the sender sleeps when nothing is open (it is woken as soon as a batch opens).
IDLE_WAIT = 1.0


class Sender:
    def __init__(
        self,
        accumulator: Accumulator,
        stream_factory: Callable[..., ProduceStream],
        config: ProducerConfig,
        refresh: Callable[[str], object],
        identity: ProducerIdentity | None = None,
        transaction: Transaction | None = None,
    ) -> None:
        self._accumulator = accumulator
        self._config = config
        self._acks = config.acks_wire
        self._refresh = refresh
        self._identity = identity
        self._transaction = transaction
        #: Idempotence: unanswered batches per partition (at most 5), and a signal per answer.
        self._unanswered: dict[tuple[str, int], int] = {}
        self._counted: set[ProducerBatch] = set()
        self._unanswered_lock = threading.Lock()
        self._answered = threading.Event()
        self._stream = stream_factory(on_response=self._on_response, on_failure=self._on_failure)
        #: Partition results the broker answered as retries of batches it already had.
        self.duplicates = 0
        self._flush_requests = 0
        self._flush_lock = threading.Lock()
        self._stopping = threading.Event()
        self._last_metadata = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="logstore-producer-sender",
                                        daemon=True)
        self._thread.start()

    # -- control from the producer -----------------------------------------------------------

    def begin_flush(self) -> None:
        """Send every open batch now, lingering or not, until ``end_flush``."""
        with self._flush_lock:
            self._flush_requests += 1
        self._accumulator.wake()

    def end_flush(self) -> None:
        with self._flush_lock:
            self._flush_requests -= 1

    def stop(self, timeout: float | None) -> None:
        """Send what is queued, wait for answers (up to ``timeout``), end the stream."""
        self.begin_flush()
        self._stopping.set()
        self._accumulator.wake()
        self._thread.join(timeout)
        self._stream.close(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        accumulator = self._accumulator
        max_bytes = self._config.max_request_bytes
        room = self._room if self._identity is not None else None
        while True:
            force = self._flush_requests > 0
            self._answered.clear()
            batches, wait = accumulator.drain(max_bytes, force=force, room=room)
            if not batches and room is not None and accumulator.ready:
                self._answered.wait(IDLE_WAIT)  # the next partition has 5 unanswered
                continue
            if batches:
                try:
                    if self._identity is not None:
                        self._prepare_identity()
                    self._send(batches)
                except LogstoreError as exc:  # no producer id, fenced, broker unreachable
                    log.warning("producer sender could not send %d batches: %s", len(batches),
                                exc.message)
                    for batch in batches:
                        self._finish(batch, exc)
                except Exception as exc:  # a bug or an encoding error: fail these records only
                    log.exception("producer sender failed to send %d batches", len(batches))
                    error = LogstoreError(str(exc))
                    for batch in batches:
                        self._finish(batch, error)
                continue
            if self._stopping.is_set() and not accumulator.pending():
                return
            self._maybe_refresh_metadata()
            accumulator.sleep(IDLE_WAIT if wait is None else wait, self._urgent)

    def _urgent(self) -> bool:
        """A flush or stop came in since the last drain: drain again instead of sleeping.
        Called under the accumulator's lock."""
        accumulator = self._accumulator
        if self._stopping.is_set():
            return True
        return self._flush_requests > 0 and bool(accumulator.opened or accumulator.ready)

    def _room(self, key: tuple[str, int]) -> int:
        """How many more batches of the partition may be sent before an answer comes back."""
        return MAX_IN_FLIGHT_IDEMPOTENT - self._unanswered.get(key, 0)

    def _prepare_identity(self) -> None:
        """A producer id before the first batch; a new one after a gap in the sequences."""
        identity = self._identity
        assert identity is not None
        if identity.reset_needed and self._transaction is None:
            self._stream.wait_idle()  # every answer in: no stamped batch is left unanswered
            log.info("idempotent producer %d: a batch failed; taking a new producer id",
                     identity.producer_id)
            identity.init()
            self._accumulator.resequence(identity.next_sequences)
        else:
            identity.ensure()

    def _send(self, batches: list[ProducerBatch]) -> None:
        codec = self._config.codec
        grouped: dict[tuple[str, int], list[bytes]] = {}
        identity = self._identity
        if identity is None:
            for batch in batches:
                grouped.setdefault((batch.topic, batch.partition), []).append(batch.encode(codec))
        else:
            transactional = self._transaction is not None
            with self._unanswered_lock:
                unanswered = self._unanswered
                for batch in batches:
                    key = (batch.topic, batch.partition)
                    unanswered[key] = unanswered.get(key, 0) + 1
                    self._counted.add(batch)
            for batch in batches:
                stamp = identity.stamp(batch, transactional)
                grouped.setdefault((batch.topic, batch.partition), []).append(
                    batch.encode(codec, stamp)
                )
        correlation_id = self._stream.next_id()
        payload = encode_produce_request(
            self._acks,
            [(topic, partition, blobs) for (topic, partition), blobs in grouped.items()],
            correlation_id,
        )
        self._stream.send(correlation_id, payload, batches)

    def _maybe_refresh_metadata(self) -> None:
        now = time.monotonic()
        if now - self._last_metadata < self._config.metadata_max_age_ms / 1000.0:
            return
        self._last_metadata = now
        for topic in list(self._accumulator.topics):
            try:
                self._refresh(topic)
            except LogstoreError as exc:
                log.info("metadata refresh of %r failed: %s", topic, exc.message)

    # -- answers (on the stream's reader thread) -----------------------------------------------

    def _on_response(self, batches: list[ProducerBatch], response: Any) -> None:
        if response.HasField("error"):
            error = error_from_detail(response.error)
            for batch in batches:
                self._finish(batch, error)
            return
        results = {(result.topic, result.partition): result for result in response.results}
        next_offsets: dict[tuple[str, int], int] = {}
        for batch in batches:
            key = (batch.topic, batch.partition)
            result = results.get(key)
            if result is None:
                self._finish(batch, LogstoreError(
                    f"the broker did not answer for {batch.topic}/{batch.partition}"))
            elif result.HasField("error"):
                self._finish(batch, error_from_detail(result.error))
            elif result.base_offset < 0:  # acks=0
                self._finish(batch, None, -1)
            else:
                if result.duplicate and key not in next_offsets:
                    self.duplicates += 1
                base = next_offsets.get(key, result.base_offset)
                next_offsets[key] = base + batch.count
                self._finish(batch, None, base)

    def _on_failure(self, batches: list[ProducerBatch], error: LogstoreError) -> None:
        for batch in batches:
            self._finish(batch, error)

    def _finish(self, batch: ProducerBatch, error: LogstoreError | None, base: int = -1) -> None:
        if self._identity is not None:
            key = (batch.topic, batch.partition)
            with self._unanswered_lock:
                if batch in self._counted:
                    self._counted.discard(batch)
                    left = self._unanswered[key] - 1
                    if left:
                        self._unanswered[key] = left
                    else:
                        del self._unanswered[key]
            self._answered.set()
        if error is not None:
            if batch.stamp is not None and self._identity is not None:
                self._identity.reset_needed = True
            if self._transaction is not None:
                self._transaction.fail(error)
        self._accumulator.finished(batch)
        try:
            if error is None:
                batch.complete(base)
            else:
                batch.fail(error)
        except Exception:  # a user callback raised: keep the sender alive
            log.exception("a producer callback raised")
