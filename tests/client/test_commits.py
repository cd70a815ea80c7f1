"""Committing a group's offsets: manual (sync, async, explicit offsets), auto-commit (what
earlier polls returned), commits before a revoke, a zombie's commit refused, a standalone
consumer, and offsets that survive a broker restart and compaction of ``__consumer_offsets``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from logstore.client import Admin, Consumer, Producer, TopicPartition
from logstore.errors import PartitionNotAssignedError, UnknownMemberError
from tests.broker_fixture import BrokerProcess

Topic = Callable[..., str]


def group_name() -> str:
    return f"group-{uuid.uuid4().hex[:8]}"


def fill(server: str, topic: str, count: int, partition: int = 0) -> None:
    with Producer(server) as producer:
        producer.send_batch(topic, [b"v%d" % i for i in range(count)], partition=partition).result(10)


def poll_until(consumer: Consumer, count: int, max_records: int | None = None,
               timeout: float = 10.0) -> list[bytes | None]:
    values: list[bytes | None] = []
    deadline = time.monotonic() + timeout
    while len(values) < count and time.monotonic() < deadline:
        left = count - len(values)
        values += [r.value for r in consumer.poll(max_records=min(left, max_records or left),
                                                  timeout=0.2)]
    return values


def subscribed(server: str, topic: str, group: str, **options: object) -> Consumer:
    consumer = Consumer(server, group_id=group, auto_offset_reset="earliest",
                        fetch_max_wait_ms=50, **options)
    consumer.subscribe([topic])
    return consumer


def test_commit_defaults_to_the_positions_after_the_polled_records(server: str,
                                                                   new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, 10)
    tp = TopicPartition(topic, 0)
    with subscribed(server, topic, group_name(), enable_auto_commit=False) as consumer:
        assert len(poll_until(consumer, 4, max_records=4)) == 4
        assert consumer.commit() == {tp: 4}
        assert consumer.committed() == {tp: 4}


def test_an_asynchronous_commit_returns_a_future_of_the_offsets(server: str,
                                                                new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, 5)
    tp = TopicPartition(topic, 0)
    with subscribed(server, topic, group_name(), enable_auto_commit=False) as consumer:
        poll_until(consumer, 5)
        future = consumer.commit(asynchronous=True)
        assert not isinstance(future, dict)
        assert future.result(10) == {tp: 5}
        assert consumer.committed() == {tp: 5}


def test_explicit_offsets_are_committed_as_given(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, 5)
    tp = TopicPartition(topic, 0)
    with subscribed(server, topic, group_name(), enable_auto_commit=False) as consumer:
        poll_until(consumer, 5)
        consumer.commit({tp: 2})
        assert consumer.committed() == {tp: 2}


def test_committing_a_partition_the_member_does_not_own_raises_its_typed_error(
    server: str, new_topic: Topic
) -> None:
    topic, other = new_topic(1), new_topic(1)
    fill(server, topic, 1)
    with subscribed(server, topic, group_name(), enable_auto_commit=False) as consumer:
        poll_until(consumer, 1)
        with pytest.raises(PartitionNotAssignedError) as caught:
            consumer.commit({TopicPartition(other, 0): 0})
        assert caught.value.topic == other and caught.value.partition == 0
        future = consumer.commit({TopicPartition(other, 0): 0}, asynchronous=True)
        assert isinstance(future.exception(10), PartitionNotAssignedError)  # type: ignore[union-attr]


def test_auto_commit_commits_what_earlier_polls_returned(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, 9)
    tp = TopicPartition(topic, 0)
    with subscribed(server, topic, group_name(), auto_commit_interval_ms=0) as consumer:
        assert len(poll_until(consumer, 3, max_records=3)) == 3
        assert consumer.committed() == {tp: None}  # the poll that returned them commits nothing
        assert len(consumer.poll(max_records=3, timeout=5)) == 3
        assert consumer.committed() == {tp: 3}  # the next poll commits the first three
        assert len(consumer.poll(max_records=3, timeout=5)) == 3
        assert consumer.committed() == {tp: 6}


def test_auto_commit_waits_for_its_interval_and_commits_on_close(server: str,
                                                                 new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, 6)
    tp = TopicPartition(topic, 0)
    group = group_name()
    with subscribed(server, topic, group, auto_commit_interval_ms=60_000) as consumer:
        poll_until(consumer, 3, max_records=3)
        consumer.poll(max_records=3, timeout=5)
        assert consumer.committed() == {tp: None}  # the interval has not passed
    with Consumer(server, group_id=group) as reader:
        reader.assign([tp])
        assert reader.committed() == {tp: 6}  # close() committed


def test_positions_start_at_the_committed_offset(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, 6)
    group = group_name()
    with subscribed(server, topic, group, enable_auto_commit=False) as consumer:
        poll_until(consumer, 4, max_records=4)
        consumer.commit()
    with subscribed(server, topic, group) as consumer:
        assert poll_until(consumer, 2) == [b"v4", b"v5"]


def test_a_revoked_partition_is_committed_before_it_moves(server: str,
                                                          new_topic: Topic) -> None:
    """With auto-commit, the member giving a partition up commits its position first, so the
    new owner starts right after the records already returned: nothing is read twice."""
    topic = new_topic(2)
    fill(server, topic, 5, partition=0)
    fill(server, topic, 5, partition=1)
    group = group_name()
    first = subscribed(server, topic, group, auto_commit_interval_ms=60_000)
    revoked: list[list[TopicPartition]] = []
    first.subscribe([topic], on_revoke=revoked.append)
    assert len(poll_until(first, 10)) == 10
    second = subscribed(server, topic, group)
    deadline = time.monotonic() + 15
    while len(second.assignment()) < 1 and time.monotonic() < deadline:
        first.poll(timeout=0.1)
        second.poll(timeout=0.1)
    assert len(revoked) == 1 and len(second.assignment()) == 1
    fill(server, topic, 1, partition=second.assignment()[0].partition)
    assert poll_until(second, 1) == [b"v0"]  # the new record only
    second.close()
    first.close()


def test_a_zombie_members_commit_is_rejected(server: str, new_topic: Topic) -> None:
    """Two instances with one static id: the newer fences the older, whose commits fail."""
    topic = new_topic(1)
    fill(server, topic, 3)
    tp = TopicPartition(topic, 0)
    group = group_name()
    zombie = subscribed(server, topic, group, enable_auto_commit=False,
                        group_instance_id="worker-1")
    assert len(poll_until(zombie, 3)) == 3
    successor = subscribed(server, topic, group, enable_auto_commit=False,
                           group_instance_id="worker-1")
    successor.poll(timeout=1.0)
    assert successor.assignment() == [tp]
    with pytest.raises(UnknownMemberError):
        zombie.commit()
    assert successor.committed() == {tp: None}
    successor.close()
    zombie.close()


def test_a_standalone_consumer_commits_for_its_group(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, 4)
    tp = TopicPartition(topic, 0)
    group = group_name()
    with Consumer(server, group_id=group, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        poll_until(consumer, 2, max_records=2)
        consumer.commit()
    with Consumer(server, group_id=group, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        assert consumer.position(tp) == 2


def test_offsets_survive_a_broker_restart_and_compaction(
    broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    config = tmp_path / "broker.toml"
    config.write_text("[maintenance]\ncompaction_interval_ms = 200\n")
    broker = broker_factory(config=config)
    server = broker.address
    group = group_name()
    tp = TopicPartition("events", 0)
    with Admin(server) as admin:
        admin.create_topic("events", 1)
        admin.alter_config("__consumer_offsets", {"segment_bytes": 4096})
        fill(server, "events", 500)
        with Consumer(server, group_id=group) as consumer:
            consumer.assign([tp])
            for offset in range(1, 501):  # 500 commits of one key: many sealed segments
                consumer.commit({tp: offset})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            description = admin.describe_topic("__consumer_offsets")
            if sum(p.size_bytes for p in description.partitions) < 8192:
                break
            time.sleep(0.2)
        assert sum(p.size_bytes for p in description.partitions) < 8192  # compacted
        assert [c.offset for c in admin.fetch_committed(group)] == [500]
    broker.kill()
    broker.start()
    with Admin(server) as admin:
        assert [c.offset for c in admin.fetch_committed(group)] == [500]
    with Consumer(server, group_id=group) as consumer:
        consumer.assign([tp])
        assert consumer.position(tp) == 500
