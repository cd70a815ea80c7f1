"""Share groups on a real 3-broker cluster: a share-partition is served by its partition's leader,
its state is replicated in ``__share_state.<topic>``, and it survives a SIGKILL of that leader.

One cluster for the module (three brokers, one SIGKILL waited out by the 2 s lease).
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from logstore import Admin, Consumer, Producer, ShareConsumer, TaskQueue
from logstore.api.v1 import share_pb2
from logstore.broker.share.leadership import state_topic
from logstore.client.share_stream import ShareStream
from logstore.errors import LogstoreError, NotEnoughReplicasError, NotLeaderError
from tests.server.helpers import expect_failure, unique_topic

from .cluster_fixture import TIMEOUT_S

PARTITIONS = 3
TASKS_PER_PARTITION = 20
#: The members' lock: short, so a record a member lost to the kill is not what the test waits on.
LOCK_MS = 3000
#: The holder's lock: longer than the test, so its records can only come back by the failover.
HOLD_LOCK_MS = 120_000


@pytest.fixture(scope="module")
def cluster(module_cluster_factory):
    return module_cluster_factory(brokers=3)


def fetch_request(group_id, topic, **options):
    return share_pb2.ShareFetchRequest(group_id=group_id, member_id="raw", topics=[topic], max_records=1,
                                       **options)


def test_a_share_fetch_is_served_by_the_partitions_leader_and_refused_elsewhere(cluster):
    topic = unique_topic("share-leader")
    cluster.create_topic(topic, partitions=1)
    with Producer(cluster.bootstrap, acks="all") as producer:
        producer.send_batch(topic, [b"a", b"b"], partition=0).result(timeout=30)
    leader = cluster.leader_of(topic)
    # the first fetch creates the topic's state topic; the leader serves once it leads it
    response = cluster.wait_for(
        lambda: cluster.stub(leader).ShareFetch(fetch_request("placed", topic), timeout=TIMEOUT_S).partitions,
        what="the leader serving the share-partition")
    assert [(p.topic, p.partition, list(p.first_offsets)) for p in response] == [(topic, 0, [0])]
    state = cluster.wait_for_leader(state_topic(topic))
    assert state.broker_id == leader.broker_id  # the controller keeps it with the data's leader
    other = next(b for b in cluster.brokers if b is not leader)
    failure = expect_failure(cluster.stub(other).ShareFetch, fetch_request("placed", topic),
                             grpc.StatusCode.UNAVAILABLE, "NOT_LEADER")
    assert failure.metadata["leader_id"] == str(leader.broker_id)
    ack = share_pb2.ShareAcknowledgeRequest(
        group_id="placed", member_id="raw", acknowledgements=[share_pb2.ShareAcknowledgement(
            topic=topic, partition=0, first_offset=0, last_offset=0, kind=share_pb2.ACKNOWLEDGE_ACCEPT)])
    expect_failure(cluster.stub(other).ShareAcknowledge, ack, grpc.StatusCode.UNAVAILABLE, "NOT_LEADER")
    stream = ShareStream(cluster.stub(other), other.address)  # a stream: NOT_LEADER too
    try:
        stream.send(fetch_request("placed", topic))
        with pytest.raises(NotLeaderError):
            stream.receive()
    finally:
        stream.close()


def test_deleting_a_topic_deletes_its_share_state_topic(cluster):
    topic = unique_topic("share-deleted")
    cluster.create_topic(topic, partitions=1)
    leader = cluster.leader_of(topic)
    cluster.wait_for(lambda: cluster.stub(leader).ShareFetch(fetch_request("gone", topic), timeout=TIMEOUT_S),
                     what="the share-partition served")
    assert (leader.data_dir / f"{state_topic(topic)}-0").exists()
    with Admin(cluster.bootstrap) as admin:
        admin.delete_topic(topic)

    def gone() -> bool:
        answers = [cluster.metadata([state_topic(topic)], via=b).topics[0] for b in cluster.running()]
        return all(t.error.reason == "UNKNOWN_TOPIC" for t in answers) and all(
            not (b.data_dir / f"{state_topic(topic)}-0").exists() for b in cluster.running())

    cluster.wait_for(gone, what="the state topic deleted everywhere")


def test_a_rejected_record_is_dead_lettered_in_the_cluster_with_its_headers(cluster):
    topic, dlq, group = unique_topic("share-dlq"), unique_topic("share-dlq-copies"), "dlq-group"
    cluster.create_topic(topic, partitions=1)
    cluster.create_topic(dlq, partitions=PARTITIONS)  # (a cluster does not create it)
    with Producer(cluster.bootstrap, acks="all") as producer:
        producer.send_batch(topic, [b"poison"], partition=0).result(timeout=30)
    with Admin(cluster.bootstrap) as admin:
        admin.alter_share_group_config(group, {"dead_letter_topic": dlq})
        # every broker follows the config (etcd); the leader's share-partition has it
        cluster.wait_for(lambda: admin.describe_share_group(group).config.get("dead_letter_topic") == dlq,
                         what="the config known")
    with ShareConsumer(cluster.bootstrap, group, topic) as consumer:
        records = []
        deadline = time.monotonic() + 20
        while not records and time.monotonic() < deadline:
            records = consumer.poll(timeout=0.5)
        (record,) = records
        record.reject(error="bad input")
        assert consumer.commit() == []
    copies = []
    with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as reader:
        reader.assign(dlq)
        deadline = time.monotonic() + 20
        while not copies and time.monotonic() < deadline:
            copies = reader.poll(timeout=0.5)
    (copy,) = copies
    headers = dict(copy.headers)
    assert copy.value == b"poison"
    assert {k: headers[k] for k in ("topic", "partition", "offset", "delivery_count", "last_error")} == {
        "topic": topic.encode(), "partition": b"0", "offset": b"0", "delivery_count": b"1",
        "last_error": b"bad input"}


def test_a_task_queue_runs_on_the_cluster_with_more_workers_than_partitions(cluster):
    topic = unique_topic("share-tasks")
    cluster.create_topic(topic, partitions=2)
    values = [b"task-%02d" % i for i in range(30)]
    with Producer(cluster.bootstrap, acks="all") as producer:
        for partition in (0, 1):
            producer.send_batch(topic, values[partition::2], partition=partition).result(timeout=30)
    done: list[bytes] = []
    queue = TaskQueue(cluster.bootstrap, "cluster-tasks", topic, lambda r: done.append(r.value), workers=4)
    thread = threading.Thread(target=queue.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while queue.metrics()["processed"] < len(values) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        queue.stop()
        thread.join(30)
    assert sorted(done) == values


class History:
    """What the members saw: deliveries (partition, offset, delivery count), confirmed accepts."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[int, int, int]] = []
        self.accepted: dict[tuple[int, int], int] = {}  # confirmed by a commit that returned
        self.done_before: set[tuple[int, int]] = set()  # refused as done: a lost answer's accept

    def commit(self, consumer, records) -> list[LogstoreError]:
        consumer.acknowledge(records, "accept")
        refused = consumer.commit(raise_refused=False)
        bad = {(e.fields["partition"], o) for e in refused for o in range(e.first_offset, e.last_offset + 1)}
        for e in refused:
            if e.fields.get("state") in ("done", "acknowledged"):
                self.done_before |= {(e.fields["partition"], o) for o in range(e.first_offset, e.last_offset + 1)}
        for r in records:
            if (r.partition, r.offset) not in bad:
                self.accepted[(r.partition, r.offset)] = self.accepted.get((r.partition, r.offset), 0) + 1
        return refused

    def round(self, members) -> None:
        for consumer in members:
            try:
                records = consumer.poll(timeout=0.2, max_records=4)
                self.deliveries += [(r.partition, r.offset, r.delivery_count) for r in records]
                if records:
                    self.commit(consumer, records)
            except LogstoreError:
                time.sleep(0.05)  # a broker gone or no leader yet: the next round goes on


