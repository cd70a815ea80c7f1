"""Producer ids and transactional ids on a real 3-broker cluster: ``__transaction_state``
replicated, producer ids unique across brokers (reserved in blocks from etcd), the transaction
coordinator the leader of ``__transaction_state``, its state surviving a SIGKILL of its broker.

One cluster for the module (~20 s on a loaded box, one SIGKILL waited out by the 2 s lease); the
tests run in file order and the last one kills the coordinator's broker."""

from __future__ import annotations

import grpc
import pytest

from logstore import Producer
from logstore.api.v1 import cluster_pb2, transactions_pb2
from logstore.broker.internal import TRANSACTIONS_TOPIC
from logstore.cluster.producer_ids import FIRST_PRODUCER_ID
from logstore.records import encode_batch
from tests.server.helpers import expect_failure, produce_request, unique_topic

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


def test_transactional_records_are_refused_in_a_cluster_yet(cluster):
    topic = unique_topic("tx-refused")
    cluster.create_topic(topic, partitions=1)
    leader = coordinator(cluster)
    registered = init(cluster.stub(leader), "tx-refused")
    batch = encode_batch([b"r"], producer_id=registered.producer_id, producer_epoch=registered.producer_epoch,
                         base_sequence=0, transactional=True)
    error = expect_failure(cluster.stub(cluster.leader_of(topic)).Produce, produce_request(topic, batch),
                           grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert "not supported by clustered brokers yet" in error.message
    expect_failure(
        cluster.stub(leader).AddPartitionsToTxn,
        transactions_pb2.AddPartitionsToTxnRequest(
            transactional_id="tx-refused", producer_id=registered.producer_id,
            producer_epoch=registered.producer_epoch, partitions=[{"topic": topic, "partition": 0}],
        ),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST",
    )


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
