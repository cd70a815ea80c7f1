"""``Producer``: batching, pipelined, retrying writes of records to topics.

``send`` appends to its partition's open batch in the accumulator and returns a ``RecordFuture``;
the sender thread sends closed batches over one ``ProduceStream`` call with up to
``max_in_flight`` requests unanswered (see ``accumulator``, ``sender``, ``stream``).
``send_batch`` takes many records in columnar form, cuts them into batches with numpy (see
``bulk``) and queues them behind the partition's open batch. Per partition, records are appended
in the order they were sent.

Idempotence (on by default with ``acks="all"``) and transactions: see ``transactions``. A
transactional producer calls ``init_transactions()`` once, then per transaction
``begin_transaction()``, ``send``/``send_batch``, optionally
``send_offsets_to_transaction(offsets, consumer.group_metadata())``, and
``commit_transaction()`` or ``abort_transaction()``: the records (and offsets) of a transaction
become visible to ``read_committed`` consumers all at once, or never.

Thread-safety: every method may be called from any thread; the transaction methods from one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from types import TracebackType
from typing import Any

from logstore.api.v1 import records_pb2
from logstore.client import bulk, produce_channel
from logstore.client.accumulator import Accumulator
from logstore.client.batch import ProducerBatch, RecordFuture, batch_group_future
from logstore.client.channel import Channels, refused_as
from logstore.client.config import Credentials, ProducerConfig, build, resolve_server
from logstore.client.metadata import Metadata
from logstore.client.models import BatchMetadata, GroupMetadata, TopicPartition
from logstore.client.routing import transaction_coordinator
from logstore.client.sender import Sender
from logstore.client.stream import OnFailure, OnResponse, ProduceStream
from logstore.client.transactions import (
    IN_TRANSACTION,
    READY,
    ProducerIdentity,
    Transaction,
)
from logstore.errors import (
    InvalidTransactionStateError,
    LogstoreError,
    RequestTimeoutError,
    TransactionAbortedError,
    UnavailableError,
)

PRODUCE_STREAM = "/logstore.api.v1.LogStore/ProduceStream"

Headers = Sequence[tuple[str, bytes | str | None]] | dict[str, bytes | str | None]


class Producer:
    """Sends records to a logstore broker.

    ``Producer(server, acks="all", linger_ms=5, batch_bytes=1 MiB, codec="none", ...)``; the
    options are ``ProducerConfig``'s. A record sent while no request is in flight goes at once;
    records sent while one is batch up until its answer comes (at most ``linger_ms``; sooner, as
    a second request, if that small request is late: twice the recent round trip), so the
    producer is fast when idle and batches under load with the same defaults. ``server`` defaults to ``$LOGSTORE_SERVER`` or
    ``127.0.0.1:7070``; it may list several bootstrap addresses (``"h1:7070,h2:7070"``), tried
    in turn until one answers. In a cluster each partition's batches go to its leader, and a
    batch answered NOT_LEADER, NOT_ENOUGH_REPLICAS or UNAVAILABLE is sent again to the new
    leader (see ``sender``). Use as a context manager, or call ``close()``.

    With ``acks="all"`` the producer is idempotent unless ``enable_idempotence=False``: a batch
    retried after a lost answer (the broker restarted between appending and answering) is not
    appended twice. ``transactional_id="..."`` makes it transactional (see the module docs).
    """

    def __init__(self, server: str | None = None, **options: Any) -> None:
        credentials = Credentials.take(options)
        self.config: ProducerConfig = build(ProducerConfig, options)
        self.server = resolve_server(server)
        config = self.config
        self._channels = Channels(credentials)
        self._metadata = Metadata(
            self.server, self._channels,
            retries=config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
            timeout_s=config.request_timeout_ms / 1000.0,
            max_age_ms=config.metadata_max_age_ms,
        )
        self._closed = False
        self._accumulator = Accumulator(
            batch_bytes=config.batch_bytes,
            linger_ms=config.linger_ms,
            linger_when_idle=(bool(config.transactional_id) if config.linger_when_idle is None
                              else config.linger_when_idle),
            buffer_bytes=config.buffer_bytes,
            describe=self._partition_count,
        )
        self._identity: ProducerIdentity | None = None
        self._transaction: Transaction | None = None
        if config.idempotent:
            stub = transaction_coordinator(self._metadata, config.transactional_id or "")
            self._identity = ProducerIdentity(stub, self.server, config)
            self._accumulator.sequences = {}
            if config.transactional_id:
                self._transaction = Transaction(stub, self.server, config, self._identity, self._metadata)
        self._sender = Sender(self._accumulator, self._open_stream, config, self._refresh,
                              self._metadata, self._identity, self._transaction)
        #: ``send`` is the accumulator's append itself: one call less per record. A
        #: transactional producer checks that a transaction is open for the first record of each
        #: batch (``Accumulator.admit``): every batch closes when a transaction ends, so a record
        #: sent outside one always takes that path.
        self.send = self._accumulator.append  # type: ignore[method-assign]
        if self._transaction is not None:
            self._accumulator.admit = self._admit_in_transaction

    # -- sending -----------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordFuture:
        """Queue one record; the future resolves to ``RecordMetadata(partition, offset)``.

        Without ``partition``, a keyed record goes to ``murmur2(key)`` (Kafka's partitioner) and a
        keyless one to the topic's sticky partition. ``timestamp`` is milliseconds since the
        epoch; without it the record takes the time its batch was opened. ``value`` and ``key``
        may also be str (UTF-8). Blocks only when ``buffer_bytes`` of batches wait to be sent.
        """
        return self._accumulator.append(topic, value, key, headers, partition, timestamp)

    def send_arrow(self, topic: str, table: Any, value: str | None = None, key: str | None = None,
                   timestamp: str | None = None, headers: str | None = None,
                   partition: int | str | None = None) -> Future[list[BatchMetadata]]:
        """Rows of a pyarrow Table/RecordBatch or a pandas/polars DataFrame as records, through
        ``send_batch`` (no per-record Python step). ``value``: a binary/string column, or None
        for each row as a JSON object; ``key``, ``timestamp``, ``headers``: column names;
        ``partition``: an int, a column of partition numbers, or None. See docs/frames.md.
        Needs ``pip install 'logstore[arrow]'``."""
        from logstore.client.frames import write

        plans = write.plan(table, value, key, timestamp, headers, partition)
        return write.gather([self.send_batch(topic, **arguments) for arguments in plans])

    def send_batch(
        self,
        topic: str,
        values: Any,
        keys: Any = None,
        partition: int | None = None,
        timestamps: Any = None,
        headers: Sequence[Any] | None = None,
    ) -> Future[list[BatchMetadata]]:
        """Queue many records at once, without a per-record Python loop.

        ``values`` (and ``keys``) is a list of bytes (None allowed), ``(lengths, blob)`` with a
        numpy length array (-1 = None) and the non-null bytes back to back, or a 2-D uint8 array
        of fixed-size records. ``timestamps``: None (now), one int, or one per record.
        ``headers``: None or one entry (None or (key, value) pairs) per record.

        The records are cut into batches of about ``batch_bytes``: keyless ones go to the given
        ``partition`` or to sticky partitions batch by batch, keyed ones by murmur2. The future
        resolves to one ``BatchMetadata(partition, base_offset, last_offset)`` per batch.
        """
        self._check_open()
        state = self._accumulator.topics.get(topic) or self._accumulator.learn(topic)
        if partition is not None and not 0 <= partition < state.count:
            state = self._accumulator.learn(topic, partition)
        value_column = bulk.to_column(values, "values")
        count = len(value_column[0])
        key_column = None if keys is None else bulk.to_column(keys, "keys")
        if key_column is not None and len(key_column[0]) != count:
            raise ValueError(f"{len(key_column[0])} keys for {count} values")
        header_column = None if headers is None else bulk.headers_column(headers, count)
        if self._transaction is not None:
            self._transaction.require(IN_TRANSACTION, action="send")
        identity = self._identity
        if identity is not None:
            identity.ensure()
        slices = bulk.plan(
            values=value_column,
            keys=key_column,
            headers=header_column,
            timestamps=bulk.timestamps_of(timestamps, count),
            partition=partition,
            partitions=state.count,
            batch_bytes=self.config.batch_bytes,
            sticky=functools.partial(self._accumulator.sticky_partitions, topic),
        )
        batches: list[ProducerBatch] = []
        transactional = self._transaction is not None
        for piece in slices:
            stamp = None
            if identity is not None:  # the sequence the sender will most likely give it
                sequence = self._accumulator.reserve(topic, piece.partition, len(piece))
                stamp = identity.predicted_stamp(sequence, transactional)
            encoded = bulk.encode_slice(piece, self.config.codec, stamp)
            batch = ProducerBatch.of_encoded(topic, piece.partition, encoded, len(piece), stamp)
            self._accumulator.enqueue([batch])
            batches.append(batch)
        return batch_group_future(batches)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued so far, ignoring ``linger_ms``, and wait for the answers.

        Raises ``RequestTimeoutError`` if some are still unanswered after ``timeout`` seconds.
        Failed records do not make ``flush`` raise: their futures hold the errors.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        batches = self._accumulator.snapshot()
        self._sender.begin_flush()
        try:
            for batch in batches:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not batch.wait(remaining):
                    raise RequestTimeoutError(
                        f"flush: {sum(not b.done for b in batches)} batches unanswered "
                        f"after {timeout} s"
                    )
        finally:
            self._sender.end_flush()

    # -- transactions ----------------------------------------------------------------------------

    def init_transactions(self) -> None:
        """Register the ``transactional_id`` with the broker: fences every older producer with
        the same id (their calls fail with ``ProducerFencedError``) and aborts the transaction
        one of them left open. Call once, before the first transaction."""
        transaction = self._require_transactional()
        self.flush()
        transaction.init()
        self._accumulator.resequence({})

    def begin_transaction(self) -> None:
        """Start a transaction: what is sent until ``commit_transaction`` or
        ``abort_transaction`` becomes visible to read_committed consumers all at once, or never."""
        self._require_transactional().begin()

    def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group: GroupMetadata | str
    ) -> None:
        """Commit a consumer group's offsets (``{TopicPartition: next offset}``, e.g.
        ``consumer.position_offsets()``) as part of the transaction: they count only if it
        commits. Pass ``consumer.group_metadata()`` so a fenced group member is refused."""
        self._require_transactional().send_offsets(offsets, group)

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Send everything, then commit. If a record of the transaction failed, raise its error
        without committing: the transaction can then only be aborted. ``ProducerFencedError``
        means a newer instance took over (or the broker aborted the transaction after
        ``transaction_timeout_ms``): the producer must ``init_transactions()`` again.

        On a single node the commit travels on the produce stream right behind the last batch
        (one round trip, no wait for the batches' answers first): the broker commits only if it
        appended every batch sent in the transaction, else it aborts it and this raises
        ``TransactionAbortedError``. A ``RequestTimeoutError`` (``timeout`` seconds without an
        answer) leaves the outcome open: call ``commit_transaction`` again, which is answered
        as committed if the first one was. In a cluster: ``flush``, then ``EndTxn``."""
        transaction = self._require_transactional()
        transaction.require(IN_TRANSACTION, action="commit")
        if not self._metadata.view().clustered:  # one stream: the end right behind the batches
            self._commit_pipelined(transaction, timeout)
            return
        self.flush(timeout)
        if transaction.error is not None:
            raise TransactionAbortedError(
                f"a record of the transaction failed ({transaction.error.reason}: "
                f"{transaction.error.message}); abort the transaction",
                transactional_id=transaction.transactional_id,
            ) from transaction.error
        transaction.end(commit=True)

    def _commit_pipelined(self, transaction: Transaction, timeout: float | None) -> None:
        """``commit_transaction`` on a single node (``txn_end``): one round trip. An end that
        got no answer (the stream failed, a retriable refusal) is sent again once every batch
        is answered; the broker's answer to it, commit or abort, is the transaction's fate."""
        deadline = None if timeout is None else time.monotonic() + timeout
        error: BaseException | None = None
        for attempt in range(2):
            pending = self._sender.end_transaction(commit=True)
            try:
                pending.future.exception(_remaining(deadline))  # after every batch's answer
            except FutureTimeoutError:
                raise RequestTimeoutError(
                    f"commit_transaction: no answer after {timeout} s; the commit may still "
                    f"happen (call commit_transaction again)"
                ) from None
            finally:
                self._sender.end_flush()
            error = pending.future.exception()
            if error is None or attempt or _definitive(error):
                break
            self.flush(_remaining(deadline))
        transaction.ended(error if isinstance(error, LogstoreError) else None)
        if error is None:
            return
        if transaction.error is not None and isinstance(error, TransactionAbortedError):
            raise TransactionAbortedError(
                f"a record of the transaction failed ({transaction.error.reason}: "
                f"{transaction.error.message}); the broker aborted it: abort the transaction",
                transactional_id=transaction.transactional_id,
            ) from transaction.error
        raise error

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort: records not yet sent fail with ``TransactionAbortedError``, records sent are
        never shown to read_committed consumers, offsets sent are dropped."""
        transaction = self._require_transactional()
        transaction.require(IN_TRANSACTION, action="abort")
        self._accumulator.fail_all(TransactionAbortedError(
            "the transaction was aborted", transactional_id=transaction.transactional_id))
        self.flush(timeout)  # what is in flight is answered (or failed) first
        identity = self._identity
        assert identity is not None
        try:
            transaction.end(commit=False)
        finally:
            if identity.reset_needed and transaction.state == READY:
                transaction.init()  # a gap in the sequences: a new epoch starts them at 0
            self._accumulator.resequence(identity.next_sequences)

    def _require_transactional(self) -> Transaction:
        if self._transaction is None:
            raise InvalidTransactionStateError(
                "the producer is not transactional: create it with transactional_id=...")
        return self._transaction

    def _admit_in_transaction(self) -> None:
        """A record opening a batch (``Accumulator.admit``): only inside a transaction."""
        transaction = self._transaction
        assert transaction is not None
        if transaction.state != IN_TRANSACTION:
            transaction.require(IN_TRANSACTION, action="send")

    @property
    def producer_id(self) -> int:
        """The id the broker handed out (-1 before the first batch, or when not idempotent)."""
        return self._identity.producer_id if self._identity is not None else -1

    @property
    def producer_epoch(self) -> int:
        return self._identity.epoch if self._identity is not None else -1

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the sender and close the channel. Records still unsent after ``timeout``
        seconds fail with ``UnavailableError``. An open transaction is left for the broker to
        abort (after its timeout, or when the next instance calls ``init_transactions``).
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout)
        except RequestTimeoutError:
            pass
        finally:
            self._sender.stop(timeout if timeout is not None else 10.0)
            self._accumulator.closed = True
            self._accumulator.fail_all(UnavailableError("the producer was closed"))
            self.send = self._send_closed  # type: ignore[method-assign]
            self._channels.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- metadata ------------------------------------------------------------------------------

    def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition numbers (re-read from the broker)."""
        return list(range(self._accumulator.learn(topic).count))

    def _partition_count(self, topic: str) -> int:
        """The topic's metadata read fresh (retried on UNAVAILABLE like the records)."""
        with refused_as("write", topic):  # a refused describe is reported as the write it is for
            return self._metadata.topic(topic).partition_count

    def _refresh(self, topics: list[str]) -> None:
        """One metadata call for every topic the producer sends to (the sender thread, every
        ``metadata_max_age_ms`` and before a retry): new partitions and leaders."""
        view = self._metadata.refresh(topics, retries=0)
        for topic in topics:
            route = view.topics.get(topic)
            if route is not None:
                self._accumulator.grow(topic, route.partition_count)

    def _open_stream(self, address: str, on_response: OnResponse,
                     on_failure: OnFailure) -> ProduceStream:
        """The produce stream to one broker. A single node's stream reconnects by itself (it is
        the only broker); a cluster's hands failed requests back, to be routed again."""
        config = self.config
        method = self._channels.channel(address).stream_stream(
            PRODUCE_STREAM,
            request_serializer=None,  # requests are serialized by wire.encode_produce_request
            response_deserializer=records_pb2.ProduceResponse.FromString,
        )
        credentials = self._channels.credentials
        if produce_channel.CHANNEL_PRODUCE and (credentials is None or not credentials.tls):
            method = produce_channel.ChannelMethod(address, method, self._metadata.stream_port,
                                                   credentials.token if credentials else None)
        return ProduceStream(
            method,
            server=address,
            max_in_flight=config.max_in_flight,
            retries=0 if self._metadata.clustered else config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
            on_response=on_response,
            on_failure=on_failure,
        )

    def _send_closed(self, *args: Any, **kwargs: Any) -> RecordFuture:
        raise UnavailableError("the producer is closed")

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the producer is closed")


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _definitive(error: BaseException) -> bool:
    """An answer to a transaction's end that settles it (anything else: sent again)."""
    return isinstance(error, LogstoreError) and error.reason in (
        "TRANSACTION_ABORTED", "PRODUCER_FENCED", "INVALID_TXN_STATE", "UNKNOWN_TRANSACTIONAL_ID"
    )
