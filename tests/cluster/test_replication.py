"""Replicated partitions on a real 3-broker cluster: placement, acks=all, the high watermark,
identical copies, failover with nothing acknowledged lost."""

from __future__ import annotations

import pytest

from logstore.api.v1 import records_pb2
from logstore.cluster.placement import assign_replicas
from tests.server.helpers import (
    batch,
    produce_request,
    read_all,
    unique_topic,
    values_of,
)

from .cluster_fixture import TIMEOUT_S


@pytest.fixture
def cluster(cluster_factory):
    return cluster_factory(brokers=3)


def produce_all(stub, topic, partition, values, acks=records_pb2.ACKS_ALL):
    return stub.Produce(produce_request(topic, batch(values), partition, acks), timeout=TIMEOUT_S)


def test_topic_replicas_are_placed_on_every_broker_with_leaders_spread(cluster):
    topic = unique_topic("placed")
    cluster.create_topic(topic, partitions=3, replication_factor=3)
    (described,) = cluster.metadata([topic]).topics
    assert described.replication_factor == 3
    leaders = sorted(p.leader_id for p in described.partitions)
    assert leaders == [1, 2, 3]
    for p in described.partitions:
        assert sorted(p.replicas) == [1, 2, 3]
        assert sorted(p.isr) == [1, 2, 3]


def test_acks_all_is_readable_on_the_leader_and_copied_to_followers(cluster):
    topic = unique_topic("copied")
    cluster.create_topic(topic, partitions=1)
    leader = cluster.leader_of(topic)
    stub = cluster.stub(leader)
    values = values_of("v", 50)
    result = produce_all(stub, topic, 0, values).results[0]
    assert not result.error.reason, result.error
    assert [r.value for r in read_all(stub, topic, 0)] == values
    # every replica holds the same batches: the new leader after the old one is killed has them
    leader.kill()
    new_leader = cluster.wait_for_leader(topic, 0, not_in=(leader.broker_id,))
    new_stub = cluster.stub(new_leader)
    records = cluster.wait_for(lambda: read_all(new_stub, topic, 0) or None, what="records on the new leader")
    assert [r.value for r in records] == values


def test_a_follower_refuses_produce_and_fetch_with_not_leader(cluster):
    topic = unique_topic("follower")
    cluster.create_topic(topic, partitions=1)
    leader = cluster.leader_of(topic)
    follower = next(b for b in cluster.brokers if b is not leader)
    stub = cluster.stub(follower)
    result = produce_all(stub, topic, 0, [b"x"]).results[0]
    assert result.error.reason == "NOT_LEADER"
    assert result.error.metadata["leader_id"] == str(leader.broker_id)


def test_min_insync_replicas_refuses_acks_all_when_too_few_are_in_sync(cluster):
    topic = unique_topic("min-isr")
    cluster.create_topic(topic, partitions=1, min_insync_replicas="3")
    leader = cluster.leader_of(topic)
    follower = next(b for b in cluster.brokers if b is not leader)
    follower.kill()
    cluster.wait_for_isr(topic, 0, 2)
    stub = cluster.stub(leader)
    result = produce_all(stub, topic, 0, [b"refused"]).results[0]
    assert result.error.reason == "NOT_ENOUGH_REPLICAS"
    assert read_all(stub, topic, 0) == []  # nothing was appended
    ok = produce_all(stub, topic, 0, [b"acks-1"], acks=records_pb2.ACKS_LEADER).results[0]
    assert not ok.error.reason


def test_any_broker_creates_a_topic_it_holds_no_copy_of(cluster):
    # Placement starts at a broker that depends on the name: take names that put their one copy
    # elsewhere than broker 1 (the broker every create goes through).
    candidates = (unique_topic(f"rf1-{i}") for i in range(1000))
    names = [n for n in candidates if assign_replicas(n, 1, 1, [1, 2, 3])[0][0] != 1][:3]
    for name in names:
        cluster.create_topic(name, partitions=1, replication_factor=1)  # always via broker 1
    leaders = {cluster.partition(name, 0).leader_id for name in names}
    assert leaders - {1}, "placement put every copy on broker 1; the case is not exercised"
    for name in names:
        leader = cluster.leader_of(name)
        assert not produce_all(cluster.stub(leader), name, 0, [b"x"]).results[0].error.reason
