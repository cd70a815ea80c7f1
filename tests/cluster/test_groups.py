"""Consumer groups on a real 3-broker cluster: ``__consumer_offsets`` replicated, the coordinator
of a group the leader of its partition, committed offsets and fencing across a SIGKILL of the
coordinator's broker, and commits refused below min ISR.

One cluster for the module (~30 s on a loaded box: three brokers, two SIGKILLs waited out by
the 2 s lease); the tests run in file order and the later ones build on the earlier kills.
"""

from __future__ import annotations

import time

import grpc
import pytest

from logstore import Admin, Consumer, Producer
from logstore.api.v1 import cluster_pb2, groups_pb2
from logstore.broker.internal import OFFSETS_TOPIC, partition_for
from logstore.errors import FencedMemberEpochError, UnknownMemberError
from tests.server.helpers import expect_failure, unique_topic

from .cluster_fixture import TIMEOUT_S

GROUP = cluster_pb2.FindCoordinatorRequest.GROUP
RECORDS_PER_PARTITION = 100


@pytest.fixture(scope="module")
def cluster(module_cluster_factory):
    return module_cluster_factory(brokers=3)


def offsets_topic(cluster):
    return cluster.internal_topic(OFFSETS_TOPIC)


def groups_led_by(topic, broker_id, count, prefix):
    """``count`` group ids whose offsets partition ``broker_id`` leads."""
    names = (f"{prefix}-{i}" for i in range(10_000))
    led = [n for n in names if topic.partitions[partition_for(n, len(topic.partitions))].leader_id == broker_id]
    return led[:count]


def coordinator_stub(cluster, group_id):
    found = cluster.wait_for(
        lambda: cluster.stub(cluster.running()[0]).FindCoordinator(
            cluster_pb2.FindCoordinatorRequest(key_type=GROUP, key=group_id), timeout=TIMEOUT_S),
        what=f"a coordinator of {group_id}",
    )
    return cluster.stub(cluster.broker(found.broker_id)), found.broker_id


def commit_request(group_id, topic, offset, member_id="", member_epoch=0):
    return groups_pb2.CommitOffsetsRequest(
        group_id=group_id, member_id=member_id, member_epoch=member_epoch,
        offsets=[groups_pb2.OffsetCommit(topic=topic, partition=0, offset=offset)],
    )


def test_the_offsets_topic_is_replicated_and_find_coordinator_names_its_leader(cluster):
    topic = offsets_topic(cluster)
    assert topic.internal and topic.replication_factor == 3
    group_id = "found"
    leader = topic.partitions[partition_for(group_id, len(topic.partitions))].leader_id
    request = cluster_pb2.FindCoordinatorRequest(key_type=GROUP, key=group_id)
    for broker in cluster.brokers:
        found = cluster.wait_for(
            lambda b=broker: (f := cluster.stub(b).FindCoordinator(request, timeout=TIMEOUT_S)).broker_id == leader and f,
            what=f"broker {broker.broker_id} naming the coordinator",
        )
        assert found.address == cluster.broker(leader).address


def test_a_broker_that_does_not_coordinate_the_group_answers_not_coordinator(cluster):
    topic = offsets_topic(cluster)
    group_id = "elsewhere"
    leader = topic.partitions[partition_for(group_id, len(topic.partitions))].leader_id
    other = next(b for b in cluster.brokers if b.broker_id != leader)
    error = expect_failure(
        cluster.stub(other).FetchOffsets, groups_pb2.FetchOffsetsRequest(group_id=group_id),
        grpc.StatusCode.UNAVAILABLE, "NOT_COORDINATOR",
    )
    assert error.metadata["coordinator_id"] == str(leader)


def test_admin_group_calls_go_to_each_group_coordinator(cluster):
    topic = offsets_topic(cluster)
    leaders = sorted({p.leader_id for p in topic.partitions})  # (leaderships may have moved)
    names = [groups_led_by(topic, leader, 1, "admin")[0] for leader in leaders]
    topic_name = unique_topic("admin-groups")
    cluster.create_topic(topic_name, partitions=1)
    for name in names:
        stub, _ = coordinator_stub(cluster, name)
        assert stub.CommitOffsets(commit_request(name, topic_name, 0), timeout=TIMEOUT_S).results[0].error.reason == ""
    with Admin(cluster.bootstrap) as admin:
        for name in names:
            assert [(o.topic, o.offset) for o in admin.fetch_committed(name)] == [(topic_name, 0)]
            assert admin.describe_group(name).group_id == name
        assert set(names) <= {g.group_id for g in admin.list_groups()}


def test_a_coordinator_without_a_copy_of_the_partition_accepts_a_commit_up_to_its_leaders_end(cluster):
    topic_name = unique_topic("no-copy")
    cluster.create_topic(topic_name, partitions=1, replication_factor=1)
    leader = cluster.leader_of(topic_name)
    with Producer(cluster.bootstrap, acks="all") as producer:
        producer.send_batch(topic_name, [b"x"] * 10, partition=0).result(timeout=30)
    other = next(b for b in cluster.brokers if b is not leader)
    (group_id,) = groups_led_by(offsets_topic(cluster), other.broker_id, 1, "no-copy")
    stub, coordinator = coordinator_stub(cluster, group_id)
    assert coordinator == other.broker_id
    result = stub.CommitOffsets(commit_request(group_id, topic_name, 10), timeout=TIMEOUT_S).results[0]
    assert result.error.reason == "", result.error


