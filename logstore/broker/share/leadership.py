"""Share groups in a cluster: where a share-partition's state lives and when this broker serves it.

The state of every share-partition of data partition ``topic``/``p`` (every group's) is kept in
partition ``p`` of the internal topic ``__share_state.<topic>`` (its *state partition*), with the
same key and value layout as ``__share_group_state`` on a single node (``state_log.py``). The
cluster layer creates that topic when a share group first fetches from ``topic``, with the data
topic's replica assignment, replication factor and ``min_insync_replicas``, and its controller
keeps each state partition's leader on its data partition's leader (when that broker is in the
state partition's ISR). The cluster replicates it like any partition.

This broker serves a share-partition only while it leads its state partition (else
``NotLeaderError`` naming the data partition and the state partition's leader), and:

- loads the state partition's share-partitions from its own copy the first time it serves them
  at a new leader epoch (a leader holds every record acknowledged with acks=all): acquired
  records become Available with their delivery counts kept, everything else stays as written;
- writes each change at that leader epoch and answers once the state partition's high watermark
  covers it (acks=all; a write needs ``min_insync_replicas`` in its ISR);
- hands out records of the data partition below this broker's high watermark of it (its copy:
  usually it leads the data partition too; else a follower copy, whose records below the high
  watermark are committed);
- drops the share-partitions of state partitions it no longer leads (``release``).

Group configs are cluster metadata (kept in etcd by the cluster layer, ``configs``). A
dead-letter copy goes to a partition of the dead-letter topic this broker leads (the source
partition's number modulo the partition count when it leads that one, else the first it leads),
at its leader epoch, and the archive is answered once the copy is replicated too; when it leads
none (or the topic does not exist: a cluster does not create it), the records are archived
without a copy (logged).

Threading: event loop thread only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from logstore.broker.replication import Replication
from logstore.broker.share.state_log import STATE_TOPIC_CONFIG
from logstore.errors import InvalidRequestError, LogstoreError, NotLeaderError
from logstore.storage import DataDir, PartitionLog

#: ``__share_state.<topic>`` holds the share-partitions of ``topic`` in a cluster.
STATE_TOPIC_PREFIX = "__share_state."
#: Longest topic name (``storage.validate_topic_name``).
MAX_NAME_LENGTH = 249


def state_topic(topic: str) -> str:
    return STATE_TOPIC_PREFIX + topic


def data_topic(name: str) -> str | None:
    """The data topic of a state topic's name (None for any other name)."""
    return name[len(STATE_TOPIC_PREFIX):] if name.startswith(STATE_TOPIC_PREFIX) else None


def state_topic_config() -> dict[str, str]:
    """The state topics' storage config (compacted, kept forever), as a topic record holds it."""
    return {key: str(value) for key, value in STATE_TOPIC_CONFIG.items()}


class ShareCluster:
    """The cluster's hooks of a clustered broker's share coordinator (set by the cluster layer)."""

    def __init__(self, data_dir: DataDir, replication: Replication,
                 ensure_state_topic: Callable[[str], None],
                 store_config: Callable[[str, dict[str, object] | None], Awaitable[None]]) -> None:
        self.data_dir = data_dir
        self.replication = replication
        #: Create ``__share_state.<topic>`` in the cluster if it is missing (asynchronously).
        self.ensure_state_topic = ensure_state_topic
        #: Write a group's config to the cluster metadata (None deletes it).
        self.store_config = store_config
        #: group -> its config as the cluster metadata holds it.
        self.configs: dict[str, dict[str, object]] = {}
        #: (topic, partition) -> the state partition's leader epoch its share-partitions were
        #: loaded at.
        self.loaded: dict[tuple[str, int], int] = {}

    def epoch(self, topic: str, partition: int) -> int:
        """This broker's leader epoch of ``topic``/``partition``'s state partition; raises
        ``NotLeaderError`` (of the data partition) when it does not lead it."""
        name = state_topic(topic)
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidRequestError(
                f"share groups in a cluster need topic names of at most "
                f"{MAX_NAME_LENGTH - len(STATE_TOPIC_PREFIX)} characters (their state topic is "
                f"{STATE_TOPIC_PREFIX}<topic>), not {len(topic)}", field="topics")
        try:
            return self.replication.leader_epoch(name, partition)
        except NotLeaderError as exc:
            if not self.data_dir.has_topic(name) or self.data_dir.topic(name).partitions <= partition:
                self.ensure_state_topic(topic)
            raise NotLeaderError(topic, partition, exc.leader_id, exc.leader_epoch) from None

    def check_writable(self, topic: str, partition: int) -> None:
        """``NotEnoughReplicasError`` when the state partition's ISR is below min ISR."""
        self.replication.check_min_isr(state_topic(topic), partition)

    def state_log(self, topic: str, partition: int) -> PartitionLog:
        return self.data_dir.log(state_topic(topic), partition)

    def readable_end(self, partition_log: PartitionLog) -> int:
        """Records of the data partition below this offset may be handed out (committed)."""
        return self.replication.high_watermark(partition_log.topic, partition_log.partition)

    def dead_letter_target(self, topic: str, source_partition: int) -> tuple[PartitionLog, int] | None:
        """A partition of dead-letter topic ``topic`` led here, with min ISR, and its leader
        epoch: ``source_partition % partitions`` if possible; None when there is none."""
        if not self.data_dir.has_topic(topic):
            return None
        count = self.data_dir.topic(topic).partitions
        first = source_partition % count
        for partition in [first, *(p for p in range(count) if p != first)]:
            try:
                epoch = self.replication.leader_epoch(topic, partition)
                self.replication.check_min_isr(topic, partition)
            except LogstoreError:
                continue
            return self.data_dir.log(topic, partition), epoch
        return None

    async def replicated(self, writes: list[tuple[PartitionLog, int]]) -> None:
        """Wait until every write (to a state partition, or a dead-letter copy) is covered by
        its partition's high watermark."""
        ends: dict[tuple[str, int], int] = {}
        for partition_log, end in writes:
            key = (partition_log.topic, partition_log.partition)
            ends[key] = max(ends.get(key, 0), end)
        for (name, partition), end in ends.items():
            try:
                await self.replication.wait_replicated(name, partition, end)
            except NotLeaderError as exc:
                raise NotLeaderError(data_topic(name) or name, partition, exc.leader_id, exc.leader_epoch) from None
