"""The transaction coordinator: producer ids, epochs, and atomic commit or abort.

A transactional producer calls ``init_producer_id(transactional_id)``: it gets the id's producer
id with a bumped epoch, which fences every older instance (their requests fail with
PRODUCER_FENCED), and any transaction the old instance left open is aborted first. Then, per
transaction: produce transactional batches — the first batch of the producer's id and epoch to a
partition adds that partition to its transaction (``add_produced``, as Kafka does since KIP-890;
``add_partitions`` does it up front for clients that prefer the explicit call) and begins the
transaction if none is open — ``add_offsets`` for a consumer group (consume-transform-produce),
and ``end`` to commit or abort:

1. the state becomes PREPARE_COMMIT / PREPARE_ABORT (persisted),
2. a COMMIT / ABORT marker (a control batch) is appended to every partition of the transaction,
3. on commit, the group offsets are committed,
4. the state becomes COMPLETE_COMMIT / COMPLETE_ABORT (persisted).

fsyncs follow the flush policy of the partitions written, nothing more: one fsync of the PREPARE
record (and one round of marker fsyncs, group-committed) when a partition is ``flush=always`` or
group offsets are committed; none otherwise. The other state records are not waited for: a
lost COMPLETE record makes recovery write the markers again (a no-op the second time).

A single node writes a transaction's state once when it can (``_complete``): a partition that
joins a transaction with its first batch (``add_produced``) writes no ONGOING record — if the
broker stops, the partition's open transaction is found when its producer state is rebuilt and
aborted there (``Broker._abort_orphans``, via ``is_open_in``) — and a transaction over one
partition, without group offsets and with no ONGOING record in the log, skips PREPARE too: its
one marker is the commit point (stopped before it, the orphan is aborted; after it, the log
still holds the previous state, which asks recovery for nothing), so it writes COMPLETE alone.

The state of every transactional id lives in the compacted internal topic
``__transaction_state``; after a restart a PREPARE_* transaction is finished and an ONGOING one
is aborted, so nothing is ever left half visible. A transaction open longer than its timeout is
aborted (and the epoch bumped, fencing the producer that let it time out). Producer ids come from
blocks recorded in the same topic, so they are never handed out twice.

In a cluster (``marker_sender`` set) the markers go to the partitions' leaders in the background
(``logstore.cluster.txn_markers``): a transaction stays PREPARE_* until ``finish``, a new
transaction of the id meanwhile gets the retriable CONCURRENT_TRANSACTIONS, a transaction left
open is aborted with its epoch bumped (the markers fence the old instance), and a new coordinator
takes an ONGOING transaction over as it is. A group's offsets are staged at its own coordinator
(``groups/txn_offsets``), not here.

Loading and snapshots of the state: ``txn_state_log``.

Threading: event loop thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from logstore.broker.groups.offsets import OffsetStore
from logstore.broker.internal import (
    OFFSETS_TOPIC,
    TRANSACTIONS_TOPIC,
    append_entries,
    encode_key,
    encode_value,
    ensure_topic,
)
from logstore.broker.producer_ids import ProducerIdPool
from logstore.broker.snapshot_file import PendingSnapshot
from logstore.broker.txn_state import (
    COMPLETE_ABORT,
    COMPLETE_COMMIT,
    EMPTY,
    ONGOING,
    PREPARE_ABORT,
    PREPARE_COMMIT,
    TopicPartition,
    Transaction,
)
from logstore.broker.txn_state_log import read_state, snapshot_of
from logstore.errors import (
    ConcurrentTransactionsError,
    InvalidRequestError,
    InvalidTransactionStateError,
    LogstoreError,
    ProducerFencedError,
    TransactionAbortedError,
    UnknownTransactionalIdError,
)
from logstore.storage import DataDir
from logstore.storage.clock import Clock
from logstore.storage.config import FLUSH_ALWAYS

log = logging.getLogger(__name__)

PRODUCER_ID_BLOCK = 1000
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000
MAX_TRANSACTION_TIMEOUT_MS = 15 * 60_000
MAX_EPOCH = (1 << 15) - 1

#: (producer id, epoch, partitions, commit) -> writes the markers.
MarkerWriter = Callable[[int, int, list[TopicPartition], bool], None]
#: A cluster's marker sender: takes a PREPARE_* transaction (commit or not), sends its markers to
#: the partitions' leaders in the background and then calls ``TransactionCoordinator.finish``.
MarkerSender = Callable[[Transaction, bool], None]


class TransactionCoordinator:
    def __init__(self, data_dir: DataDir, clock: Clock, offsets: OffsetStore, write_markers: MarkerWriter,
                 *, clustered: bool = False) -> None:
        """``clustered``: the state is loaded only once this broker leads ``__transaction_state``
        (``current``), never at start-up (a copy it follows is written by its leader alone)."""
        self.data_dir = data_dir
        self.clock = clock
        self.offsets = offsets
        self.write_markers = write_markers
        (self._log,) = ensure_topic(data_dir, TRANSACTIONS_TOPIC, 1)
        self.transactions: dict[str, Transaction] = {}
        self._by_producer: dict[int, Transaction] = {}
        self._next_producer_id = 0
        self._block_end = 0
        #: Set by the cluster layer: producer ids come from this pool (blocks reserved in etcd,
        #: unique across the brokers) instead of the blocks recorded in this topic.
        self.id_pool: ProducerIdPool | None = None
        #: exactly what the log holds: each id's last value written, and the last block's end
        self._persisted: dict[str, dict[str, Any]] = {}
        self._persisted_block_end = 0
        self._snapshot_offset = -1  # the log offset the snapshot on disk covers
        #: In a cluster: this broker's leader epoch of the topic's partition (raises
        #: NotLeaderError); None on a single node.
        self.leadership: Callable[[], int] | None = None
        #: In a cluster (set by the cluster layer): markers go to other brokers asynchronously;
        #: a transaction stays PREPARE_* until ``finish``. None: written here, synchronously.
        self.marker_sender: MarkerSender | None = None
        #: the leader epoch the state was loaded at (0: at start-up on a single node; -1: not
        #: loaded, see ``release_unled``)
        self._loaded_epoch = -1 if clustered else 0
        if not clustered:
            self._load()

    # -- leadership (a cluster) -----------------------------------------------------------------

    def leads_loaded(self) -> bool:
        """Whether this broker leads the topic at the epoch its state was loaded at (always on
        a single node)."""
        if self.leadership is None:
            return True
        try:
            return self.leadership() == self._loaded_epoch
        except LogstoreError:
            return False

    def current(self) -> bool:
        """Make the state the log's as of this broker's leadership (reloading it at a new leader
        epoch: snapshot, then the records after it); True when it was reloaded. Raises
        ``NotLeaderError`` when this broker does not lead the topic."""
        if self.leadership is None:
            return False
        epoch = self.leadership()
        if epoch == self._loaded_epoch:
            return False
        self._forget()
        self._loaded_epoch = epoch  # first: what loading writes (finishing transactions) carries it
        self._load()
        return True

    def release_unled(self) -> bool:
        """Drop the state if this broker no longer leads the topic at the epoch it was loaded
        at (a cluster; housekeeping); True when it did. It is loaded again when led again."""
        if self.leadership is None or self._loaded_epoch < 0 or self.leads_loaded():
            return False
        self._forget()
        self._loaded_epoch = -1  # never a leader epoch: the next use reloads
        return True

    def _forget(self) -> None:
        self.transactions, self._by_producer, self._persisted = {}, {}, {}
        self._block_end = self._persisted_block_end = 0
        self._snapshot_offset = -1

    # -- persistence ----------------------------------------------------------------------------

    def _load(self) -> None:
        state = read_state(self._log)
        self._block_end = self._persisted_block_end = state.block_end
        self._persisted, self.transactions = state.persisted, state.transactions
        self._snapshot_offset = state.snapshot_offset
        self._next_producer_id = self._block_end  # never reuse ids of an unfinished block
        for transaction in self.transactions.values():
            self._by_producer[transaction.producer_id] = transaction
        for transaction in list(self.transactions.values()):
            if transaction.state in (PREPARE_COMMIT, PREPARE_ABORT):
                log.info("finishing transaction %s left in %s", transaction.transactional_id, transaction.state)
                self._complete(transaction, transaction.state == PREPARE_COMMIT)
            elif transaction.state == ONGOING and self.marker_sender is None:
                log.info("aborting transaction %s left open by a restart", transaction.transactional_id)
                self._abort(transaction, bump_epoch=True)
            # (a cluster: a new coordinator takes an open transaction over as it is; its
            # producer goes on, and it times out as it would have)

    def take_snapshots(self, *, force: bool = False) -> list[PendingSnapshot]:
        """A snapshot of what the log holds, if it grew since the last one (or ``force``)."""
        end = self._log.log_end_offset
        if (not force and end == self._snapshot_offset) or not self.leads_loaded():
            return []
        self._snapshot_offset = end
        return [snapshot_of(self._log, self._persisted_block_end, self._persisted, end)]

    def _persist(self, transaction: Transaction, *, sync: bool = True) -> None:
        value = transaction.to_value()
        append_entries(
            self._log,
            [(encode_key("txn", transaction.transactional_id), encode_value(value))],
            sync=sync, leader_epoch=max(self._loaded_epoch, 0),
        )
        self._persisted[transaction.transactional_id] = value

    def allocate_producer_id(self) -> int:
        if self.id_pool is not None:
            return self.id_pool.take()
        if self._next_producer_id >= self._block_end:
            end = self._block_end + PRODUCER_ID_BLOCK
            append_entries(self._log, [(encode_key("producer_id_block"), encode_value({"end": end}))])
            self._next_producer_id = self._block_end
            self._block_end = self._persisted_block_end = end
        producer_id = self._next_producer_id
        self._next_producer_id += 1
        return producer_id

    # -- the API --------------------------------------------------------------------------------

    def init_producer_id(self, transactional_id: str, timeout_ms: int = 0) -> tuple[int, int]:
        """A new producer id (idempotent producer), or the transactional id's with a new epoch."""
        if not transactional_id:
            return self.allocate_producer_id(), 0
        timeout_ms = timeout_ms or DEFAULT_TRANSACTION_TIMEOUT_MS
        if not 0 < timeout_ms <= MAX_TRANSACTION_TIMEOUT_MS:
            raise InvalidRequestError(
                f"transaction_timeout_ms must be in (0, {MAX_TRANSACTION_TIMEOUT_MS}]",
                field="transaction_timeout_ms",
            )
        transaction = self.transactions.get(transactional_id)
        if transaction is None:
            transaction = Transaction(transactional_id, self.allocate_producer_id(), 0, timeout_ms)
        else:
            if self.marker_sender is not None:
                self._finish_first(transaction)
            elif transaction.state == ONGOING:
                self._abort(transaction, bump_epoch=False)
            elif transaction.state in (PREPARE_COMMIT, PREPARE_ABORT):
                self._complete(transaction, transaction.state == PREPARE_COMMIT)
            if transaction.producer_epoch >= MAX_EPOCH:
                self._by_producer.pop(transaction.producer_id, None)
                transaction.producer_id = self.allocate_producer_id()
                transaction.producer_epoch = 0
            else:
                transaction.producer_epoch += 1
            transaction.timeout_ms = timeout_ms
            transaction.state = EMPTY
            transaction.abort_reason = ""  # told to the fenced instance, never to the new one
        self.transactions[transactional_id] = transaction
        self._by_producer[transaction.producer_id] = transaction
        self._persist(transaction)
        return transaction.producer_id, transaction.producer_epoch

    def _finish_first(self, transaction: Transaction) -> None:
        """A cluster: a new instance waits (retriable ``ConcurrentTransactionsError``) while the
        previous transaction completes; one left open is aborted first, its markers carrying a
        bumped epoch, which fences the old instance on every partition it wrote to."""
        if transaction.state == ONGOING:
            self._abort(transaction, bump_epoch=True)
        if transaction.state in (PREPARE_COMMIT, PREPARE_ABORT):
            raise ConcurrentTransactionsError(transaction.transactional_id, transaction.state)

    def _current(self, transactional_id: str, producer_id: int, producer_epoch: int) -> Transaction:
        transaction = self.transactions.get(transactional_id)
        if transaction is None:
            raise UnknownTransactionalIdError(transactional_id)
        if transaction.producer_id != producer_id or transaction.producer_epoch != producer_epoch:
            raise ProducerFencedError(
                producer_id, producer_epoch, transaction.producer_epoch, transactional_id=transactional_id
            )
        return transaction

    def _raise_if_aborted(self, transaction: Transaction) -> None:
        """Tell the producer once that the broker aborted its transaction (then forget it)."""
        if transaction.abort_reason:
            error = _aborted(transaction)
            transaction.abort_reason = ""
            self._persist(transaction)
            raise error

    def _begin(self, transaction: Transaction) -> None:
        self._raise_if_aborted(transaction)
        if self.marker_sender is not None and transaction.state in (PREPARE_COMMIT, PREPARE_ABORT):
            # (a cluster: the last transaction's markers are still on their way)
            raise ConcurrentTransactionsError(transaction.transactional_id, transaction.state)
        if transaction.state in (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT):
            transaction.state = ONGOING
            transaction.started_ms = self.clock.now_ms()
            transaction.partitions = set()
            transaction.offsets = {}
        elif transaction.state != ONGOING:
            raise InvalidTransactionStateError(
                f"transaction {transaction.transactional_id!r} is {transaction.state}",
                transactional_id=transaction.transactional_id,
                state=transaction.state,
            )

    def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                       partitions: list[TopicPartition], groups: tuple[str, ...] | list[str] = ()) -> None:
        """Add partitions (and the ``__consumer_offsets`` partitions of ``groups``, whose offsets
        the transaction will commit) to the transaction, beginning it if none is open."""
        transaction = self._current(transactional_id, producer_id, producer_epoch)
        for topic, partition in partitions:
            self.data_dir.log(topic, partition)  # raises UnknownTopic / UnknownPartition
        if self.marker_sender is not None:  # (a single node commits offsets itself: ignored)
            partitions = partitions + [(OFFSETS_TOPIC, self.offsets.partition_of(g)) for g in groups]
        self._begin(transaction)
        new = set(partitions) - transaction.partitions
        if new:
            transaction.partitions |= new
            # No fsync: if this is lost, the partition's open transaction is found when its
            # producer state is rebuilt and aborted there (``is_open_in``).
            self._persist(transaction, sync=False)

    def add_offsets(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str,
        offsets: list[tuple[str, int, int, str]],
    ) -> None:
        transaction = self._current(transactional_id, producer_id, producer_epoch)
        self._begin(transaction)
        entries = transaction.offsets.setdefault(group_id, {})
        for topic, partition, offset, metadata in offsets:
            entries[(topic, partition)] = (offset, metadata)
        self._persist(transaction)

    def end(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> None:
        transaction = self._current(transactional_id, producer_id, producer_epoch)
        if transaction.abort_reason:
            if commit:
                self._raise_if_aborted(transaction)
            transaction.abort_reason = ""
            self._persist(transaction)
            return
        if transaction.state in (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT):
            return  # nothing was sent in this transaction
        if self.marker_sender is not None and transaction.state == (PREPARE_COMMIT if commit else PREPARE_ABORT):
            # a retried EndTxn (a cluster, markers on their way): answered once they are written
            raise ConcurrentTransactionsError(transactional_id, transaction.state)
        if transaction.state != ONGOING:
            raise InvalidTransactionStateError(
                f"transaction {transactional_id!r} is {transaction.state}",
                transactional_id=transactional_id, state=transaction.state,
            )
        gone = sorted(tp for tp in transaction.partitions if not self.data_dir.has_topic(tp[0]))
        if commit and gone:
            self._abort(transaction, bump_epoch=False)
            raise TransactionAbortedError(
                f"transaction {transactional_id!r} was aborted: topic {gone[0][0]!r} was deleted",
                transactional_id=transactional_id, topic=gone[0][0],
            )
        self._complete(transaction, commit, prepare=True)

    def _complete(self, transaction: Transaction, commit: bool, prepare: bool = False) -> None:
        partitions = sorted(tp for tp in transaction.partitions if self.data_dir.has_topic(tp[0]))
        if prepare and not self._marker_commits(transaction, partitions):
            transaction.state = PREPARE_COMMIT if commit else PREPARE_ABORT
            self._persist(transaction, sync=self._durable(transaction, partitions))
        if self.marker_sender is not None:
            self.marker_sender(transaction, commit)  # then ``finish``
            return
        self.write_markers(transaction.producer_id, transaction.producer_epoch, partitions, commit)
        if commit:
            for group, entries in transaction.offsets.items():
                self.offsets.commit(group, [(t, p, o, m) for (t, p), (o, m) in entries.items()])
        transaction.state = COMPLETE_COMMIT if commit else COMPLETE_ABORT
        transaction.partitions = set()
        transaction.offsets = {}
        # No fsync needed: if this record is lost, recovery finds PREPARE_* and writes the
        # markers (and offsets) again, which changes nothing the second time.
        self._persist(transaction, sync=False)

    def _marker_commits(self, transaction: Transaction, partitions: list[TopicPartition]) -> bool:
        """Whether the PREPARE record can be left out (a single node, see the module
        docstring): one partition, no group offsets, no ONGOING record in the log (which
        recovery would abort although the marker was written)."""
        return (
            self.marker_sender is None and len(partitions) <= 1 and not transaction.offsets
            and self._persisted.get(transaction.transactional_id, {}).get("state") != ONGOING
        )

    def finish(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> bool:
        """A cluster: every marker of the PREPARE_* transaction was written (``marker_sender``):
        write COMPLETE_*. False (nothing done) if this broker stopped coordinating it or the
        transaction is no longer the one the markers were for."""
        transaction = self.transactions.get(transactional_id)
        state = PREPARE_COMMIT if commit else PREPARE_ABORT
        if (
            transaction is None or not self.leads_loaded() or transaction.state != state
            or transaction.producer_id != producer_id or transaction.producer_epoch != producer_epoch
        ):
            return False
        transaction.state = COMPLETE_COMMIT if commit else COMPLETE_ABORT
        transaction.partitions = set()
        transaction.offsets = {}
        self._persist(transaction, sync=False)
        return True

    def _durable(self, transaction: Transaction, partitions: list[TopicPartition]) -> bool:
        """Whether the PREPARE record must be on disk before the markers: when the transaction
        writes to a ``flush=always`` partition or commits group offsets (both durable when
        acknowledged). A transaction only over ``flush=interval``/``never`` partitions is as
        durable as its records, which a power loss may cut anyway: no fsync of its own (a
        crash of the process loses nothing, the page cache keeps every record)."""
        if transaction.offsets:
            return True
        return any(self.data_dir.log(t, p).config.flush == FLUSH_ALWAYS for t, p in partitions)

    def _abort(self, transaction: Transaction, *, bump_epoch: bool) -> None:
        if bump_epoch and transaction.producer_epoch < MAX_EPOCH:
            transaction.producer_epoch += 1  # fence the producer that left it open
        self._complete(transaction, False, prepare=True)

    # -- checks for produce -------------------------------------------------------------------------

    def check_produce(self, producer_id: int, producer_epoch: int, topic: str, partition: int) -> None:
        """A transactional batch is accepted only from the current epoch of a transactional id,
        while its transaction is open or none is (the batch begins one: ``add_produced``)."""
        transaction = self._by_producer.get(producer_id)
        if transaction is None:
            raise InvalidTransactionStateError(
                f"producer {producer_id} has no transaction; call InitProducerId with a transactional id",
                producer_id=producer_id,
            )
        if producer_epoch != transaction.producer_epoch:
            raise ProducerFencedError(
                producer_id, producer_epoch, transaction.producer_epoch,
                transactional_id=transaction.transactional_id,
            )
        if transaction.state not in (ONGOING, EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT):
            raise InvalidTransactionStateError(
                f"transaction {transaction.transactional_id!r} is {transaction.state}: "
                f"it takes no more records",
                transactional_id=transaction.transactional_id, topic=topic, partition=partition,
                state=transaction.state,
            )
        if transaction.abort_reason:  # kept for the EndTxn that follows
            raise _aborted(transaction)

    def add_produced(self, producer_id: int, topic: str, partition: int) -> None:
        """A transactional batch (``check_produce`` passed) is being appended to ``partition``:
        begin the transaction if none is open and add the partition to it. Nothing is written:
        the end's record says it all, and if the broker stops first, the partition's open
        transaction is an orphan its producer state finds and aborts (``is_open_in``)."""
        transaction = self._by_producer[producer_id]
        if transaction.state == ONGOING and (topic, partition) in transaction.partitions:
            return
        self._begin(transaction)
        transaction.partitions.add((topic, partition))

    def is_open_in(self, producer_id: int, topic: str, partition: int) -> bool:
        """Whether an ongoing transaction of ``producer_id`` covers this partition."""
        transaction = self._by_producer.get(producer_id)
        return (
            transaction is not None
            and transaction.state in (ONGOING, PREPARE_COMMIT, PREPARE_ABORT)
            and (topic, partition) in transaction.partitions
        )

    def epoch_of(self, producer_id: int) -> int:
        transaction = self._by_producer.get(producer_id)
        return 0 if transaction is None else transaction.producer_epoch

    def current_epoch(self, producer_id: int) -> int | None:
        transaction = self._by_producer.get(producer_id)
        return None if transaction is None else transaction.producer_epoch

    def pending_offsets(self, group_id: str) -> set[TopicPartition]:
        """Partitions of ``group_id`` with an offset commit waiting in an open transaction."""
        pending: set[TopicPartition] = set()
        for transaction in self.transactions.values():
            if transaction.state in (ONGOING, PREPARE_COMMIT):
                pending |= set(transaction.offsets.get(group_id, {}))
        return pending

    # -- housekeeping ---------------------------------------------------------------------------

    def expire(self) -> int:
        """Abort transactions open longer than their timeout; returns how many."""
        if not self.leads_loaded():
            return 0  # another broker coordinates (a cluster)
        now = self.clock.now_ms()
        aborted = 0
        for transaction in list(self.transactions.values()):
            if transaction.state == ONGOING and now - transaction.started_ms > transaction.timeout_ms:
                log.warning(
                    "aborting transaction %s: open for more than %d ms",
                    transaction.transactional_id, transaction.timeout_ms,
                )
                self._abort(transaction, bump_epoch=True)
                aborted += 1
        return aborted

    def topic_deleted(self, topic: str) -> None:
        """Abort every ongoing transaction that wrote to ``topic``."""
        if not self.leads_loaded():
            return
        for transaction in list(self.transactions.values()):
            if transaction.state == ONGOING and any(t == topic for t, _ in transaction.partitions):
                log.warning("aborting transaction %s: topic %s was deleted", transaction.transactional_id, topic)
                transaction.abort_reason = f"topic {topic!r} was deleted"
                self._abort(transaction, bump_epoch=False)


def _aborted(transaction: Transaction) -> TransactionAbortedError:
    return TransactionAbortedError(
        f"transaction {transaction.transactional_id!r} was aborted: {transaction.abort_reason}",
        transactional_id=transaction.transactional_id,
    )
