"""The producer's identity (idempotence) and its transaction state machine.

``ProducerIdentity``: the producer id and epoch ``InitProducerId`` hands out, and the next
sequence number per partition. The sender stamps every batch just before it goes out
(``stamp``): producer id, epoch, the partition's next sequence, the transactional flag. A retry
re-sends the same bytes, so the broker recognizes it (it remembers the last 20 batches per producer
and partition) and answers with the original offsets instead of appending again. When a stamped
batch fails for good, the partition's sequences have a gap the broker would refuse forever: an
idempotent producer then waits for what is in flight and takes a new producer id (``reset``), a
transactional one does so when the transaction is aborted.

``Transaction``: the client side of a transactional id: ``init`` (fences older instances and
aborts what they left open), ``begin``, transactional batches (on a single node the broker adds a
partition to the transaction with its first batch, as Kafka does since KIP-890: no call before
sending; in a cluster the sender first calls ``AddPartitionsToTxn`` on the coordinator for the
partitions new to the transaction, ``add_partitions``), offsets sent with ``send_offsets`` (in a
cluster: the group joins the transaction at its coordinator, then the offsets go to the group's
coordinator), and ``end``.

Thread-safety: ``ProducerIdentity.lock`` guards the identity and sequences (the sender thread
stamps, a user thread may ``init``); ``Transaction`` state is changed by the user's thread except
``error`` and ``added``, which the sender thread writes under ``Transaction.lock``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from logstore.api.v1 import common_pb2, groups_pb2, transactions_pb2
from logstore.client.batch import ProducerBatch
from logstore.client.bulk import SEQUENCE_MASK, Stamp
from logstore.client.channel import call_with_retries
from logstore.client.config import ProducerConfig
from logstore.client.metadata import Metadata
from logstore.client.models import GroupMetadata, TopicPartition
from logstore.client.routing import group_coordinator
from logstore.errors import InvalidTransactionStateError, LogstoreError

TopicPartitionKey = tuple[str, int]


class ProducerIdentity:
    def __init__(self, stub: Any, server: str, config: ProducerConfig) -> None:
        self.lock = threading.Lock()
        self.producer_id = -1
        self.epoch = -1
        self.transactional_id = config.transactional_id or ""
        #: Per partition, the sequence of the next record the sender stamps.
        self.next_sequences: dict[TopicPartitionKey, int] = {}
        #: A stamped batch failed: sequences have a gap until ``init`` runs again.
        self.reset_needed = False
        #: Partitions stamped transactional since the transaction began (``txn_end``).
        self.transaction_partitions: set[TopicPartitionKey] = set()
        self._stub = stub
        self._server = server
        self._config = config

    def ensure(self) -> None:
        """``init`` unless the broker already handed out an id."""
        if self.producer_id < 0:
            with self.lock:
                if self.producer_id >= 0:
                    return
                self._init_locked()

    def init(self) -> None:
        """``InitProducerId``: a new id (idempotent) or the transactional id's with its epoch
        bumped, which fences every older instance. Sequences start again at 0."""
        with self.lock:
            self._init_locked()

    def _init_locked(self) -> None:
        config = self._config
        request = transactions_pb2.InitProducerIdRequest(
            transactional_id=self.transactional_id,
            transaction_timeout_ms=config.transaction_timeout_ms if self.transactional_id else 0,
        )
        response = call_with_retries(
            lambda: self._stub.InitProducerId(request, timeout=config.request_timeout_ms / 1000.0),
            server=self._server,
            retries=config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
        )
        self.producer_id = response.producer_id
        self.epoch = response.producer_epoch
        self.next_sequences = {}
        self.reset_needed = False
        self.transaction_partitions = set()

    def stamp(self, batch: ProducerBatch, transactional: bool) -> Stamp:
        """The stamp of the next batch of ``batch``'s partition (sender thread, in send order)."""
        key = (batch.topic, batch.partition)
        with self.lock:
            sequence = self.next_sequences.get(key, 0)
            self.next_sequences[key] = (sequence + batch.record_count) & SEQUENCE_MASK
            if transactional:
                self.transaction_partitions.add(key)
            return (self.producer_id, self.epoch, sequence, transactional)

    def predicted_stamp(self, sequence: int, transactional: bool) -> Stamp:
        """The stamp a batch encoded ahead (``send_batch``) will most likely need."""
        return (self.producer_id, self.epoch, sequence, transactional)


# transaction states
UNINITIALIZED = "uninitialized"
READY = "ready"
IN_TRANSACTION = "in_transaction"
FATAL = "fatal"


