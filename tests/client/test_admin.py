"""Admin against a real broker: topics and offsets, as small dataclasses; errors typed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from logstore.client import Admin, Producer, TopicDescription, TopicInfo, TopicPartition
from logstore.errors import (
    InvalidConfigError,
    InvalidNameError,
    TopicExistsError,
    UnknownTopicError,
)


def test_create_topic_returns_its_description(admin: Admin, new_topic: Callable[..., str]) -> None:
    name = new_topic(3)
    description = admin.describe_topic(name)
    assert isinstance(description, TopicDescription)
    assert (description.name, description.partition_count, description.internal) == (name, 3, False)
    assert [p.partition for p in description.partitions] == [0, 1, 2]
    assert all(p.log_end_offset == 0 for p in description.partitions)
    assert "retention_ms" in description.config


def test_create_topic_with_config(admin: Admin, new_topic: Callable[..., str]) -> None:
    name = new_topic(1, retention_ms=60_000)
    assert admin.describe_topic(name).config["retention_ms"] == "60000"


def test_list_topics_lists_it(admin: Admin, new_topic: Callable[..., str]) -> None:
    name = new_topic(2)
    assert TopicInfo(name, 2, False) in admin.list_topics()
    assert not any(topic.internal for topic in admin.list_topics())
    assert any(topic.internal for topic in admin.list_topics(include_internal=True))


def test_create_an_existing_topic_fails(admin: Admin, new_topic: Callable[..., str]) -> None:
    name = new_topic()
    with pytest.raises(TopicExistsError) as caught:
        admin.create_topic(name)
    assert caught.value.topic == name
    assert caught.value.reason == "TOPIC_EXISTS"


def test_an_invalid_name_fails(admin: Admin) -> None:
    with pytest.raises(InvalidNameError):
        admin.create_topic("bad name!")


def test_an_invalid_config_fails(admin: Admin) -> None:
    with pytest.raises(InvalidConfigError) as caught:
        admin.create_topic("config-test-x", config={"no_such_key": "1"})
    assert caught.value.key == "no_such_key"


def test_delete_topic(admin: Admin, new_topic: Callable[..., str]) -> None:
    name = new_topic()
    admin.delete_topic(name)
    with pytest.raises(UnknownTopicError):
        admin.describe_topic(name)
    with pytest.raises(UnknownTopicError):
        admin.delete_topic(name)


def test_alter_config_sets_and_resets(admin: Admin, new_topic: Callable[..., str]) -> None:
    name = new_topic()
    default = admin.describe_topic(name).config["retention_ms"]
    assert admin.alter_config(name, set={"retention_ms": 1234}).config["retention_ms"] == "1234"
    assert admin.alter_config(name, reset=["retention_ms"]).config["retention_ms"] == default


def test_add_partitions(admin: Admin, new_topic: Callable[..., str]) -> None:
    name = new_topic(1)
    assert admin.add_partitions(name, 4).partition_count == 4


def test_list_offsets(admin: Admin, server: str, new_topic: Callable[..., str]) -> None:
    name = new_topic(2)
    with Producer(server) as producer:
        producer.send_batch(name, [b"a", b"b", b"c"], partition=1,
                            timestamps=[1000, 2000, 3000]).result(10)
    tp = TopicPartition(name, 1)
    assert admin.list_offsets([tp], "earliest") == {tp: 0}
    assert admin.list_offsets([tp], "latest") == {tp: 3}
    assert admin.list_offsets([tp], 1500) == {tp: 1}
    assert admin.list_offsets([tp], 9999) == {tp: 3}
    assert admin.list_offsets(name) == {TopicPartition(name, 0): 0, tp: 3}
