"""A consumer-group member's fetches in a cluster: partitions led by brokers other than the
group's coordinator are served (only the coordinator knows the members, so only it checks them;
before, every other leader answered "member is not in group" and the member read nothing)."""

from __future__ import annotations

import time

from logstore import Consumer, Producer
from tests.server.helpers import unique_topic


def test_a_member_reads_partitions_led_by_brokers_other_than_its_coordinator(cluster_factory):
    cluster = cluster_factory(brokers=3)
    topic = unique_topic("group-fetch")
    cluster.create_topic(topic, partitions=3, replication_factor=3)
    assert len({cluster.partition(topic, p).leader_id for p in range(3)}) == 3
    with Producer(cluster.bootstrap, acks="all") as producer:
        for partition in range(3):
            producer.send(topic, b"v%d" % partition, partition=partition)
        producer.flush(30)
    with Consumer(cluster.bootstrap, group_id=unique_topic("readers"),
                  auto_offset_reset="earliest") as consumer:
        consumer.subscribe([topic])
        seen: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            seen += [record.value for record in consumer.poll(timeout=0.5)]
    assert sorted(seen) == [b"v0", b"v1", b"v2"]
