"""Producer ids and transactional ids on a real 3-broker cluster: ``__transaction_state``
replicated, producer ids unique across brokers (reserved in blocks from etcd), the transaction
coordinator the leader of ``__transaction_state``, its state surviving a SIGKILL of its broker.

One cluster for the module (~20 s on a loaded box, one SIGKILL waited out by the 2 s lease); the
tests run in file order and the last one kills the coordinator's broker."""

from __future__ import annotations

import contextlib
import threading
import time

import grpc
import pytest

from logstore import Admin, Consumer, Producer, TopicPartition
from logstore.api.v1 import cluster_pb2, transactions_pb2
from logstore.broker.internal import OFFSETS_TOPIC, TRANSACTIONS_TOPIC, partition_for
from logstore.cluster.producer_ids import FIRST_PRODUCER_ID
from logstore.errors import LogstoreError, ProducerFencedError
from tests.server.helpers import expect_failure, unique_topic

from .cluster_fixture import TIMEOUT_S

TRANSACTION = cluster_pb2.FindCoordinatorRequest.TRANSACTION


@pytest.fixture(scope="module")
def cluster(module_cluster_factory):
    return module_cluster_factory(brokers=3)


def transactions_topic(cluster):
    return cluster.internal_topic(TRANSACTIONS_TOPIC)


def test_the_transaction_state_topic_is_replicated(cluster):
    topic = transactions_topic(cluster)
    assert topic.internal and topic.replication_factor == 3 and len(topic.partitions) == 1


def test_two_brokers_never_hand_out_the_same_producer_id(cluster):
    request = transactions_pb2.InitProducerIdRequest()
    ids = [
        cluster.stub(broker).InitProducerId(request, timeout=TIMEOUT_S)
        for broker in cluster.brokers for _ in range(3)
    ]
    producer_ids = [answer.producer_id for answer in ids]
    assert len(set(producer_ids)) == len(producer_ids) == 9
    assert all(p >= FIRST_PRODUCER_ID and answer.producer_epoch == 0 for p, answer in zip(producer_ids, ids, strict=True))


def coordinator(cluster):
    return cluster.broker(transactions_topic(cluster).partitions[0].leader_id)


def init(stub, transactional_id):
    request = transactions_pb2.InitProducerIdRequest(transactional_id=transactional_id)
    return stub.InitProducerId(request, timeout=TIMEOUT_S)


def test_find_coordinator_names_the_leader_of_the_transaction_state(cluster):
    leader = coordinator(cluster)
    request = cluster_pb2.FindCoordinatorRequest(key_type=TRANSACTION, key="tx-found")
    for broker in cluster.brokers:
        found = cluster.wait_for(
            lambda b=broker: (f := cluster.stub(b).FindCoordinator(request, timeout=TIMEOUT_S)).broker_id
            == leader.broker_id and f,
            what=f"broker {broker.broker_id} naming the transaction coordinator",
        )
        assert found.address == leader.address


def test_only_the_coordinator_registers_a_transactional_id(cluster):
    leader = coordinator(cluster)
    other = next(b for b in cluster.brokers if b.broker_id != leader.broker_id)
    error = expect_failure(
        cluster.stub(other).InitProducerId,
        transactions_pb2.InitProducerIdRequest(transactional_id="tx-elsewhere"),
        grpc.StatusCode.UNAVAILABLE, "NOT_COORDINATOR",
    )
    assert error.metadata["coordinator_id"] == str(leader.broker_id)
    first = init(cluster.stub(leader), "tx-elsewhere")
    again = init(cluster.stub(leader), "tx-elsewhere")
    assert first.producer_id >= FIRST_PRODUCER_ID
    assert (again.producer_id, again.producer_epoch) == (first.producer_id, first.producer_epoch + 1)


def spread_topic(cluster, prefix, partitions=3):
    """A topic with ``partitions`` partitions whose leaders are not all one broker."""
    topic = unique_topic(prefix)
    cluster.create_topic(topic, partitions=partitions)
    leaders = {cluster.partition(topic, p).leader_id for p in range(partitions)}
    assert len(leaders) > 1, f"{topic}: every partition led by one broker"
    return topic


def read_committed(cluster, topic, partitions, group=None):
    """Every record of ``topic`` a read_committed consumer sees, up to the end offsets."""
    with Consumer(cluster.bootstrap, isolation_level="read_committed", auto_offset_reset="earliest",
                  **({"group_id": group} if group else {})) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        ends = consumer.end_offsets()
        values = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < end for tp, end in ends.items()) and time.monotonic() < deadline:
            values += [r.value for r in consumer.poll(timeout=0.5)]
        return values


