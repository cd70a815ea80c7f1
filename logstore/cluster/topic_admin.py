"""Changing a clustered topic: AlterTopicConfig and AddPartitions (CreateTopic and DeleteTopic
are in ``node.py``).

Both rewrite the topic's etcd record (``topics/<name>``, see ``records.py``) in one transaction
guarded by the key's mod revision as read just before: a change racing another one (or a
deletion) fails the compare, and the broker reads the record again and applies its change to the
new one. An etcd answer lost on the way may still have been applied; the retry then finds the
change already made and answers as if it had made it (growing to ``total`` partitions a second
time, or setting the same keys again, changes nothing), so a retried request is harmless.

What follows a write, on every broker, from its metadata watch:

- **AddPartitions**: the new partitions are placed as CreateTopic places them (``placement.py``,
  the topic's existing partitions keep their replicas); the controller gives each its first
  state (leader, epoch 1, ISR) and every broker creates the local partitions and takes its role.
  The call returns once every new partition has a leader known to the answering broker.
- **AlterTopicConfig**: the record's ``config`` (storage keys: retention, segment size...) and
  ``min_insync_replicas`` / ``unclean_leader_election`` change; every broker applies the storage
  keys to its local copy and the leaders use the new ``min_insync_replicas`` for the next acks=all
  produce. The call returns once the answering broker has applied it.

Threading: event loop thread only.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from logstore.cluster.etcd import Compare, EtcdError, Op
from logstore.cluster.placement import assign_replicas
from logstore.cluster.records import TopicRecord
from logstore.cluster.topic_config import CLUSTER_TOPIC_KEYS, split_topic_config, storage_config
from logstore.errors import (
    InvalidRequestError,
    LimitExceededError,
    MetadataUnavailableError,
    RequestTimeoutError,
    UnknownTopicError,
)
from logstore.storage import LogConfig, TopicDescription, validate_topic_name

if TYPE_CHECKING:
    from logstore.cluster.node import ClusterNode

#: Guarded writes tried before giving up when other changes keep winning the race.
WRITE_ATTEMPTS = 5
#: Pause before retrying after an etcd error (times the attempt number).
RETRY_S = 0.2
#: How long a change waits to be applied on the answering broker.
APPLY_WAIT_S = 15.0


def _normalized(key: str) -> str:
    return key.replace(".", "_").replace("-", "_")


def altered_record(record: TopicRecord, set_keys: dict[str, str], reset_keys: Sequence[str]) -> TopicRecord:
    """The record with ``set_keys`` set and ``reset_keys`` back at their defaults, checked as
    CreateTopic checks a config (InvalidConfigError names a bad key or value)."""
    config = {_normalized(k): v for k, v in record.config.items()}
    config["min_insync_replicas"] = str(record.min_insync_replicas)
    config["unclean_leader_election"] = str(record.unclean_leader_election).lower()
    for key in reset_keys:
        name = _normalized(key)
        if name not in CLUSTER_TOPIC_KEYS and name not in LogConfig.keys():
            LogConfig.from_dict({key: ""})  # raises InvalidConfigError naming the key
        config.pop(name, None)
    config.update({_normalized(k): v for k, v in set_keys.items()})
    storage, min_isr, unclean = split_topic_config(config, record.replication_factor)
    return dataclasses.replace(record, config=storage, min_insync_replicas=min_isr,
                               unclean_leader_election=unclean)


def grown_record(record: TopicRecord, total: int, live: list[int], max_partitions: int) -> TopicRecord:
    """The record with ``total`` partitions, the new ones placed like CreateTopic's."""
    if total > max_partitions:
        raise LimitExceededError(
            f"{total} partitions exceed max_partitions_per_topic={max_partitions}",
            limit_name="max_partitions_per_topic", limit=max_partitions,
        )
    added = assign_replicas(record.name, total, record.replication_factor, live)[record.partitions:]
    return dataclasses.replace(record, partitions=total, assignment=[*record.assignment, *added])


async def _rewrite(node: ClusterNode, name: str, change: Any) -> TopicRecord:
    """Read the topic's record, ``change(record)`` -> the new record (the same one when the
    change is already made), and write it guarded by the mod revision read; a lost compare or an
    etcd error is retried from the read (``change`` sees every read, so it can tell its own
    earlier write from the state it started from)."""
    validate_topic_name(name)
    key = node.keys.topic(name)
    failure: EtcdError | None = None
    for attempt in range(WRITE_ATTEMPTS):
        if failure is not None:
            await asyncio.sleep(RETRY_S * attempt)
        try:
            kv = await node.etcd.get(key)
            if kv is None:
                raise UnknownTopicError(name)
            current = TopicRecord.decode(name, kv.value)
            new = change(current)
            if new == current:
                return current
            result = await node.etcd.txn([Compare.mod_revision(key) == kv.mod_revision],
                                         [Op.put(key, new.encode())], [])
        except EtcdError as exc:
            failure = exc
            continue
        if result.succeeded:
            return new
    if failure is not None:
        raise MetadataUnavailableError(
            f"cannot change topic {name!r}: the metadata store is unavailable ({failure})"
        ) from failure
    raise MetadataUnavailableError(f"topic {name!r} kept changing under {WRITE_ATTEMPTS} attempts; try again")


async def _wait_until(done: Any, what: str, name: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + APPLY_WAIT_S
    while not done():
        if loop.time() >= deadline:
            raise RequestTimeoutError(f"topic {name!r}: {what} was written, but not applied here within "
                                      f"{APPLY_WAIT_S:.0f} s", topic=name)
        await asyncio.sleep(0.02)


async def alter_topic_config(node: ClusterNode, name: str, set_keys: dict[str, str],
                             reset_keys: Sequence[str]) -> TopicDescription:
    record = await _rewrite(node, name, lambda r: altered_record(r, set_keys, reset_keys))
    data_dir = node.broker.data_dir

    def applied() -> bool:
        seen = node.metadata.topics.get(name)
        return (seen is not None and seen.config == record.config
                and seen.min_insync_replicas == record.min_insync_replicas
                and seen.unclean_leader_election == record.unclean_leader_election
                and data_dir.has_topic(name) and data_dir.topic(name).config == storage_config(data_dir, record))

    await _wait_until(applied, "the config change", name)
    return data_dir.describe_topic(name)


async def add_partitions(node: ClusterNode, name: str, total: int) -> TopicDescription:
    live = sorted(b for b, r in node.metadata.brokers.items() if not r.shutting_down)
    limit = node.broker.data_dir.limits.max_partitions_per_topic
    first: list[int] = []

    def grow(record: TopicRecord) -> TopicRecord:
        if not first:
            first.append(record.partitions)
        if record.partitions == total and first[0] < total:
            return record  # a retry finding its own write (or the same change by another)
        if total <= record.partitions:
            raise InvalidRequestError(
                f"topic {name!r} already has {record.partitions} partitions; the new count must be "
                f"larger, not {total}", field="total", partitions=record.partitions,
            )
        return grown_record(record, total, live, limit)

    await _rewrite(node, name, grow)
    data_dir = node.broker.data_dir

    def placed() -> bool:
        states = [node.metadata.state(name, p) for p in range(total)]
        return (all(s is not None and s.leader >= 0 for s in states) and data_dir.has_topic(name)
                and data_dir.topic(name).partitions >= total)

    await _wait_until(placed, f"growing to {total} partitions", name)
    return data_dir.describe_topic(name)
