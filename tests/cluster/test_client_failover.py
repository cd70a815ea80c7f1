"""The Python client against a real 3-broker cluster: bootstrap list, leader routing, and an
idempotent acks=all producer that loses and duplicates nothing while a leader is SIGKILLed."""

from __future__ import annotations

import threading
import time

import pytest

from logstore import Admin, Consumer, Producer
from tests.server.helpers import unique_topic


@pytest.fixture
def cluster(cluster_factory):
    return cluster_factory(brokers=3)


def read_everything(bootstrap, topic, partitions):
    with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign(topic)
        ends = consumer.end_offsets()
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen += consumer.poll(timeout=0.5)
            if all(consumer.position(tp) >= end for tp, end in ends.items()):
                return seen
        raise AssertionError("did not read to the end offsets")


def test_admin_creates_and_describes_a_replicated_topic(cluster):
    topic = unique_topic("admin")
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(topic, partitions=3, replication_factor=3)
        described = admin.describe_cluster()
    assert sorted(b.broker_id for b in described.brokers) == [1, 2, 3]
    assert described.controller_id in (1, 2, 3)
    placements = [p for p in described.partitions if p.topic == topic]
    assert sorted(p.leader_id for p in placements) == [1, 2, 3]


def test_producer_routes_to_leaders_and_survives_a_leader_kill(cluster):
    topic = unique_topic("client-failover")
    cluster.create_topic(topic, partitions=3, replication_factor=3)
    acked: list[bytes] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        with Producer(cluster.bootstrap, acks="all", linger_ms=2) as producer:
            index = 0
            while not stop.is_set():
                values = [b"v-%07d" % (index + i) for i in range(50)]
                index += len(values)
                future = producer.send_batch(topic, values, partition=index % 3)
                try:
                    future.result(timeout=60)
                    acked.extend(values)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failed.append(exc)
                    return

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    cluster.wait_for(lambda: len(acked) >= 1000, what="acks before the kill")
    victim = cluster.leader_of(topic, 0)
    victim.kill()
    cluster.wait_for_leader(topic, 0, not_in=(victim.broker_id,))
    count = len(acked)
    cluster.wait_for(lambda: len(acked) >= count + 1000 or failed, timeout_s=30, what="acks after the kill")
    stop.set()
    thread.join(60)
    assert not failed, failed
    records = read_everything(cluster.bootstrap, topic, 3)
    values = [r.value for r in records]
    assert len(values) == len(set(values)), "duplicates"
    assert set(acked) <= set(values), "acknowledged records lost"