@pytest.fixture(scope="module")
def failover(cluster):
    """Tasks consumed by three members; a holder keeps records of every partition locked; the
    leader of partition 0 is SIGKILLed with a third of the tasks accepted."""
    topic = unique_topic("share-failover")
    group = "share-failover"
    cluster.create_topic(topic, partitions=PARTITIONS)
    with Producer(cluster.bootstrap, acks="all") as producer:
        for partition in range(PARTITIONS):
            values = [b"p%d-%02d" % (partition, i) for i in range(TASKS_PER_PARTITION)]
            producer.send_batch(topic, values, partition=partition).result(timeout=30)
    members = [ShareConsumer(cluster.bootstrap, group, topic, lock_ms=LOCK_MS) for _ in range(3)]
    holder = ShareConsumer(cluster.bootstrap, group, topic, lock_ms=HOLD_LOCK_MS)
    history = History()
    deadline = time.monotonic() + 30
    held = []
    while len({r.partition for r in held}) < PARTITIONS and time.monotonic() < deadline:
        try:
            held += holder.poll(timeout=0.2, max_records=PARTITIONS * 2)
        except LogstoreError:
            time.sleep(0.1)
    assert {r.partition for r in held} == set(range(PARTITIONS)), "the holder got no records of some partition"
    history.deliveries += [(r.partition, r.offset, r.delivery_count) for r in held]
    while len(history.accepted) < PARTITIONS * TASKS_PER_PARTITION // 3 and time.monotonic() < deadline:
        history.round(members)
    assert len(history.accepted) >= PARTITIONS * TASKS_PER_PARTITION // 3, "consumed too little before the kill"
    victim = cluster.leader_of(topic, 0)
    before = {(r.partition, r.offset) for r in held if r.partition == 0}
    victim.kill()
    leader = cluster.wait_for_leader(topic, 0, not_in=(victim.broker_id,))
    cluster.wait_for(lambda: cluster.partition(state_topic(topic), 0).leader_id == leader.broker_id,
                     what="the state partition led with its data partition")
    yield {"topic": topic, "group": group, "members": members, "holder": holder, "held": held,
           "held_on_victim": before, "history": history, "victim": victim}
    for consumer in (*members, holder):
        try:
            consumer.close()
        except LogstoreError:
            pass


