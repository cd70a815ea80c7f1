"""Bootstrap lists and cluster metadata against a real single-node broker (a cluster of one)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from logstore.client import Admin, Consumer, Producer, TopicPartition
from tests.broker_fixture import free_port
from tests.client.helpers import read_all

Topic = Callable[..., str]


@pytest.fixture(scope="module")
def servers(server: str) -> str:
    """A bootstrap list whose first address is a free port nobody listens on."""
    return f"127.0.0.1:{free_port()},{server}"


def test_a_producer_skips_a_dead_bootstrap_address(servers: str, server: str,
                                                   new_topic: Topic) -> None:
    topic = new_topic()
    with Producer(servers) as producer:
        assert producer.send(topic, b"hello").result(10).offset == 0
        assert producer.send_batch(topic, [b"a", b"b"]).result(10)[0].base_offset == 1
    assert [r.value for r in read_all(server, topic, 3)] == [b"hello", b"a", b"b"]


def test_a_consumer_skips_a_dead_bootstrap_address(servers: str, server: str,
                                                   new_topic: Topic) -> None:
    topic = new_topic(partitions=2)
    with Producer(server) as producer:
        producer.send_batch(topic, [b"x"] * 4, partition=1).result(10)
    with Consumer(servers, auto_offset_reset="earliest", fetch_mode="fetch",
                  fetch_max_wait_ms=50) as consumer:
        consumer.assign(topic)
        records = []
        deadline = time.monotonic() + 10
        while len(records) < 4 and time.monotonic() < deadline:
            records += consumer.poll(timeout=0.5)
        assert [(r.partition, r.offset) for r in records] == [(1, 0), (1, 1), (1, 2), (1, 3)]
        assert consumer.end_offsets() == {TopicPartition(topic, 0): 0, TopicPartition(topic, 1): 4}


def test_a_group_member_finds_its_coordinator_through_a_bootstrap_list(
        servers: str, server: str, new_topic: Topic) -> None:
    topic = new_topic()
    with Producer(server) as producer:
        producer.send_batch(topic, [b"a", b"b"]).result(10)
    group = f"{topic}-group"
    with Consumer(servers, group_id=group, auto_offset_reset="earliest",
                  enable_auto_commit=False, fetch_max_wait_ms=50) as consumer:
        consumer.subscribe(topic)
        records = []
        deadline = time.monotonic() + 20
        while len(records) < 2 and time.monotonic() < deadline:
            records += consumer.poll(timeout=0.5)
        assert [r.value for r in records] == [b"a", b"b"]
        assert consumer.commit() == {TopicPartition(topic, 0): 2}


def test_admin_skips_a_dead_bootstrap_address(servers: str, new_topic: Topic) -> None:
    topic = new_topic(partitions=3)
    with Admin(servers, timeout=10) as admin:
        assert admin.describe_topic(topic).partition_count == 3
        assert topic in {t.name for t in admin.list_topics()}


def test_the_server_environment_variable_may_list_several_addresses(
        servers: str, new_topic: Topic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGSTORE_SERVER", servers)
    topic = new_topic()
    with Producer() as producer:
        assert producer.send(topic, b"v").result(10).offset == 0


def test_describe_cluster_on_a_single_node(server: str, admin: Admin, new_topic: Topic) -> None:
    topic = new_topic(partitions=2)
    cluster = admin.describe_cluster()
    assert not cluster.clustered
    assert [(b.broker_id, b.address, b.alive) for b in cluster.brokers] == [(0, server, True)]
    assert (cluster.controller_id, cluster.controller_epoch) == (0, 0)
    mine = [p for p in cluster.partitions if p.topic == topic]
    assert [(p.partition, p.leader_id, p.replicas, p.isr) for p in mine] == [
        (0, 0, (0,), (0,)), (1, 0, (0,), (0,))]
    assert any(p.topic == "__consumer_offsets" for p in cluster.partitions)
    assert cluster.under_replicated_partitions == 0


def test_create_topic_takes_a_replication_factor_of_one_on_a_single_node(admin: Admin) -> None:
    name = f"rf-one-{time.monotonic_ns()}"
    assert admin.create_topic(name, 2, replication_factor=1).partition_count == 2


def test_a_metadata_refresh_picks_up_new_partitions(server: str, admin: Admin,
                                                    new_topic: Topic) -> None:
    topic = new_topic(partitions=1)
    with Producer(server, metadata_max_age_ms=100, linger_ms=0) as producer:
        assert producer.send(topic, b"v", key=b"k").result(10).partition == 0
        admin.add_partitions(topic, 8)
        deadline = time.monotonic() + 10
        seen: set[int] = set()
        while len(seen) < 2 and time.monotonic() < deadline:
            futures = [producer.send(topic, b"v", key=str(i).encode()) for i in range(64)]
            seen |= {future.result(10).partition for future in futures}
            time.sleep(0.05)
        assert len(seen) > 1 and max(seen) < 8  # keyed records now spread over 8 partitions
