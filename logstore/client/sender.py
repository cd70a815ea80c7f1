"""The producer's sender thread: drain the accumulator, encode batches, send requests, resolve.

Loop: take ready batches (full, lingered, everything when flushing, or everything open when no
request is in flight: Nagle's rule, see ``accumulator``) up to ``max_request_bytes``,
encode the ones ``send`` filled (``ProducerBatch.encode``), group them per partition in order into
one hand-serialized ``ProduceRequest`` (``wire.encode_produce_request``) and hand it to the
``ProduceStream``, which blocks while ``max_in_flight`` requests are unanswered. Responses arrive
on the stream's reader thread (``_on_response``): each batch gets its base offset, or its
partition's error, and its futures resolve.

Idempotence (``identity``): every batch is stamped with the producer id, epoch and its
partition's next sequence just before it is sent, in send order, and no more than 20 batches of a
partition are ever unanswered (``MAX_UNANSWERED_BATCHES``: the broker remembers 20 per partition,
so any retry is recognized); a partition at 20 waits for an answer. A stamped batch that fails for good leaves a gap in its partition's sequences: the
sender then waits for every answer and takes a new producer id (transactional producers do that
when the transaction is aborted). Transactions (``transaction``): batches are stamped
transactional; on a single node the broker adds each partition to the open transaction with
its first batch, in a cluster the sender first adds new partitions at the coordinator
(``Transaction.add_partitions``).

Routing (see ``metadata``). On a single node every request goes over one stream to the bootstrap
address, as it always did. In a cluster the batches of a request are grouped per leader broker
and each group goes over that broker's own ``ProduceStream``.

Retries. A partition answered NOT_LEADER, NOT_ENOUGH_REPLICAS, UNAVAILABLE or TIMEOUT (or, in a cluster,
a broken stream, or a partition with no leader right now) does not fail its batches: they are
*held* for a backoff, the metadata is read again, and they go back to the front of the queue,
to the new leader, up to ``retries`` times. Held batches keep their bytes, so an idempotent
producer re-sends them with their original sequence numbers: the broker's producer state is
replicated with the log, and a new leader answers a batch it already has as a duplicate. Order
per partition: while a partition has held batches none of its newer batches is sent, held ones
are released only when none of the partition's batches is unanswered, and (idempotent, in a
cluster) a partition's batches never go to a second broker while some are unanswered at the
first; and (idempotent, in a cluster) a retried batch goes in a request without its partition's
other batches, which wait for its answer: the new leader may hold a prefix of what the old one
appended, and refuses a request that is part duplicate, part new. Without idempotence a retried
batch may be appended twice (at-least-once).

Also refreshes the metadata of every topic it sends to every ``metadata_max_age_ms``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from logstore.client.accumulator import Accumulator
from logstore.client.batch import ProducerBatch
from logstore.client.channel import error_from_detail, is_transient
from logstore.client.config import MAX_UNANSWERED_BATCHES, ProducerConfig, backoff_seconds
from logstore.client.metadata import Metadata
from logstore.client.stream import OnFailure, OnResponse, ProduceStream
from logstore.client.transactions import ProducerIdentity, Transaction
from logstore.client.txn_end import EndSending, PendingEnd
from logstore.client.wire import encode_produce_request
from logstore.errors import LogstoreError, NotLeaderError, UnavailableError

log = logging.getLogger("logstore.client")

#: How long the sender sleeps when nothing is open (it is woken as soon as a batch opens).
IDLE_WAIT = 1.0
#: While batches are held for a retry, the sender looks at them at least this often.
HELD_POLL_S = 0.05
#: Partition answers after which the batch is sent again (after a metadata refresh).
RETRY_REASONS = frozenset(("NOT_LEADER", "NOT_ENOUGH_REPLICAS", "UNAVAILABLE", "TIMEOUT"))

Key = tuple[str, int]
#: open_stream(address, on_response, on_failure): a produce stream to one broker.
StreamOpener = Callable[[str, OnResponse, OnFailure], ProduceStream]


class Sender(EndSending):
    def __init__(
        self,
        accumulator: Accumulator,
        open_stream: StreamOpener,
        config: ProducerConfig,
        refresh: Callable[[list[str]], object],
        metadata: Metadata,
        identity: ProducerIdentity | None = None,
        transaction: Transaction | None = None,
    ) -> None:
        self._accumulator = accumulator
        self._config = config
        self._acks = config.acks_wire
        self._refresh = refresh
        self._metadata = metadata
        self._identity = identity
        self._transaction = transaction
        #: Idempotence: unanswered batches per partition (at most 20), and a signal per answer;
        #: in a cluster also the broker they went to.
        self._unanswered: dict[Key, int] = {}
        self._counted: set[ProducerBatch] = set()
        self._sent_to: dict[Key, str] = {}
        self._unanswered_lock = threading.Lock()
        self._answered = threading.Event()
        #: One produce stream per broker address (only the sender thread opens them).
        self._open_stream = open_stream
        self._streams: dict[str, ProduceStream] = {}
        #: Batches waiting to be sent again, per partition, and when they may go.
        self._held: dict[Key, list[ProducerBatch]] = {}
        self._held_until: dict[Key, float] = {}
        #: Partition results the broker answered as retries of batches it already had.
        self.duplicates = 0
        self._flush_requests = 0
        self._flush_lock = threading.Lock()
        #: A transaction's end to send once nothing is queued or held (``end_transaction``).
        self._ending: PendingEnd | None = None
        self._stopping = threading.Event()
        #: Held from ``drain`` until its batches are on a stream, by the sender thread or a
        #: caller sending directly (``send_direct``), so requests go in the order drained.
        self._send_lock = threading.Lock()
        self._last_metadata = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="logstore-producer-sender",
                                        daemon=True)
        self._thread.start()
        accumulator.send_direct = self.send_direct

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
        for stream in list(self._streams.values()):
            stream.close(timeout)
        with self._unanswered_lock:
            held = [batch for batches in self._held.values() for batch in batches]
            self._held.clear()
            self._held_until.clear()
        for batch in held:
            self._finish(batch, UnavailableError("the producer closed before the batch could be "
                                                 "sent again"))
        ending, self._ending = self._ending, None
        if ending is not None:
            ending.failed(UnavailableError("the producer closed before the transaction ended"))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        accumulator = self._accumulator
        max_bytes = self._config.max_request_bytes
        idempotent = self._identity is not None
        while True:
            self._maybe_refresh_metadata()  # also under constant load: new partitions, leaders
            if self._held:
                self._release_held()
            room = self._room if idempotent else (self._room_held if self._held else None)
            force = self._flush_requests > 0
            self._answered.clear()
            with self._send_lock:
                batches, wait = accumulator.drain(max_bytes, force=force, room=room)
                if batches:
                    self._send_drained(batches)
                    continue
            if room is not None and accumulator.ready:
                # the next partition has 5 unanswered, or batches held for a retry
                self._answered.wait(HELD_POLL_S if self._held else IDLE_WAIT)
                continue
            if self._ending is not None and not self._held and not accumulator.pending():
                self._send_end()
                continue
            if self._stopping.is_set() and not accumulator.pending() and not self._held:
                return
            timeout = IDLE_WAIT if wait is None else wait
            accumulator.sleep(min(timeout, HELD_POLL_S) if self._held else timeout, self._urgent)

    def send_direct(self) -> None:
        """``send()``'s own send (``Accumulator.send_direct``): a record opened a batch while
        nothing was in flight and the sender thread slept, so the calling thread drains and sends
        at once, as the sender thread would have after waking up (one thread hop less). Anything
        unusual — the sender busy, batches held for a retry, a transaction's end pending, no
        producer id yet or a new one needed, a flush or close under way — wakes the sender
        thread instead, which handles it as before."""
        identity = self._identity
        if (self._held or self._ending is not None or self._stopping.is_set()
                or self._flush_requests or self._transaction is not None
                or (identity is not None and (identity.producer_id < 0 or identity.reset_needed))
                or not self._send_lock.acquire(blocking=False)):
            self._accumulator.wake()
            return
        try:
            if self._accumulator.hold.in_flight:  # the sender thread was quicker: Nagle's rule
                self._accumulator.wake()  # holds the batch; the sender times the late rule
                return
            room = self._room if identity is not None else None
            batches, _ = self._accumulator.drain(self._config.max_request_bytes, room=room,
                                                 direct=True)
            if batches:
                self._send_drained(batches)
        finally:
            self._send_lock.release()

    def _send_drained(self, batches: list[ProducerBatch]) -> None:
        """Send what ``drain`` gave (under ``_send_lock``); a batch that cannot go fails."""
        end = self._end_with(batches)
        try:
            if self._identity is not None:
                self._prepare_identity()
            self._send(batches, end)
            end = None
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
        if end is not None:  # not sent with them: it goes alone (the broker aborts)
            end.batches = []
            self._ending = end

    def _urgent(self) -> bool:
        """A flush or stop came in since the last drain: drain again instead of sleeping.
        Called under the accumulator's lock."""
        accumulator = self._accumulator
        if self._stopping.is_set() or self._ending is not None:
            return True
        return self._flush_requests > 0 and bool(accumulator.opened or accumulator.ready)

    def _room(self, key: Key) -> int:
        """How many more batches of the partition may be sent before an answer comes back
        (none while it has batches held for a retry: they go first)."""
        if self._held and key in self._held:
            return 0
        return MAX_UNANSWERED_BATCHES - self._unanswered.get(key, 0)

    def _room_held(self, key: Key) -> int:
        """Without idempotence: only partitions holding batches for a retry wait."""
        return 0 if key in self._held else 1 << 30

    def _prepare_identity(self) -> None:
        """A producer id before the first batch; a new one after a gap in the sequences."""
        identity = self._identity
        assert identity is not None
        if identity.reset_needed and self._transaction is None:
            for stream in list(self._streams.values()):
                stream.wait_idle()  # every answer in: no stamped batch is left unanswered
            log.info("idempotent producer %d: a batch failed; taking a new producer id",
                     identity.producer_id)
            identity.init()
            self._accumulator.resequence(identity.next_sequences)
        else:
            identity.ensure()

    def _send(self, batches: list[ProducerBatch], end: PendingEnd | None = None) -> None:
        metadata = self._metadata
        if not metadata.clustered:  # a single node: one stream, no lookup per batch
            address = metadata.address()
            self._send_to(address, batches, end)
            return
        if end is not None:  # the producer ends a transaction this way only on a single node
            end.batches = []
            self._ending = end
        try:
            view = metadata.view(retries=0)  # the sender thread does not wait: batches do
        except LogstoreError as exc:  # no broker answers metadata right now
            for batch in batches:
                self._retry(batch, exc)
            return
        transaction = self._transaction
        if transaction is not None:  # a cluster: partitions join the transaction first
            wanted = {(b.topic, b.partition) for b in batches}
            if not wanted <= transaction.added:  # with those queued behind: one call, not one a drain
                transaction.add_partitions(wanted | self._accumulator.pending_partitions())
        groups = view.group_by_leader(batches, _partition_of, metadata.address())
        for leader, group in groups.items():
            if leader is None:
                for batch in group:
                    self._retry(batch, NotLeaderError(batch.topic, batch.partition))
                continue
            if self._identity is not None:
                group = self._retries_alone(self._pin(group, leader))
            if group:
                self._send_to(leader, group)

    def _pin(self, batches: list[ProducerBatch], leader: str) -> list[ProducerBatch]:
        """Hold (without counting an attempt) the batches of partitions whose unanswered
        batches went to another broker: sequences must reach a partition's leader in order."""
        out = []
        for batch in batches:
            key = (batch.topic, batch.partition)
            elsewhere = self._sent_to.get(key)
            if elsewhere is not None and elsewhere != leader and self._unanswered.get(key):
                self._hold(batch, 0.0)
            else:
                out.append(batch)
        return out

    def _retries_alone(self, batches: list[ProducerBatch]) -> list[ProducerBatch]:
        """A partition's retried batch goes without the partition's other batches; those are
        held (without counting an attempt) until it is answered. A new leader may have some of
        the batches an old one appended and not the others, and refuses a request that is part
        duplicate, part new (OUT_OF_ORDER_SEQUENCE): one at a time, each is recognized or
        appended (Kafka sends one batch per partition per request)."""
        out = []
        retrying: set[Key] = set()
        for batch in batches:
            key = (batch.topic, batch.partition)
            if key in retrying:
                self._hold(batch, 0.0)
                continue
            if batch.attempts:
                retrying.add(key)
            out.append(batch)
        return out

    def _send_to(self, address: str, batches: list[ProducerBatch],
                 end: PendingEnd | None = None) -> None:
        codec = self._config.codec
        grouped: dict[Key, list[bytes]] = {}
        identity = self._identity
        if identity is None:
            for batch in batches:
                grouped.setdefault((batch.topic, batch.partition), []).append(batch.encode(codec))
        else:
            transactional = self._transaction is not None
            clustered = self._metadata.clustered
            with self._unanswered_lock:
                unanswered = self._unanswered
                for batch in batches:
                    key = (batch.topic, batch.partition)
                    unanswered[key] = unanswered.get(key, 0) + 1
                    self._counted.add(batch)
                    if clustered:
                        self._sent_to[key] = address
            for batch in batches:
                if batch.attempts:  # a retry: the same bytes, the same sequence
                    blob = batch.encode(codec)
                else:
                    blob = batch.encode(codec, identity.stamp(batch, transactional))
                grouped.setdefault((batch.topic, batch.partition), []).append(blob)
        stream = self._stream(address)
        correlation_id = stream.next_id()
        payload = encode_produce_request(
            self._acks,
            [(topic, partition, blobs) for (topic, partition), blobs in grouped.items()],
            correlation_id,
            *(() if end is None or identity is None else
              (identity.transactional_id, end.message(identity))),
        )
        self._accumulator.request_sent(len(payload))
        try:
            stream.send(correlation_id, payload, batches if end is None else end)
        except BaseException:
            self._accumulator.request_done()
            raise

    def _stream(self, address: str) -> ProduceStream:
        stream = self._streams.get(address)
        if stream is None:
            stream = self._streams[address] = self._open_stream(
                address,
                lambda context, response: self._on_response(address, context, response),
                lambda context, error: self._on_failure(address, context, error),
            )
        return stream

    def _maybe_refresh_metadata(self) -> None:
        now = time.monotonic()
        if now - self._last_metadata < self._config.metadata_max_age_ms / 1000.0:
            return
        self._last_metadata = now
        topics = list(self._accumulator.topics)
        if not topics:
            return
        try:
            self._refresh(topics)
        except LogstoreError as exc:
            log.info("metadata refresh of %d topics failed: %s", len(topics), exc.message)

    # -- retries -------------------------------------------------------------------------------

    def _retry(self, batch: ProducerBatch, error: LogstoreError) -> None:
        """Send the batch again after a backoff and a metadata refresh, or fail it once it
        used its ``retries`` (any thread)."""
        config = self._config
        if batch.attempts >= config.retries:
            self._finish(batch, error)
            return
        batch.attempts += 1
        self._metadata.invalidate()
        log.info("%s/%d: %s; sending again (attempt %d)", batch.topic, batch.partition,
                 error.reason, batch.attempts)
        self._hold(batch, backoff_seconds(batch.attempts, config.retry_backoff_ms,
                                          config.retry_backoff_max_ms))

    def _hold(self, batch: ProducerBatch, delay_s: float) -> None:
        key = (batch.topic, batch.partition)
        with self._unanswered_lock:
            self._uncount(batch, key)
            self._held.setdefault(key, []).append(batch)
            until = time.monotonic() + delay_s
            self._held_until[key] = max(self._held_until.get(key, until), until)
        self._answered.set()
        self._accumulator.wake()

    def _release_held(self) -> None:
        """Requeue, at the front and in sequence order, the held batches of every partition
        whose backoff is over and which has nothing unanswered (sender thread)."""
        now = time.monotonic()
        released: list[ProducerBatch] = []
        with self._unanswered_lock:
            for key, until in list(self._held_until.items()):
                if until <= now and not self._unanswered.get(key):
                    del self._held_until[key]
                    released += sorted(self._held.pop(key), key=_send_order)
        if not released:
            return
        if self._metadata.clustered:
            try:
                self._refresh(list(dict.fromkeys(batch.topic for batch in released)))
            except LogstoreError as exc:  # routing tries again (and holds them again if need be)
                log.info("metadata refresh before a retry failed: %s", exc.message)
        self._accumulator.requeue(released)

    # -- answers (on the stream's reader thread) -----------------------------------------------

    def _on_response(self, address: str, batches: list[ProducerBatch] | PendingEnd,
                     response: Any) -> None:
        try:
            if isinstance(batches, PendingEnd):
                self._answer_end(address, batches, response)
            else:
                self._answer(address, batches, response)
        finally:
            self._accumulator.request_done()

    def _answer(self, address: str, batches: list[ProducerBatch], response: Any) -> None:
        if response.HasField("error"):
            error = error_from_detail(response.error)
            retry = error.reason in RETRY_REASONS
            if retry:
                self._metadata.observe(error, address)
            for batch in batches:
                if retry:
                    self._retry(batch, error)
                else:
                    self._finish(batch, error)
            return
        results = {(result.topic, result.partition): result for result in response.results}
        next_offsets: dict[Key, int] = {}
        for batch in batches:
            key = (batch.topic, batch.partition)
            result = results.get(key)
            if result is None:
                self._finish(batch, LogstoreError(
                    f"the broker did not answer for {batch.topic}/{batch.partition}"))
            elif result.HasField("error"):
                error = error_from_detail(result.error)
                if error.reason in RETRY_REASONS:
                    self._metadata.observe(error, address)
                    self._retry(batch, error)
                elif self._behind_a_retry(batch, error):
                    self._retry(batch, error)
                else:
                    self._finish(batch, error)
            elif result.base_offset < 0:  # acks=0
                self._finish(batch, None, -1)
            else:
                if result.duplicate and key not in next_offsets:
                    self.duplicates += 1
                base = next_offsets.get(key, result.base_offset)
                next_offsets[key] = base + batch.count
                self._finish(batch, None, base)

    def _behind_a_retry(self, batch: ProducerBatch, error: LogstoreError) -> bool:
        """OUT_OF_ORDER_SEQUENCE for a batch whose partition holds batches of lower sequence
        for a retry: it was sent (after them, on a new stream) when their stream had just
        failed, and reached the broker first; nothing was appended, so it goes again after
        them, as Kafka's producer retries a batch refused behind a retried one."""
        if error.reason != "OUT_OF_ORDER_SEQUENCE" or batch.stamp is None:
            return False
        sequence = batch.stamp[2]
        with self._unanswered_lock:
            held = self._held.get((batch.topic, batch.partition), ())
            return any(b.stamp is not None and b.stamp[2] < sequence for b in held)

    def _on_failure(self, address: str, batches: list[ProducerBatch] | PendingEnd,
                    error: LogstoreError) -> None:
        """The stream to ``address`` failed. A single node's stream already retried; in a
        cluster the broker may be gone for good, so the batches go wherever metadata says."""
        try:
            if isinstance(batches, PendingEnd):
                if batches.batches:
                    self._failed(address, batches.batches, error)
                batches.failed(error)
            else:
                self._failed(address, batches, error)
        finally:
            self._accumulator.request_done()

    def _failed(self, address: str, batches: list[ProducerBatch], error: LogstoreError) -> None:
        if self._metadata.clustered and is_transient(error) and not self._stopping.is_set():
            self._metadata.observe(error, address)
            for batch in batches:
                self._retry(batch, error)
            return
        for batch in batches:
            self._finish(batch, error)

    def _uncount(self, batch: ProducerBatch, key: Key) -> None:
        """The batch is no longer unanswered (under ``_unanswered_lock``)."""
        if batch in self._counted:
            self._counted.discard(batch)
            left = self._unanswered[key] - 1
            if left:
                self._unanswered[key] = left
            else:
                del self._unanswered[key]
                self._sent_to.pop(key, None)

    def _finish(self, batch: ProducerBatch, error: LogstoreError | None, base: int = -1) -> None:
        if self._identity is not None:
            with self._unanswered_lock:
                self._uncount(batch, (batch.topic, batch.partition))
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


def _partition_of(batch: ProducerBatch) -> Key:
    return (batch.topic, batch.partition)


def _send_order(batch: ProducerBatch) -> tuple[int, int]:
    """Held batches already sent (by their sequence) before those never sent (kept in order)."""
    if batch.attempts and batch.stamp is not None:
        return (0, batch.stamp[2])
    return (0, 0) if batch.attempts else (1, 0)