def test_acks_of_records_acquired_from_the_killed_leader_are_refused_and_the_others_kept(cluster, failover):
    holder, history = failover["holder"], failover["history"]
    deadline = time.monotonic() + 30
    refused: list[LogstoreError] = []
    holder.acknowledge(failover["held"], "accept")
    while time.monotonic() < deadline:
        try:
            refused += holder.commit(raise_refused=False)
        except LogstoreError:
            time.sleep(0.2)  # the old leader gone, the new one not known yet: queued again
            continue
        if not holder.pending:
            break
    assert not holder.pending, "the holder's acknowledgements never reached the leaders"
    refused_offsets = {(e.fields["partition"], o) for e in refused for o in range(e.first_offset, e.last_offset + 1)}
    assert {e.reason for e in refused} == {"RECORD_NOT_ACQUIRED"}
    assert refused_offsets == failover["held_on_victim"]  # those came back at the new leader
    for r in failover["held"]:
        if (r.partition, r.offset) not in refused_offsets:
            history.accepted[(r.partition, r.offset)] = history.accepted.get((r.partition, r.offset), 0) + 1


def test_members_consume_every_task_across_the_failover_each_accepted_once(cluster, failover):
    members, history = failover["members"], failover["history"]
    total = PARTITIONS * TASKS_PER_PARTITION
    deadline = time.monotonic() + 60
    while len(history.accepted.keys() | history.done_before) < total and time.monotonic() < deadline:
        history.round(members)
    everything = {(p, o) for p in range(PARTITIONS) for o in range(TASKS_PER_PARTITION)}
    assert history.accepted.keys() | history.done_before == everything, "tasks lost"
    assert all(count == 1 for count in history.accepted.values()), "a task accepted twice"
    # the records the holder held on the killed leader came back (their lock had 2 minutes to go)
    # with their delivery count kept: their next delivery is their second
    again = {(p, o): n for p, o, n in history.deliveries if (p, o) in failover["held_on_victim"] and n > 1}
    assert set(again) == failover["held_on_victim"] and set(again.values()) == {2}


def test_describe_after_the_failover_shows_the_kept_state_from_the_new_leaders(cluster, failover):
    with Admin(cluster.bootstrap) as admin:
        description = admin.describe_share_group(failover["group"])
        assert [(p.topic, p.partition) for p in description.partitions] == [
            (failover["topic"], p) for p in range(PARTITIONS)]
        for p in description.partitions:
            assert (p.start_offset, p.available, p.acquired) == (TASKS_PER_PARTITION, 0, 0), p
        victim_partition = description.partitions[0]
        assert victim_partition.redeliveries >= len(failover["held_on_victim"])
        assert failover["group"] in {g.group_id for g in admin.list_share_groups()}
        for consumer in (*failover["members"], failover["holder"]):
            consumer.close()  # (nothing held: a reset is refused while records are acquired)
        reset = admin.reset_share_group(failover["group"], failover["topic"], to="earliest")
        assert sorted((p.partition, p.start_offset, p.available) for p in reset) == [
            (p, 0, TASKS_PER_PARTITION) for p in range(PARTITIONS)]


def test_below_min_isr_the_state_partition_takes_no_write(cluster, failover):
    """Last in the module: it leaves one broker running. With min_insync_replicas=2 a fetch
    (it would write acquisitions) is refused and nothing is handed out."""
    topic = unique_topic("share-min-isr")
    cluster.create_topic(topic, partitions=1, replication_factor=2, min_insync_replicas="2")
    with Producer(cluster.bootstrap, acks="all") as producer:
        producer.send_batch(topic, [b"t"], partition=0).result(timeout=30)
    leader = cluster.leader_of(topic)
    request = fetch_request("min-isr", topic)
    cluster.wait_for(lambda: cluster.stub(leader).ShareFetch(
        fetch_request("warm", topic, max_wait_ms=0), timeout=TIMEOUT_S), what="the share-partition served")
    other = next(b for b in cluster.running() if b is not leader)
    other.kill()
    cluster.wait_for_isr(state_topic(topic), 0, 1)
    with pytest.raises(NotEnoughReplicasError):
        with ShareConsumer(leader.address, "min-isr", topic) as consumer:
            consumer.poll(timeout=0)
    failure = expect_failure(cluster.stub(leader).ShareFetch, request, grpc.StatusCode.UNAVAILABLE,
                             "NOT_ENOUGH_REPLICAS")
    assert failure.metadata["min_insync_replicas"] == "2"