class Transaction:
    """The client side of one transactional id (see the module docstring)."""

    def __init__(self, stub: Any, server: str, config: ProducerConfig,
                 identity: ProducerIdentity, metadata: Metadata | None = None) -> None:
        self.lock = threading.Lock()
        self.state = UNINITIALIZED
        #: The first failure of a batch of the open transaction: it can only be aborted.
        self.error: LogstoreError | None = None
        #: Partitions added to the open transaction at its coordinator (a cluster).
        self.added: set[TopicPartitionKey] = set()
        #: Groups whose offsets partition was added to the open transaction (a cluster).
        self.added_groups: set[str] = set()
        self._metadata = metadata
        self._stub = stub
        self._server = server
        self._timeout = config.request_timeout_ms / 1000.0
        self._config = config
        self._identity = identity

    @property
    def transactional_id(self) -> str:
        return self._identity.transactional_id

    @property
    def open(self) -> bool:
        return self.state == IN_TRANSACTION

    def require(self, *states: str, action: str) -> None:
        if self.state not in states:
            hint = {
                UNINITIALIZED: "call init_transactions() first",
                READY: "call begin_transaction() first",
                IN_TRANSACTION: "a transaction is open: commit or abort it first",
                FATAL: "the producer was fenced: create a new one or call init_transactions()",
            }[self.state]
            raise InvalidTransactionStateError(
                f"cannot {action}: the producer is {self.state.replace('_', ' ')}; {hint}",
                transactional_id=self.transactional_id, state=self.state,
            )

    # -- the user's calls ----------------------------------------------------------------------

    def init(self) -> None:
        self._identity.init()
        with self.lock:
            self.state = READY
            self.error = None

    def begin(self) -> None:
        self.require(READY, action="begin a transaction")
        with self._identity.lock:
            self._identity.transaction_partitions = set()
        with self.lock:
            self.state = IN_TRANSACTION
            self.error = None
            self.added = set()
            self.added_groups = set()

    @property
    def clustered(self) -> bool:
        return self._metadata is not None and self._metadata.clustered

    def add_partitions(self, partitions: set[TopicPartitionKey]) -> None:
        """``AddPartitionsToTxn`` for those of ``partitions`` new to the open transaction (a
        cluster; the sender thread, before it sends their first batches)."""
        with self.lock:
            new = partitions - self.added
        if not new:
            return
        identity = self._identity
        request = transactions_pb2.AddPartitionsToTxnRequest(
            transactional_id=identity.transactional_id, producer_id=identity.producer_id,
            producer_epoch=identity.epoch,
            partitions=[common_pb2.TopicPartition(topic=t, partition=p) for t, p in sorted(new)],
        )
        self._call("AddPartitionsToTxn", request)
        with self.lock:
            self.added |= new

    def send_offsets(self, offsets: Mapping[TopicPartition, int],
                     group: GroupMetadata | str) -> None:
        self.require(IN_TRANSACTION, action="send offsets to a transaction")
        metadata = group if isinstance(group, GroupMetadata) else GroupMetadata(group, "", 0)
        identity = self._identity
        stub = self._stub
        if self.clustered:
            assert self._metadata is not None
            # Kafka's AddOffsetsToTxn: the group's offsets partition joins the transaction, then
            # its coordinator stages the offsets until the transaction's marker
            if metadata.group_id not in self.added_groups:
                self._call("AddPartitionsToTxn", transactions_pb2.AddPartitionsToTxnRequest(
                    transactional_id=identity.transactional_id, producer_id=identity.producer_id,
                    producer_epoch=identity.epoch, group_ids=[metadata.group_id],
                ))
                self.added_groups.add(metadata.group_id)
            stub = group_coordinator(self._metadata, metadata.group_id)
        request = transactions_pb2.TxnOffsetCommitRequest(
            transactional_id=identity.transactional_id,
            producer_id=identity.producer_id,
            producer_epoch=identity.epoch,
            group_id=metadata.group_id,
            member_id=metadata.member_id,
            member_epoch=metadata.member_epoch,
            offsets=[
                groups_pb2.OffsetCommit(topic=tp[0], partition=tp[1], offset=offset)
                for tp, offset in offsets.items()
            ],
        )
        self._call("TxnOffsetCommit", request, stub)

    def end(self, commit: bool) -> None:
        """``EndTxn``; the transaction is over whatever the answer (fenced: for good)."""
        identity = self._identity
        request = transactions_pb2.EndTxnRequest(
            transactional_id=identity.transactional_id,
            producer_id=identity.producer_id,
            producer_epoch=identity.epoch,
            commit=commit,
        )
        try:
            self._call("EndTxn", request)
        except LogstoreError as exc:
            with self.lock:
                self.state = FATAL if exc.reason == "PRODUCER_FENCED" else READY
            raise
        with self.lock:
            self.state = READY

    def ended(self, error: LogstoreError | None) -> None:
        """A pipelined end (``txn_end``) was answered: committed (``error`` None), or fenced
        (for good), or aborted by the broker (over, unless a record of it had failed: then, as
        when ``commit_transaction`` finds such a record before ending, it stays open until
        ``abort_transaction``). Any other error leaves it open: commit again, or abort."""
        with self.lock:
            if error is None:
                self.state = READY
            elif error.reason == "PRODUCER_FENCED":
                self.state = FATAL
            elif error.reason == "TRANSACTION_ABORTED" and self.error is None:
                self.state = READY

    def fail(self, error: LogstoreError) -> None:
        """A batch of the open transaction failed (sender or reader thread)."""
        with self.lock:
            if self.error is None:
                self.error = error
            if error.reason == "PRODUCER_FENCED":
                self.state = FATAL

    def _call(self, method: str, request: Any, stub: Any = None) -> Any:
        """One transactional call, retried with backoff while the broker is unreachable (or the
        last transaction is still completing: CONCURRENT_TRANSACTIONS). Safe: adding partitions
        and offsets is idempotent, and ending a transaction that already ended is a no-op on the
        broker."""
        config = self._config
        target = stub if stub is not None else self._stub
        return call_with_retries(
            lambda: getattr(target, method)(request, timeout=self._timeout),
            server=self._server,
            retries=config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
        )
