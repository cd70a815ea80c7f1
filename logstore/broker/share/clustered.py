"""The share coordinator's part in a cluster (a mixin of ``ShareCoordinator``): which
share-partitions this broker serves, loading them when it becomes their state partition's
leader, dropping them when it stops (``leadership.py`` says where their state lives).

Not thread-safe: event loop thread only (the share coordinator's).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from logstore.broker.share.config import ShareGroupConfig
from logstore.broker.share.group import ShareGroup
from logstore.broker.share.leadership import ShareCluster, data_topic
from logstore.broker.share.partition import SharePartition
from logstore.broker.share.state_log import ShareStateLog
from logstore.broker.share.state_writer import StateWriter
from logstore.broker.share.window import InFlightWindow
from logstore.errors import LogstoreError, NotLeaderError
from logstore.storage import DataDir, PartitionLog

log = logging.getLogger(__name__)


class ClusteredShares:
    """Provided by ``ShareCoordinator``."""

    data_dir: DataDir
    writer: StateWriter
    groups: dict[str, ShareGroup]
    cluster: ShareCluster | None

    def _add_windows(self, windows: dict[tuple[str, str, int], tuple[InFlightWindow, int, int]]) -> None:
        for (group_id, topic, partition), (window, generation, sequence) in windows.items():
            group = self.groups.get(group_id) or self._new_group(group_id)
            group.partitions[(topic, partition)] = SharePartition(
                group_id, topic, partition, window, generation, sequence)

    def _new_group(self, group_id: str) -> ShareGroup:
        config = self.cluster.configs.get(group_id) if self.cluster is not None else None
        group = self.groups[group_id] = ShareGroup(
            group_id, ShareGroupConfig.from_dict(config) if config else None)
        return group

    # -- in a cluster (leadership.py) -----------------------------------------------------------

    def attach(self, cluster: ShareCluster) -> None:
        """Serve as a clustered broker: state in the state partitions led here."""
        self.cluster = cluster
        self.writer.locate = self._locate
        self.writer.replicated = cluster.replicated

    def _locate(self, key: tuple[str, str, int]) -> tuple[PartitionLog, int]:
        """Where a share-partition's change is written: its state partition, at the leader epoch
        its state was loaded at (``NotLeaderError`` if this broker leads it no more, or anew)."""
        assert self.cluster is not None
        _, topic, partition = key
        epoch = self.cluster.epoch(topic, partition)
        if self.cluster.loaded.get((topic, partition)) != epoch:
            raise NotLeaderError(topic, partition)
        return self.cluster.state_log(topic, partition), epoch

    def _take_over(self, topic: str, partition: int, *, write: bool = False) -> None:
        """In a cluster: raise ``NotLeaderError`` unless this broker leads the state partition
        of ``topic``/``partition`` (with ``write``, ``NotEnoughReplicasError`` below its min
        ISR); load its share-partitions the first time at a new leader epoch."""
        cluster = self.cluster
        if cluster is None:
            return
        epoch = cluster.epoch(topic, partition)
        if cluster.loaded.get((topic, partition)) != epoch:
            self._drop_partition(topic, partition)
            loaded = ShareStateLog.load_logs([cluster.state_log(topic, partition)])
            self._add_windows({k: v for k, v in loaded.windows.items() if k[1:] == (topic, partition)})
            cluster.loaded[(topic, partition)] = epoch
            log.info("share-partitions of %s/%d loaded at leader epoch %d", topic, partition, epoch)
        if write:
            cluster.check_writable(topic, partition)

    def _drop_partition(self, topic: str, partition: int) -> None:
        self.writer.forget(lambda key: key[1:] != (topic, partition))
        for group in self.groups.values():
            group.partitions.pop((topic, partition), None)

    def _take_over_all(self) -> None:
        """``_take_over`` every state partition led here (admin calls see all of them)."""
        if self.cluster is None:
            return
        self.release_unled()
        for name in self.data_dir.list_topics():
            topic = data_topic(name)
            if topic is not None:
                for partition in range(self.data_dir.topic(name).partitions):
                    try:
                        self._take_over(topic, partition)
                    except LogstoreError:
                        pass  # led by another broker

    def release_unled(self) -> None:
        """Drop the share-partitions whose state partition this broker stopped leading."""
        cluster = self.cluster
        if cluster is None:
            return
        for (topic, partition), epoch in list(cluster.loaded.items()):
            try:
                led = cluster.epoch(topic, partition) == epoch
            except LogstoreError:
                led = False
            if not led:
                self._drop_partition(topic, partition)
                del cluster.loaded[(topic, partition)]

    async def settled(self, keys: Iterable[tuple[str, int]]) -> None:
        """In a cluster: wait until the state partitions of these (topic, partition) are
        replicated up to their log end. An answer may rest on state an earlier call wrote and
        whose replication is still pending (that call failed waiting: NOT_ENOUGH_REPLICAS, a
        timeout) — a refusal saying a record is done, say — so it is given only once that state
        is replicated too. At once when it is (the usual case), and on a single node."""
        cluster = self.cluster
        if cluster is None:
            return
        writes = []
        for topic, partition in dict.fromkeys(keys):
            if cluster.loaded.get((topic, partition)) is not None:
                state_log = cluster.state_log(topic, partition)
                writes.append((state_log, state_log.log_end_offset))
        await cluster.replicated(writes)

    def _readable_end(self, partition_log: PartitionLog) -> int:
        if self.cluster is None:
            return partition_log.log_end_offset
        return self.cluster.readable_end(partition_log)

    def set_configs(self, configs: dict[str, dict[str, object]]) -> None:
        """The group configs of the cluster metadata changed (a cluster)."""
        if self.cluster is None:
            return
        self.cluster.configs = configs
        for group_id, group in self.groups.items():
            group.config = ShareGroupConfig.from_dict(configs[group_id]) if group_id in configs else ShareGroupConfig()