def test_commit_and_abort_across_partitions_led_by_different_brokers(cluster):
    topic = spread_topic(cluster, "tx-spread")
    with Producer(cluster.bootstrap, transactional_id="tx-spread", linger_ms=1) as producer:
        producer.init_transactions()
        producer.begin_transaction()
        for p in range(3):
            producer.send(topic, f"kept-{p}".encode(), partition=p)
        producer.commit_transaction()
        producer.begin_transaction()
        for p in range(3):
            producer.send(topic, f"dropped-{p}".encode(), partition=p)
        producer.flush()
        producer.abort_transaction()
        producer.begin_transaction()  # the next transaction waits for the abort's markers
        producer.send(topic, b"kept-again", partition=0)
        producer.commit_transaction()
    assert sorted(read_committed(cluster, topic, 3)) == [b"kept-0", b"kept-1", b"kept-2", b"kept-again"]


def test_transactional_offsets_go_to_the_group_coordinator_and_count_only_on_commit(cluster):
    topic = spread_topic(cluster, "tx-offsets", partitions=2)
    group = unique_topic("tx-offsets-group")
    with Producer(cluster.bootstrap, transactional_id="tx-offsets", linger_ms=1) as producer:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, b"a", partition=0).result(timeout=TIMEOUT_S)
        producer.send_offsets_to_transaction({TopicPartition(topic, 0): 1}, group)
        producer.abort_transaction()
        with Admin(cluster.bootstrap) as admin:
            assert admin.fetch_committed(group) == []
        producer.begin_transaction()
        producer.send(topic, b"b", partition=1).result(timeout=TIMEOUT_S)  # (an offset <= its log end)
        producer.send_offsets_to_transaction({TopicPartition(topic, 0): 1, TopicPartition(topic, 1): 1}, group)
        producer.commit_transaction()
    with Admin(cluster.bootstrap) as admin:
        committed = admin.fetch_committed(group)
    assert {(c.topic, c.partition): c.offset for c in committed} == {(topic, 0): 1, (topic, 1): 1}
    assert read_committed(cluster, topic, 2) == [b"b"]


def test_a_zombie_producer_is_fenced_on_the_partitions_it_wrote_to(cluster):
    topic = spread_topic(cluster, "tx-zombie", partitions=2)
    zombie = Producer(cluster.bootstrap, transactional_id="tx-zombie", linger_ms=1)
    successor = Producer(cluster.bootstrap, transactional_id="tx-zombie", linger_ms=1)
    try:
        zombie.init_transactions()
        zombie.begin_transaction()
        zombie.send(topic, b"zombie-open", partition=0).result(timeout=TIMEOUT_S)
        successor.init_transactions()  # aborts the zombie's transaction, markers at a new epoch
        with pytest.raises(ProducerFencedError):
            zombie.send(topic, b"zombie-late", partition=0).result(timeout=TIMEOUT_S)
        successor.begin_transaction()
        successor.send(topic, b"successor", partition=1)
        successor.commit_transaction()
    finally:
        zombie.close()
        successor.close()
    assert read_committed(cluster, topic, 2) == [b"successor"]


def test_a_timed_out_transaction_is_aborted_through_the_markers(cluster):
    topic = spread_topic(cluster, "tx-timeout", partitions=2)
    with Producer(cluster.bootstrap, transactional_id="tx-timeout", linger_ms=1,
                  transaction_timeout_ms=300) as producer:
        producer.init_transactions()
        producer.begin_transaction()
        for p in range(2):
            producer.send(topic, b"left-open", partition=p).result(timeout=TIMEOUT_S)
        with Consumer(cluster.bootstrap, isolation_level="read_committed") as consumer:
            parts = [TopicPartition(topic, p) for p in range(2)]
            consumer.assign(parts)
            # the last stable offsets pass the records once the abort markers are written
            cluster.wait_for(lambda: set(consumer.end_offsets(parts).values()) == {2},
                             what="the timed-out transaction's abort markers")
        with pytest.raises(ProducerFencedError):  # the epoch was bumped by the abort
            producer.commit_transaction()
    assert read_committed(cluster, topic, 2) == []


COPY_RECORDS = 3000


