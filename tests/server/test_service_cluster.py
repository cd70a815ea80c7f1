"""The cluster RPCs on a single-node broker: it answers as a cluster of one."""

from __future__ import annotations

import grpc

from logstore.api.v1 import admin_pb2, cluster_pb2
from tests.server.helpers import TIMEOUT_S, create_topic, expect_failure


def test_metadata_describes_a_cluster_of_one(stub, topic, module_broker):
    create_topic(stub, topic, partitions=2)
    response = stub.Metadata(cluster_pb2.MetadataRequest(topics=[topic]), timeout=TIMEOUT_S)
    assert not response.clustered
    assert [(b.broker_id, b.address, b.alive) for b in response.brokers] == [(0, module_broker.address, True)]
    (described,) = response.topics
    assert (described.name, described.replication_factor) == (topic, 1)
    assert [(p.partition, p.leader_id, list(p.replicas), list(p.isr)) for p in described.partitions] == [
        (0, 0, [0], [0]), (1, 0, [0], [0])
    ]


def test_metadata_names_an_unknown_topic_in_its_entry(stub, topic):
    response = stub.Metadata(cluster_pb2.MetadataRequest(topics=[topic]), timeout=TIMEOUT_S)
    (described,) = response.topics
    assert described.error.reason == "UNKNOWN_TOPIC"


def test_metadata_lists_internal_topics_only_when_asked(stub, topic):
    create_topic(stub, topic)
    plain = {t.name for t in stub.Metadata(cluster_pb2.MetadataRequest(), timeout=TIMEOUT_S).topics}
    everything = {
        t.name for t in stub.Metadata(cluster_pb2.MetadataRequest(include_internal=True), timeout=TIMEOUT_S).topics
    }
    assert topic in plain and not any(name.startswith("__") for name in plain)
    assert "__consumer_offsets" in everything


def test_find_coordinator_answers_itself(stub, module_broker):
    response = stub.FindCoordinator(cluster_pb2.FindCoordinatorRequest(key="billing"), timeout=TIMEOUT_S)
    assert (response.broker_id, response.address) == (0, module_broker.address)


def test_find_coordinator_needs_a_key(stub):
    expect_failure(
        stub.FindCoordinator, cluster_pb2.FindCoordinatorRequest(), grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )


def test_replica_fetch_is_refused_on_a_single_node(stub, topic):
    request = cluster_pb2.ReplicaFetchRequest(
        replica_id=1, partitions=[cluster_pb2.ReplicaFetchPartition(topic=topic, partition=0)]
    )
    error = expect_failure(stub.ReplicaFetch, request, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert "not part of a cluster" in error.message


def test_single_node_refuses_a_replication_factor_above_one(stub, topic):
    request = admin_pb2.CreateTopicRequest(name=topic, partitions=1, replication_factor=3)
    error = expect_failure(stub.CreateTopic, request, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CONFIG")
    assert "needs a cluster" in error.message
