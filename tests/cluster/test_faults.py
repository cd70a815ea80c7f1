"""What a cluster does when etcd or the network fails: real etcd members stopped and killed, a
leader cut off with nftables."""

from __future__ import annotations

import time

import grpc

from logstore.api.v1 import admin_pb2, records_pb2
from logstore.records import encode_batch
from tests.server.helpers import failure, produce_request, read_all, unique_topic

from .cluster_fixture import TIMEOUT_S, etcd_alias
from .nftables import isolated


def produce(cluster, broker, topic, value, acks=records_pb2.ACKS_ALL):
    return cluster.stub(broker).Produce(
        produce_request(topic, encode_batch([value]), 0, acks), timeout=TIMEOUT_S
    ).results[0]


def test_killing_the_etcd_leader_does_not_stop_the_brokers(cluster_factory):
    cluster = cluster_factory(brokers=3, etcd_members=3)
    topic = unique_topic("etcd-leader")
    cluster.create_topic(topic, partitions=1)
    leader = cluster.leader_of(topic)
    cluster.etcd.members[cluster.etcd.leader_index()].kill()
    for i in range(20):
        assert not produce(cluster, leader, topic, b"%d" % i).error.reason
    assert len(read_all(cluster.stub(leader), topic, 0)) == 20
    other = unique_topic("after")
    cluster.create_topic(other, partitions=1)  # metadata changes go on with 2 of 3 members
    assert cluster.partition(other, 0).leader_id > 0


def test_without_etcd_quorum_leaders_serve_and_topic_creation_is_unavailable(cluster_factory):
    cluster = cluster_factory(brokers=3, etcd_members=3)
    topic = unique_topic("no-quorum")
    cluster.create_topic(topic, partitions=1)
    leader = cluster.leader_of(topic)
    stopped = cluster.etcd.members[:2]
    for member in stopped:
        member.kill()
    # longer than the lease: nobody's lease may expire without a quorum
    deadline = time.monotonic() + 4
    sent = 0
    while time.monotonic() < deadline:
        result = produce(cluster, leader, topic, b"q%d" % sent)
        assert not result.error.reason, result.error
        sent += 1
    assert len(read_all(cluster.stub(leader), topic, 0)) == sent
    try:
        cluster.stub(leader).CreateTopic(
            admin_pb2.CreateTopicRequest(name=unique_topic("refused"), partitions=1), timeout=30
        )
        raise AssertionError("CreateTopic succeeded without an etcd quorum")
    except grpc.RpcError as err:
        got = failure(err)
        assert got.code is grpc.StatusCode.UNAVAILABLE
        assert got.reason in ("METADATA_UNAVAILABLE", "ETCD_UNAVAILABLE")
    for member in stopped:
        member.start()
    cluster.etcd.wait_healthy()
    recovered = unique_topic("recovered")
    cluster.wait_for(lambda: cluster.create_topic(recovered, partitions=1) or True, timeout_s=30,
                     what="topic creation after etcd recovered")
    assert cluster.partition(topic, 0).leader_id == leader.broker_id  # no needless election


def test_an_isolated_leader_is_deposed_and_acknowledges_nothing_after(cluster_factory):
    cluster = cluster_factory(brokers=3)
    topic = unique_topic("isolated")
    cluster.create_topic(topic, partitions=1)
    leader = cluster.leader_of(topic)
    assert not produce(cluster, leader, topic, b"before").error.reason
    others = [b for b in cluster.brokers if b is not leader]
    with isolated(leader.host, etcd_alias(leader.broker_id)):
        new = cluster.wait_for(
            lambda: (lambda p: p.leader_id not in (-1, leader.broker_id) and p)(
                cluster.partition(topic, 0, via=others[0])
            ),
            what="a new leader while the old one is cut off",
        )
        new_leader = cluster.broker(new.leader_id)
        assert not produce(cluster, new_leader, topic, b"after").error.reason
    # healed: the old leader learns it was deposed; what it took meanwhile (nothing could reach
    # it) was never acknowledged, and its log converges with the new leader's
    cluster.wait_for_isr(topic, 0, 3, timeout_s=30)
    assert produce(cluster, leader, topic, b"stale").error.reason == "NOT_LEADER"
    values = [r.value for r in read_all(cluster.stub(new_leader), topic, 0)]
    assert values == [b"before", b"after"]


def test_a_paused_leader_is_fenced_when_it_resumes(cluster_factory):
    cluster = cluster_factory(brokers=3)
    topic = unique_topic("paused-leader")
    cluster.create_topic(topic, partitions=1)
    leader = cluster.leader_of(topic)
    leader.process.send_signal(19)
    try:
        new_leader = cluster.wait_for_leader(topic, 0, not_in=(leader.broker_id,))
    finally:
        leader.process.send_signal(18)
    assert not produce(cluster, new_leader, topic, b"new").error.reason
    # the resumed old leader answers NOT_LEADER (fenced by its lost lease, then by the metadata)
    reason = cluster.wait_for(lambda: produce(cluster, leader, topic, b"zombie").error.reason or None,
                              what="the old leader refusing")
    assert reason == "NOT_LEADER"
    assert [r.value for r in read_all(cluster.stub(new_leader), topic, 0)] == [b"new"]
