"""Leader failover on a real 3-broker cluster under an idempotent acks=all producer: SIGKILL the
leader, a new one is elected within the lease TTL plus a little, and nothing acknowledged is lost
or duplicated; the killed broker comes back, truncates if it must, catches up and rejoins the ISR.

The producer here is a raw-stub one (the test must see every retry): it stamps each batch with
its producer id, epoch and sequence and re-sends the same bytes to whoever leads after any
failure, as the client does.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from logstore.api.v1 import records_pb2, transactions_pb2
from logstore.records import encode_batch
from tests.server.helpers import produce_request, read_all, unique_topic

from .cluster_fixture import LEASE_TTL_MS, TIMEOUT_S


class RawIdempotentProducer:
    def __init__(self, cluster, topic):
        self.cluster = cluster
        self.topic = topic
        stub = cluster.stub(cluster.running()[0])
        answer = stub.InitProducerId(transactions_pb2.InitProducerIdRequest(), timeout=TIMEOUT_S)
        self.producer_id, self.epoch = answer.producer_id, answer.producer_epoch
        self.sequence = 0
        self.acked: list[bytes] = []
        self.ack_times: list[float] = []
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, data: bytes) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                leader = self.cluster.leader_of(self.topic)
                if not leader.running:
                    raise AssertionError("leader not running yet")
                result = self.cluster.stub(leader).Produce(
                    produce_request(self.topic, data, 0, records_pb2.ACKS_ALL), timeout=5
                ).results[0]
                if not result.error.reason:
                    return
                self.errors.append(result.error.reason)
            except (grpc.RpcError, AssertionError, StopIteration) as exc:
                self.errors.append(type(exc).__name__)
            time.sleep(0.05)
        raise AssertionError(f"batch not acknowledged within 30 s: {self.errors[-5:]}")

    def _run(self) -> None:
        index = 0
        while not self.stop.is_set():
            values = [b"r-%06d" % (index + i) for i in range(20)]
            data = encode_batch(values, producer_id=self.producer_id, producer_epoch=self.epoch,
                                base_sequence=self.sequence)
            self._send(data)
            self.sequence += len(values)
            index += len(values)
            self.acked += values
            self.ack_times.append(time.monotonic())


@pytest.fixture
def cluster(cluster_factory):
    return cluster_factory(brokers=3)


def test_sigkill_of_the_leader_loses_and_duplicates_nothing_acknowledged(cluster):
    topic = unique_topic("failover")
    cluster.create_topic(topic, partitions=1, replication_factor=3)
    producer = RawIdempotentProducer(cluster, topic)
    producer.thread.start()
    cluster.wait_for(lambda: len(producer.acked) >= 200, what="acknowledged records before the kill")
    old = cluster.leader_of(topic)
    killed_at = time.monotonic()
    old.kill()
    new = cluster.wait_for_leader(topic, 0, not_in=(old.broker_id,))
    cluster.wait_for(lambda: any(t > killed_at for t in producer.ack_times), what="an ack after the kill")
    first_ack = next(t for t in producer.ack_times if t > killed_at)
    assert first_ack - killed_at <= LEASE_TTL_MS / 1000 + 3.0
    acked_at_kill = len(producer.acked)
    cluster.wait_for(lambda: len(producer.acked) >= acked_at_kill + 200, what="more acks after failover")
    # the killed broker comes back as a follower, catches up and rejoins the ISR
    old.start()
    cluster.wait_for_isr(topic, 0, 3, timeout_s=30)
    producer.stop.set()
    producer.thread.join(30)
    stored = [r.value for r in read_all(cluster.stub(new), topic, 0)]
    assert len(stored) == len(set(stored)), "duplicates in the log"
    assert set(producer.acked) <= set(stored), "acknowledged records lost"
    assert stored[: len(producer.acked)] == producer.acked  # in order, nothing else before them


def test_a_paused_follower_leaves_the_isr_and_rejoins(cluster):
    topic = unique_topic("paused")
    cluster.create_topic(topic, partitions=1, replication_factor=3)
    leader = cluster.leader_of(topic)
    follower = next(b for b in cluster.brokers if b is not leader)
    stub = cluster.stub(leader)
    follower.process.send_signal(19)  # SIGSTOP
    try:
        cluster.wait_for_isr(topic, 0, 2)
        result = stub.Produce(produce_request(topic, encode_batch([b"while-paused"])), timeout=TIMEOUT_S)
        assert not result.results[0].error.reason  # acks=all goes on with 2 of 3 in sync
    finally:
        follower.process.send_signal(18)  # SIGCONT
    isr = cluster.wait_for_isr(topic, 0, 3, timeout_s=30)
    assert follower.broker_id in isr


def test_controlled_shutdown_hands_leadership_over_first(cluster):
    topic = unique_topic("rolling")
    cluster.create_topic(topic, partitions=1, replication_factor=3)
    leader = cluster.leader_of(topic)
    stub = cluster.stub(leader)
    stub.Produce(produce_request(topic, encode_batch([b"before"])), timeout=TIMEOUT_S)
    started = time.monotonic()
    assert leader.stop() == 0
    new = cluster.wait_for_leader(topic, 0, not_in=(leader.broker_id,), timeout_s=5)
    # the leadership moved while the old leader was still up: no lease had to expire
    assert time.monotonic() - started < LEASE_TTL_MS / 1000 + 2
    # the acknowledged record is on the new leader, served once its high watermark moved (its
    # follower fetched from it: the old leader's last high watermark may not have reached it)
    cluster.wait_for(lambda: [r.value for r in read_all(cluster.stub(new), topic, 0)] == [b"before"],
                     timeout_s=5, what="the acknowledged record served by the new leader")


def test_the_last_broker_stops_without_waiting_for_a_successor(cluster):
    topic = unique_topic("last")
    cluster.create_topic(topic, partitions=3, replication_factor=3)
    for broker in cluster.brokers[:-1]:
        assert broker.stop() == 0
    started = time.monotonic()
    assert cluster.brokers[-1].stop() == 0
    assert time.monotonic() - started < 5  # controlled_shutdown_timeout_ms is 10 s
