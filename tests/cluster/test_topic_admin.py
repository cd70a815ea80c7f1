"""AlterTopicConfig and AddPartitions on a real 3-broker cluster: written to etcd through any
broker, applied by every broker (``logstore.cluster.topic_admin``)."""

from __future__ import annotations

import grpc
import pytest

from logstore.api.v1 import admin_pb2, records_pb2
from logstore.cluster.placement import assign_replicas
from logstore.cluster.records import TopicRecord
from logstore.cluster.topic_admin import altered_record, grown_record
from logstore.errors import InvalidConfigError, LimitExceededError
from tests.server.helpers import batch, describe, expect_failure, produce_request, unique_topic

from .cluster_fixture import TIMEOUT_S


@pytest.fixture
def cluster(cluster_factory):
    return cluster_factory(brokers=3)


def test_add_partitions_places_new_replicated_partitions_with_leaders(cluster):
    topic = unique_topic("grown")
    cluster.create_topic(topic, partitions=1)
    via = cluster.brokers[1]
    grown = cluster.stub(via).AddPartitions(admin_pb2.AddPartitionsRequest(name=topic, total=3), timeout=30)
    assert grown.partition_count == 3
    partitions = cluster.metadata([topic], via=via).topics[0].partitions
    assert [p.partition for p in partitions] == [0, 1, 2]
    assert sorted(p.leader_id for p in partitions) == [1, 2, 3]  # placed like CreateTopic
    for p in partitions:
        assert sorted(p.replicas) == [1, 2, 3]
    for broker in cluster.brokers:  # every broker holds the new partitions
        cluster.wait_for(lambda b=broker: describe(cluster.stub(b), topic).partition_count == 3,
                         what=f"3 partitions on broker {broker.broker_id}")
    cluster.wait_for_isr(topic, 2, 3)
    leader = cluster.leader_of(topic, 2)
    request = produce_request(topic, batch([b"new"]), 2, records_pb2.ACKS_ALL)
    result = cluster.stub(leader).Produce(request, timeout=TIMEOUT_S).results[0]
    assert not result.error.reason, result.error
    # as on a single node, the new count must be larger
    expect_failure(cluster.stub(via).AddPartitions, admin_pb2.AddPartitionsRequest(name=topic, total=3),
                   grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")


def test_alter_topic_config_is_applied_by_every_broker_and_min_insync_replicas_by_the_leader(cluster):
    topic = unique_topic("altered")
    cluster.create_topic(topic, partitions=1, min_insync_replicas="1")
    leader = cluster.leader_of(topic)
    via = next(b for b in cluster.brokers if b is not leader)
    stub = cluster.stub(via)
    changed = stub.AlterTopicConfig(admin_pb2.AlterTopicConfigRequest(
        name=topic, set={"retention_ms": "60000", "min_insync_replicas": "3"}), timeout=30)
    assert changed.config["retention_ms"] == "60000"
    assert changed.config["min_insync_replicas"] == "3"
    for broker in cluster.brokers:
        cluster.wait_for(lambda b=broker: describe(cluster.stub(b), topic).config["retention_ms"] == "60000",
                         what=f"retention_ms on broker {broker.broker_id}")
    expect_failure(stub.AlterTopicConfig, admin_pb2.AlterTopicConfigRequest(
        name=topic, set={"min_insync_replicas": "4"}), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CONFIG")
    # with one follower gone the ISR is 2 < 3: acks=all is refused, nothing appended
    next(b for b in cluster.brokers if b is not leader and b is not via).kill()
    cluster.wait_for_isr(topic, 0, 2)
    request = produce_request(topic, batch([b"refused"]), 0, records_pb2.ACKS_ALL)
    assert cluster.stub(leader).Produce(request, timeout=TIMEOUT_S).results[0].error.reason == "NOT_ENOUGH_REPLICAS"
    reset = stub.AlterTopicConfig(admin_pb2.AlterTopicConfigRequest(
        name=topic, reset=["min_insync_replicas", "retention_ms"]), timeout=30)
    assert reset.config["min_insync_replicas"] == "2"  # the default at factor 3
    assert reset.config["retention_ms"] == describe(stub, topic).config["retention_ms"] != "60000"
    accepted = cluster.wait_for(
        lambda: not cluster.stub(leader).Produce(request, timeout=TIMEOUT_S).results[0].error.reason or None,
        what="acks=all accepted with min_insync_replicas back at 2")
    assert accepted


def test_new_partitions_are_placed_as_create_would_place_them():
    record = TopicRecord("t", 1, 3, assign_replicas("t", 1, 3, [1, 2, 3]), {}, 2)
    grown = grown_record(record, 4, [1, 2, 3], max_partitions=10)
    assert grown.partitions == 4
    assert grown.assignment == assign_replicas("t", 4, 3, [1, 2, 3])
    with pytest.raises(LimitExceededError):
        grown_record(record, 11, [1, 2, 3], max_partitions=10)


def test_altering_keeps_other_keys_and_reset_goes_back_to_the_defaults():
    record = TopicRecord("t", 1, 3, [[1, 2, 3]], {"retention_ms": "1000", "segment_bytes": "65536"}, 3, True)
    altered = altered_record(record, {"retention.ms": "2000"}, ["segment_bytes", "min_insync_replicas",
                                                               "unclean_leader_election"])
    assert altered.config == {"retention_ms": "2000"}
    assert (altered.min_insync_replicas, altered.unclean_leader_election) == (2, False)
    assert altered_record(altered, {"retention_ms": "2000"}, []) == altered  # the same change again
    with pytest.raises(InvalidConfigError):
        altered_record(record, {"no_such_key": "1"}, [])
