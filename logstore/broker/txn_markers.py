"""A partition leader's side of transaction markers in a cluster (``WriteTxnMarkers``).

The transaction coordinator of a transactional id is the leader of ``__transaction_state``; the
partitions its transactions wrote to are led by any broker. For each transaction it ends, it
sends each leader one call with that leader's partitions; the leader, for each one:

- a data partition: appends a COMMIT or ABORT control batch stamped with the producer id and the
  epoch the coordinator gives, at this broker's leader epoch (followers copy it like any batch and
  apply it to their producer state, so a new leader knows the transaction is over). The marker's
  epoch fences older epochs of the producer here. A marker of an older epoch than the partition
  knows, or one already written (no open transaction, same epoch: a retried call), is skipped;
- a ``__consumer_offsets`` partition: commits (or drops) the offsets staged there for the
  producer by its groups' coordinator (``groups/txn_offsets``).

The call is answered once every marker is covered by its partition's high watermark (acks=all).
Per-partition errors (NOT_LEADER, ...) are returned, not raised: the coordinator looks the leader
up again and retries those.

Threading: event loop thread only; ``write_here`` has no await inside.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from logstore.broker.internal import OFFSETS_TOPIC, trusted_header
from logstore.broker.producer_state import ABORT_MARKER, COMMIT_MARKER
from logstore.errors import LogstoreError
from logstore.records import encode_batch

if TYPE_CHECKING:
    from logstore.broker.broker import Broker

TopicPartition = tuple[str, int]


def write_here(broker: Broker, producer_id: int, epoch: int, partitions: list[TopicPartition],
               commit: bool) -> tuple[list[LogstoreError | None], list[tuple[str, int, int]]]:
    """Write the markers of the partitions this broker leads: (an error or None per partition,
    (topic, partition, end offset) to wait for)."""
    replication = broker.replication
    assert replication is not None
    errors: list[LogstoreError | None] = []
    written: list[tuple[str, int, int]] = []
    for topic, partition in partitions:
        try:
            leader_epoch = replication.leader_epoch(topic, partition)
            replication.check_min_isr(topic, partition)
            if topic == OFFSETS_TOPIC:
                broker.take_over_offsets(partition)  # loaded at this leader epoch
                broker.offsets.complete_staged(partition, producer_id, epoch, commit)
                end = broker.data_dir.log(topic, partition).log_end_offset
            else:
                end = _write_marker(broker, topic, partition, producer_id, epoch, commit, leader_epoch)
        except LogstoreError as exc:
            errors.append(exc)
            continue
        errors.append(None)
        written.append((topic, partition, end))
    return errors, written


def _write_marker(broker: Broker, topic: str, partition: int, producer_id: int, epoch: int,
                  commit: bool, leader_epoch: int) -> int:
    """Append one marker (unless stale or already written); the partition's log end after it."""
    partition_log = broker.data_dir.log(topic, partition)
    state = broker.producer_state(partition_log)
    entry = state.producers.get(producer_id)
    if entry is not None and (
        entry.epoch > epoch or (entry.epoch == epoch and producer_id not in state.open_transactions)
    ):
        return partition_log.log_end_offset  # an older transaction's, or written already
    batch = encode_batch(
        [b""], keys=[COMMIT_MARKER if commit else ABORT_MARKER], timestamps=broker.data_dir.clock.now_ms(),
        producer_id=producer_id, producer_epoch=epoch, transactional=True, control=True,
    )
    header = trusted_header(batch)
    result = partition_log.append(batch, headers=[header], leader_epoch=leader_epoch, sync=False)
    state.update(header, result.base_offset, result.last_offset)
    state.complete(producer_id, result.base_offset, commit)
    state.prune()
    return result.log_end_offset


async def wait_written(broker: Broker, written: list[tuple[str, int, int]],
                       errors: list[LogstoreError | None], partitions: list[TopicPartition]) -> None:
    """acks=all for the markers: wait for each partition's high watermark; a partition whose
    wait fails gets that error."""
    replication = broker.replication
    assert replication is not None
    results = await asyncio.gather(
        *(replication.wait_replicated(t, p, end) for t, p, end in written), return_exceptions=True
    )
    index = {tp: i for i, tp in enumerate(partitions)}
    for (topic, partition, _), result in zip(written, results, strict=True):
        if isinstance(result, LogstoreError):
            errors[index[(topic, partition)]] = result
        elif isinstance(result, BaseException):
            raise result
