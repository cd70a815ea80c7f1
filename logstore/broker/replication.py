"""The hooks a clustered broker consults about replication, and the follower's side of the log.

On a single node ``Broker.replication`` is None and nothing here runs: every partition is led by
this broker, and the high watermark is the log end. In a cluster the cluster layer
(``logstore.cluster.replicas``) implements ``Replication``:

- ``leader_epoch`` — this broker leads the partition at that epoch (batches are stamped with it),
  or raises ``NotLeaderError``;
- ``check_min_isr`` — acks=all needs ``min_insync_replicas`` in the ISR, or
  ``NotEnoughReplicasError`` before anything is appended;
- ``high_watermark`` — consumers read below it only;
- ``wait_replicated`` — acks=all is answered once the high watermark covers the batch.

The broker never imports the cluster layer; it calls these methods and exposes the follower's
operations below (append batches as the leader assigned them, truncate to where the logs diverged)
so the cluster layer never touches producer state itself.

Threading: event loop thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from logstore.broker.groups.offsets import SNAPSHOT_FILE as OFFSETS_SNAPSHOT_FILE
from logstore.broker.internal import OFFSETS_TOPIC, TRANSACTIONS_TOPIC
from logstore.broker.txn_state_log import SNAPSHOT_FILE as TRANSACTIONS_SNAPSHOT_FILE
from logstore.records import validate_batches
from logstore.storage import AppendResult
from logstore.storage.files import remove_quietly

if TYPE_CHECKING:
    from logstore.broker.broker import Broker


class Replication(Protocol):
    def leader_epoch(self, topic: str, partition: int) -> int: ...

    def check_min_isr(self, topic: str, partition: int) -> None: ...

    def high_watermark(self, topic: str, partition: int) -> int: ...

    async def wait_replicated(self, topic: str, partition: int, end_offset: int) -> None: ...


def append_replica(broker: Broker, topic: str, partition: int, records: bytes | memoryview) -> AppendResult:
    """Append batches fetched from the leader, offsets and epochs kept, and keep this partition's
    producer state current (so that if this replica becomes leader it recognises retries).

    The leader validated every batch deeply when it was produced; the copy is checked for what
    the way here can break (each header, length and crc: ``validate_batches(deep=False)``) and
    written in one ``append_replica`` of the whole response, not decoded record by record."""
    partition_log = broker.data_dir.log(topic, partition)
    headers = validate_batches(records, deep=False)
    result = partition_log.append_replica(records, headers=headers, sync=False)
    state = broker.cached_producer_state(topic, partition)
    if state is not None and state.log is partition_log:
        view = memoryview(records)
        for header in headers:
            state.apply_batch(header, view[header.position : header.end_position])
    return result


def truncate_replica(broker: Broker, topic: str, partition: int, offset: int) -> None:
    """Cut the follower's log at ``offset`` (where it diverged from the leader); its producer
    state is rebuilt from the log on next use."""
    broker.data_dir.log(topic, partition).truncate_to(offset)
    _forget_derived_state(broker, topic, partition)


def restart_replica_at(broker: Broker, topic: str, partition: int, offset: int) -> None:
    """The follower's whole log is below the leader's log start: start empty at ``offset``."""
    broker.data_dir.log(topic, partition).truncate_fully_and_start_at(offset)
    _forget_derived_state(broker, topic, partition)


def _forget_derived_state(broker: Broker, topic: str, partition: int) -> None:
    """What was derived from the records just cut: the producer state, and a coordinator's
    snapshot of an internal partition (it may cover them; if this broker leads the partition
    later, it replays the log instead)."""
    broker.forget_producer_state(topic, partition)
    if topic == OFFSETS_TOPIC:
        remove_quietly(broker.data_dir.log(topic, partition).directory / OFFSETS_SNAPSHOT_FILE)
    elif topic == TRANSACTIONS_TOPIC:
        remove_quietly(broker.data_dir.log(topic, partition).directory / TRANSACTIONS_SNAPSHOT_FILE)
