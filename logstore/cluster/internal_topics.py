"""The internal topics a cluster replicates: ``__consumer_offsets`` (committed offsets; the
leader of each of its partitions coordinates the groups that hash to it) and
``__transaction_state`` (one partition, as on a single node).

The topic is created in etcd when missing, like any topic (a guarded transaction: created once,
however many brokers try): by the controller as soon as ``INTERNAL_REPLICATION_FACTOR`` brokers
are live, or at the first ``FindCoordinator`` of a smaller cluster. It has as many partitions as
a single node's (``offsets_topic_partitions``, the same on every broker), replication factor
min(3, live brokers) and ``min_insync_replicas`` min(2, factor), and is replicated by the
fetchers like any partition. ``__transaction_state`` is created the same way (min(3, live)
copies); a clustered broker does not write to it yet (transactions are refused in a cluster, and
producer id blocks come from etcd: ``producer_ids.py``).

Share groups keep their state per data topic in ``__share_state.<topic>``
(``broker/share/leadership.py``), created when a share group first fetches from the topic (and
grown with it): the data topic's partition count, replica assignment, replication factor and
``min_insync_replicas``, compacted and kept forever. Deleting the data topic deletes it.
``__share_group_state`` stays a single node's.

Threading: event loop thread only.
"""

from __future__ import annotations

import logging
from typing import Any

from logstore.broker.internal import OFFSETS_TOPIC, TRANSACTIONS_TOPIC
from logstore.broker.share.leadership import state_topic, state_topic_config
from logstore.cluster.etcd import Compare, Op
from logstore.cluster.metadata import MetadataCache
from logstore.cluster.placement import assign_replicas
from logstore.cluster.records import Keys, TopicRecord

log = logging.getLogger(__name__)

INTERNAL_REPLICATION_FACTOR = 3
INTERNAL_MIN_INSYNC_REPLICAS = 2
#: ``__transaction_state`` has one partition, as on a single node.
TRANSACTIONS_PARTITIONS = 1


def internal_record(name: str, partitions: int, live: list[int]) -> TopicRecord:
    factor = min(INTERNAL_REPLICATION_FACTOR, len(live))
    assignment = assign_replicas(name, partitions, factor, live)
    return TopicRecord(name, partitions, factor, assignment, {}, min(INTERNAL_MIN_INSYNC_REPLICAS, factor))


async def ensure_internal_topics(etcd: Any, keys: Keys, metadata: MetadataCache, partitions: dict[str, int],
                                 *, min_live: int = 1) -> None:
    """Create each missing internal topic (``name -> partitions``) once ``min_live`` brokers
    (not shutting down) are live."""
    live = sorted(b for b, record in metadata.brokers.items() if not record.shutting_down)
    if len(live) < max(min_live, 1):
        return
    for name, count in partitions.items():
        if name in metadata.topics:
            continue
        record = internal_record(name, count, live)
        key = keys.topic(name)
        result = await etcd.txn([Compare.create_revision(key) == 0], [Op.put(key, record.encode())], [])
        if result.succeeded:
            log.info("created internal topic %s: %d partitions, factor %d, min_insync_replicas %d",
                     name, count, record.replication_factor, record.min_insync_replicas)


def replicated_internal_topics(offsets_partitions: int) -> dict[str, int]:
    return {OFFSETS_TOPIC: offsets_partitions, TRANSACTIONS_TOPIC: TRANSACTIONS_PARTITIONS}


def share_state_record(data: TopicRecord) -> TopicRecord:
    """``__share_state.<topic>``'s record: placed like its data topic."""
    return TopicRecord(state_topic(data.name), data.partitions, data.replication_factor,
                       [list(replicas) for replicas in data.assignment], state_topic_config(),
                       data.min_insync_replicas)


async def ensure_share_state_topic(etcd: Any, keys: Keys, metadata: MetadataCache, topic: str) -> None:
    """Create (or grow to the data topic's partitions) ``__share_state.<topic>``: a guarded
    transaction, harmless when another broker did it first."""
    data = metadata.topics.get(topic)
    if data is None:
        return
    name = state_topic(topic)
    current = metadata.topics.get(name)
    if current is not None and current.partitions >= data.partitions:
        return
    record = share_state_record(data)
    key = keys.topic(name)
    if current is None:
        compare = Compare.create_revision(key) == 0
    else:
        kv = await etcd.get(key)  # grown: rewrite if nobody else did meanwhile
        if kv is None:
            return
        compare = Compare.mod_revision(key) == kv.mod_revision
    result = await etcd.txn([compare], [Op.put(key, record.encode())], [])
    if result.succeeded:
        log.info("share state topic %s: %d partitions, factor %d", name, record.partitions,
                 record.replication_factor)
