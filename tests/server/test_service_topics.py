"""Topic administration over gRPC: create, list, describe, alter config, add partitions, delete."""

from __future__ import annotations

import grpc

from logstore.api.v1 import admin_pb2
from tests.server.helpers import (
    TIMEOUT_S,
    batch,
    create_topic,
    describe,
    expect_failure,
    log_ends,
    produce,
    produce_request,
    read_all,
    values,
    values_of,
)


def test_create_topic_returns_its_description(stub, topic):
    description = create_topic(stub, topic, partitions=3, segment_bytes="1mib", flush="always")

    assert description.name == topic
    assert description.partition_count == 3
    assert not description.internal
    assert [p.partition for p in description.partitions] == [0, 1, 2]
    for partition in description.partitions:
        assert (partition.log_start_offset, partition.log_end_offset) == (0, 0)
        assert partition.last_stable_offset == 0
        assert partition.segments == 1
    assert description.config["segment_bytes"] == str(1 << 20)
    assert description.config["flush"] == "always"
    assert description.config["retention_ms"] == str(7 * 24 * 3600 * 1000)  # a default


def test_list_topics_includes_created_topics(stub, topic):
    create_topic(stub, topic, partitions=2)

    listed = stub.ListTopics(admin_pb2.ListTopicsRequest(), timeout=TIMEOUT_S)

    summaries = {t.name: t for t in listed.topics}
    assert summaries[topic].partitions == 2
    assert not summaries[topic].internal
    assert all(not t.internal for t in listed.topics)


def test_describe_topic_reports_log_offsets_after_produce(stub, topic):
    create_topic(stub, topic, partitions=2)
    produce(stub, topic, values_of("a", 5), partition=1)

    description = describe(stub, topic)

    assert [(p.log_start_offset, p.log_end_offset) for p in description.partitions] == [(0, 0), (0, 5)]
    assert description.partitions[1].last_stable_offset == 5
    assert description.partitions[1].size_bytes > 0
    assert description.partitions[0].size_bytes == 0


def test_alter_topic_config_sets_and_resets_keys(stub, topic):
    create_topic(stub, topic, retention_ms="60000")

    altered = stub.AlterTopicConfig(
        admin_pb2.AlterTopicConfigRequest(name=topic, set={"max_batch_bytes": "2048"}, reset=["retention_ms"]),
        timeout=TIMEOUT_S,
    )

    assert altered.config["max_batch_bytes"] == "2048"
    assert altered.config["retention_ms"] == str(7 * 24 * 3600 * 1000)
    assert describe(stub, topic).config == altered.config


def test_altered_config_takes_effect_at_once(stub, topic):
    create_topic(stub, topic)
    stub.AlterTopicConfig(
        admin_pb2.AlterTopicConfigRequest(name=topic, set={"max_batch_bytes": "1024"}), timeout=TIMEOUT_S
    )

    expect_failure(
        stub.Produce,
        produce_request(topic, batch([b"x" * 2000])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "BATCH_TOO_LARGE",
    )


def test_add_partitions_grows_the_topic(stub, topic):
    create_topic(stub, topic, partitions=1)

    grown = stub.AddPartitions(admin_pb2.AddPartitionsRequest(name=topic, total=3), timeout=TIMEOUT_S)

    assert grown.partition_count == 3
    assert [p.partition for p in grown.partitions] == [0, 1, 2]
    result = produce(stub, topic, [b"on-two"], partition=2)
    assert result.base_offset == 0
    assert values(read_all(stub, topic, 2)) == [b"on-two"]


def test_delete_topic_removes_it(stub, topic):
    create_topic(stub, topic, partitions=2)
    produce(stub, topic, [b"gone"], partition=0)

    stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=topic), timeout=TIMEOUT_S)

    listed = stub.ListTopics(admin_pb2.ListTopicsRequest(include_internal=True), timeout=TIMEOUT_S)
    assert topic not in {t.name for t in listed.topics}
    expect_failure(
        stub.DescribeTopic, admin_pb2.DescribeTopicRequest(name=topic), grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOPIC"
    )


def test_recreated_topic_starts_empty(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("old", 3))
    stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=topic), timeout=TIMEOUT_S)

    create_topic(stub, topic)

    assert log_ends(stub, topic) == [0]
    assert produce(stub, topic, [b"new"]).base_offset == 0
    assert values(read_all(stub, topic)) == [b"new"]
