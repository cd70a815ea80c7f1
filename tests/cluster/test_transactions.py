"""Producer ids and transactions on a real 3-broker cluster: ``__transaction_state`` replicated,
producer ids unique across brokers (reserved in blocks from etcd).

One cluster for the module; the tests run in file order."""

from __future__ import annotations

import pytest

from logstore.api.v1 import transactions_pb2
from logstore.broker.internal import TRANSACTIONS_TOPIC
from logstore.cluster.producer_ids import FIRST_PRODUCER_ID

from .cluster_fixture import TIMEOUT_S


@pytest.fixture(scope="module")
def cluster(module_cluster_factory):
    return module_cluster_factory(brokers=3)


def transactions_topic(cluster):
    """``__transaction_state`` once its partition has a leader and a full ISR."""
    def ready():
        (topic,) = cluster.metadata([TRANSACTIONS_TOPIC]).topics
        if topic.HasField("error") or not topic.partitions:
            return None
        return topic if all(p.leader_id > 0 and len(p.isr) == 3 for p in topic.partitions) else None

    return cluster.wait_for(ready, what=f"{TRANSACTIONS_TOPIC} led and in sync")


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
