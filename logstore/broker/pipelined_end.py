"""A transaction's end pipelined behind its batches (``ProduceRequest.end_transaction``).

The producer sends the end on its produce stream right behind the transaction's last batch,
without waiting for the batches' answers (one round trip per transaction instead of two): so
before committing, the coordinator checks that the broker appended every batch the producer
counted. The end carries, per partition the producer sent to in the transaction, the sequence
number its next batch there would have; the partition's producer state says which one it
expects (``PartitionProducerState.next_sequence``: None when the producer's last batch there was
aborted). They must agree, partition for partition, with the transaction's partitions, or the
transaction is aborted and TRANSACTION_ABORTED answered. Sent again after a lost answer, a
commit that happened is answered as done; one whose batches were aborted meanwhile (an orphan
aborted after a restart) is not.

Threading: event loop thread only, like the coordinator whose state it reads and ends.
"""

from __future__ import annotations

from collections.abc import Callable

from logstore.broker.transactions import (
    COMPLETE_ABORT,
    COMPLETE_COMMIT,
    EMPTY,
    ONGOING,
    TopicPartition,
    TransactionCoordinator,
)
from logstore.errors import TransactionAbortedError


def end_after_batches(
    coordinator: TransactionCoordinator, transactional_id: str, producer_id: int,
    producer_epoch: int, commit: bool, sequences: dict[TopicPartition, int],
    appended: Callable[[TopicPartition], int | None],
) -> None:
    """``coordinator.end`` pipelined behind the transaction's batches: the producer did not
    wait for their answers, so a commit first checks that every batch it sent was appended.
    ``sequences`` is, per partition the producer sent to in the
    transaction, the sequence its next batch there would carry; ``appended(tp)`` the one the
    partition's producer state expects. They must agree, partition for partition, with the
    transaction's partitions; otherwise the transaction is aborted (nothing committed) and
    TransactionAbortedError names the first partition that differs. A commit that already
    happened (the producer sent it again after a lost answer) is answered as done."""
    transaction = coordinator._current(transactional_id, producer_id, producer_epoch)
    if not commit or transaction.abort_reason or transaction.state not in (
        ONGOING, EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT
    ):
        coordinator.end(transactional_id, producer_id, producer_epoch, commit)  # or raises
        return
    problem = _sequence_problem(
        transaction.partitions if transaction.state == ONGOING else None, sequences, appended
    )
    if transaction.state != ONGOING:
        if not sequences or (not problem and transaction.state == COMPLETE_COMMIT):
            return  # nothing was sent in it, or this commit happened already
        problem = problem or "it was aborted already"
    if problem:
        if transaction.state == ONGOING:
            coordinator._abort(transaction, bump_epoch=False)
        raise TransactionAbortedError(
            f"transaction {transactional_id!r} was not committed (and is aborted): {problem}",
            transactional_id=transactional_id,
        )
    coordinator.end(transactional_id, producer_id, producer_epoch, commit)


def _sequence_problem(
    partitions: set[TopicPartition] | None, sequences: dict[TopicPartition, int],
    appended: Callable[[TopicPartition], int | None],
) -> str:
    """What differs between the batches a producer sent (``sequences``: next sequence per
    partition) and those appended (``appended``; ``partitions``: the open transaction's, None
    when none is open), or ""."""
    for tp in sorted((partitions or set()) | set(sequences)):
        want, have = sequences.get(tp), appended(tp)
        if want is None:
            return f"{tp[0]}/{tp[1]} has records in the transaction the producer did not count"
        if have is None:
            return f"the producer's last records in {tp[0]}/{tp[1]} were aborted (or are gone)"
        if have != want:
            return (f"{tp[0]}/{tp[1]} expects sequence {have} next from the producer, which sent "
                    f"up to sequence {want - 1}")
        if partitions is not None and tp not in partitions:
            return f"none of the records sent to {tp[0]}/{tp[1]} is in the transaction"
    return ""