def copy_exactly_once(cluster, source, sink, group, stop_at, copied):
    """The consume-transform-produce loop: each poll's copies and the consumer's positions go in
    one transaction. A failed transaction is aborted and the consumer goes back to the group's
    committed offsets (the coordinators may be moving). Returns when the source is copied."""
    producer = Producer(cluster.bootstrap, transactional_id=f"{group}-copier", linger_ms=1)
    consumer = Consumer(cluster.bootstrap, group_id=group, enable_auto_commit=False,
                        auto_offset_reset="earliest", isolation_level="read_committed",
                        fetch_max_wait_ms=100, session_timeout_ms=6000)
    try:
        producer.init_transactions()
        consumer.subscribe([source])
        while time.monotonic() < stop_at:
            records = consumer.poll(max_records=200, timeout=0.5)
            if records:
                try:
                    producer.begin_transaction()
                    for record in records:
                        producer.send(sink, record.value, key=record.key)
                    producer.send_offsets_to_transaction(consumer.position_offsets(), consumer.group_metadata())
                    producer.commit_transaction()
                    copied.append(len(records))
                except LogstoreError:
                    with contextlib.suppress(LogstoreError):
                        producer.abort_transaction()
                    for tp, offset in consumer.committed(consumer.assignment()).items():
                        consumer.seek(tp, 0 if offset is None else offset)
                continue
            held = consumer.assignment()
            if len(held) == 3 and all(consumer.position(tp) >= end for tp, end in consumer.end_offsets(held).items()):
                return
    finally:
        consumer.close()
        producer.close()
    raise AssertionError(f"the copy did not finish in time ({sum(copied)} records copied)")


def test_an_exactly_once_copy_survives_a_sigkill_of_the_transaction_coordinator(cluster):
    """read_committed consume -> transactional produce + send_offsets_to_transaction, the
    coordinator's broker SIGKILLed mid-copy — the group's coordinator too (its offsets partition
    is led there): the sink holds every record exactly once."""
    source, sink = spread_topic(cluster, "eos-source"), spread_topic(cluster, "eos-sink")
    victim = coordinator(cluster)
    offsets = cluster.internal_topic(OFFSETS_TOPIC).partitions
    group = next((g for g in (unique_topic("eos-group") for _ in range(1000))
                 if offsets[partition_for(g, len(offsets))].leader_id == victim.broker_id), None)
    assert group is not None, f"broker {victim.broker_id} leads no {OFFSETS_TOPIC} partition"
    values = [b"%06d" % i for i in range(COPY_RECORDS)]
    with Producer(cluster.bootstrap, enable_idempotence=True) as producer:
        for p in range(3):
            producer.send_batch(source, values[p::3], partition=p).result(timeout=TIMEOUT_S)
    copied: list[int] = []
    errors: list[BaseException] = []

    def run():
        try:
            copy_exactly_once(cluster, source, sink, group, time.monotonic() + 120, copied)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    cluster.wait_for(lambda: sum(copied) >= COPY_RECORDS // 4, what="a quarter copied")
    victim.kill()
    thread.join(timeout=150)
    assert not thread.is_alive() and not errors, errors
    assert sum(copied) > COPY_RECORDS // 4  # the copy went on after the kill
    out = read_committed(cluster, sink, 3)
    assert len(out) == COPY_RECORDS and sorted(out) == values  # 0 lost, 0 duplicates
    victim.restart()
    cluster.wait_for_isr(TRANSACTIONS_TOPIC, 0, 3, timeout_s=30)


def test_a_transactional_id_survives_a_sigkill_of_its_coordinator_and_the_zombie_is_fenced(cluster):
    victim = coordinator(cluster)
    zombie = init(cluster.stub(victim), "tx-failover")
    victim.kill()
    cluster.wait_for_leader(TRANSACTIONS_TOPIC, 0, not_in=(victim.broker_id,))
    producer = Producer(cluster.bootstrap, transactional_id="tx-failover")
    try:
        producer.init_transactions()  # finds the new coordinator, which loaded the replicated state
        new = coordinator(cluster)
        assert new.broker_id != victim.broker_id
        error = expect_failure(
            cluster.stub(new).EndTxn,
            transactions_pb2.EndTxnRequest(transactional_id="tx-failover", producer_id=zombie.producer_id,
                                           producer_epoch=zombie.producer_epoch, commit=True),
            grpc.StatusCode.FAILED_PRECONDITION, "PRODUCER_FENCED",
        )
        assert error.metadata["producer_id"] == str(zombie.producer_id)
        again = init(cluster.stub(new), "tx-failover")
        assert (again.producer_id, again.producer_epoch) == (zombie.producer_id, zombie.producer_epoch + 2)
    finally:
        producer.close()