@pytest.fixture(scope="module")
def failover(cluster):
    """A group that committed through a Consumer and a raw member that joined and committed,
    both coordinated by one broker, which is then SIGKILLed."""
    topic_name = unique_topic("groups")
    cluster.create_topic(topic_name, partitions=2)
    with Producer(cluster.bootstrap, acks="all") as producer:
        for partition in (0, 1):
            values = [b"p%d-%03d" % (partition, i) for i in range(RECORDS_PER_PARTITION)]
            producer.send_batch(topic_name, values, partition=partition).result(timeout=30)
    offsets = offsets_topic(cluster)
    victim = cluster.broker(offsets.partitions[0].leader_id)
    resume, zombie, live = groups_led_by(offsets, victim.broker_id, 3, "failover")

    with Consumer(cluster.bootstrap, group_id=resume, auto_offset_reset="earliest",
                  enable_auto_commit=False) as consumer:
        consumer.subscribe(topic_name)
        seen = 0
        deadline = time.monotonic() + 30
        while seen < RECORDS_PER_PARTITION and time.monotonic() < deadline:
            seen += len(consumer.poll(max_records=30, timeout=0.5))
        assert seen >= RECORDS_PER_PARTITION // 2, "consumed too little before the kill"
        committed = consumer.commit()

    follower = Consumer(cluster.bootstrap, group_id=live, auto_offset_reset="earliest",
                        enable_auto_commit=False)
    follower.subscribe(topic_name)
    deadline = time.monotonic() + 30
    while not follower.poll(timeout=0.5) and time.monotonic() < deadline:
        pass
    follower.commit()

    stub = cluster.stub(victim)
    joined = stub.GroupHeartbeat(groups_pb2.GroupHeartbeatRequest(
        group_id=zombie, member_epoch=0, topics=[topic_name], session_timeout_ms=30_000,
    ), timeout=TIMEOUT_S)
    assert stub.CommitOffsets(commit_request(zombie, topic_name, 7, joined.member_id, joined.member_epoch),
                              timeout=TIMEOUT_S).results[0].error.reason == ""

    victim.kill()
    after = offsets_topic(cluster)
    assert {p.leader_id for p in after.partitions}.isdisjoint({victim.broker_id})
    yield {"topic": topic_name, "resume": resume, "zombie": zombie, "committed": committed,
           "member": joined, "victim": victim, "follower": follower}
    follower.close()


def test_committed_offsets_survive_a_sigkill_of_the_coordinator_and_consumers_resume_from_them(cluster, failover):
    topic_name, committed = failover["topic"], failover["committed"]
    assert any(offset > 0 for offset in committed.values())
    with Consumer(cluster.bootstrap, group_id=failover["resume"], auto_offset_reset="earliest",
                  enable_auto_commit=False) as consumer:
        consumer.subscribe(topic_name)
        records = []
        deadline = time.monotonic() + 30
        expected = sum(RECORDS_PER_PARTITION - committed.get(tp, 0) for tp in committed)
        while len(records) < expected and time.monotonic() < deadline:
            records += consumer.poll(timeout=0.5)
        assert consumer.committed(list(committed)) == committed
    for tp, offset in committed.items():
        got = [r.offset for r in records if r.partition == tp.partition]
        assert got == list(range(offset, RECORDS_PER_PARTITION)), f"{tp}: resumed at {got[:1]}, committed {offset}"


def test_a_live_consumer_follows_its_group_to_the_new_coordinator(cluster, failover):
    consumer = failover["follower"]
    deadline = time.monotonic() + 30
    ends = None
    while time.monotonic() < deadline:
        consumer.poll(timeout=0.5)
        held = consumer.assignment()
        if len(held) == 2:
            ends = ends or consumer.end_offsets()
            if all(consumer.position(tp) >= ends[tp] for tp in held):
                try:
                    if consumer.commit() == ends:
                        break
                except (UnknownMemberError, FencedMemberEpochError):
                    continue  # read under the membership the kill ended: it rejoins, reads again
    else:
        raise AssertionError(f"the consumer did not commit its ends after the kill (holds {consumer.assignment()})")
    assert consumer.committed() == ends


def test_a_zombie_member_is_fenced_by_the_new_coordinator(cluster, failover):
    topic_name, zombie, member = failover["topic"], failover["zombie"], failover["member"]
    stub, coordinator = coordinator_stub(cluster, zombie)
    assert coordinator != failover["victim"].broker_id
    expect_failure(stub.CommitOffsets, commit_request(zombie, topic_name, 50, member.member_id, member.member_epoch),
                   grpc.StatusCode.NOT_FOUND, "UNKNOWN_MEMBER")
    expect_failure(stub.GroupHeartbeat, groups_pb2.GroupHeartbeatRequest(
        group_id=zombie, member_id=member.member_id, member_epoch=member.member_epoch,
    ), grpc.StatusCode.NOT_FOUND, "UNKNOWN_MEMBER")
    fetched = stub.FetchOffsets(groups_pb2.FetchOffsetsRequest(group_id=zombie), timeout=TIMEOUT_S)
    assert [(o.topic, o.partition, o.offset) for o in fetched.offsets] == [(topic_name, 0, 7)]


def test_a_commit_is_refused_with_not_enough_replicas_below_min_isr(cluster, failover):
    group_id = failover["resume"]
    stub, coordinator = coordinator_stub(cluster, group_id)
    other = next(b for b in cluster.running() if b.broker_id != coordinator)
    other.kill()
    offsets = cluster.metadata([OFFSETS_TOPIC]).topics[0]
    partition = partition_for(group_id, len(offsets.partitions))
    cluster.wait_for_isr(OFFSETS_TOPIC, partition, 1)
    expect_failure(stub.CommitOffsets, commit_request(group_id, failover["topic"], 3),
                   grpc.StatusCode.UNAVAILABLE, "NOT_ENOUGH_REPLICAS")
