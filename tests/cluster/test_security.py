"""Brokers of a secured cluster call each other with a token of their own: a principal with the
`replica` right on `cluster` copies partitions (over gRPC or the replica data channel) and writes
transaction markers; a client principal without it can do neither."""

from __future__ import annotations

import asyncio
import ssl

import grpc
import pytest

from logstore import Consumer, Producer, TopicPartition
from logstore.api.v1 import cluster_pb2
from logstore.cluster.replica_channel import ReplicaChannel, ReplicaChannelRefused
from logstore.records import encode_batch
from logstore.server.auth import hash_token
from tests.certs import make_certificates
from tests.server.helpers import failure, produce_request, read_all, unique_topic

from .cluster_fixture import TIMEOUT_S
from .test_replica_channel import fetches_served, replica_address

BROKER_TOKEN = "broker-secret"
CLIENT_TOKEN = "client-secret"


def security_file(path):
    path.write_text(f"""
[principals.brokers]
token_sha256 = "{hash_token(BROKER_TOKEN)}"

[principals.app]
token_sha256 = "{hash_token(CLIENT_TOKEN)}"

[[acl]]
principal = "brokers"
resource = "cluster"
name = "*"
operations = ["replica"]

[[acl]]
principal = "app"
resource = "topic"
name = "*"
operations = ["admin"]
""")
    return path


def test_a_secured_cluster_replicates_with_the_broker_token_only(cluster_factory, tmp_path):
    cluster = cluster_factory(
        brokers=3, security_file=security_file(tmp_path / "security.toml"), token=CLIENT_TOKEN,
        inter_broker_token=BROKER_TOKEN,
    )
    topic = unique_topic("secured")
    cluster.create_topic(topic, partitions=1)
    leader = cluster.leader_of(topic)
    result = cluster.stub(leader).Produce(produce_request(topic, encode_batch([b"a", b"b"])), timeout=TIMEOUT_S)
    assert not result.results[0].error.reason  # acks=all: both followers fetched with the token
    spread = unique_topic("secured-tx")
    cluster.create_topic(spread, partitions=3)
    with Producer(cluster.bootstrap, token=CLIENT_TOKEN, transactional_id="secured-tx", linger_ms=1) as producer:
        producer.init_transactions()
        producer.begin_transaction()
        for p in range(3):
            producer.send(spread, b"tx", partition=p)
        producer.commit_transaction()  # the markers went to the other leaders with the broker token
    with Consumer(cluster.bootstrap, token=CLIENT_TOKEN, isolation_level="read_committed") as consumer:
        parts = [TopicPartition(spread, p) for p in range(3)]
        consumer.assign(parts)
        assert set(consumer.end_offsets(parts).values()) == {2}  # record + commit marker, stable
    markers = cluster_pb2.WriteTxnMarkersRequest(producer_id=1, producer_epoch=0, commit=True,
                                                 partitions=[{"topic": spread, "partition": 0}])
    try:
        cluster.stub(leader).WriteTxnMarkers(markers, timeout=TIMEOUT_S)
        raise AssertionError("a client principal wrote transaction markers")
    except grpc.RpcError as err:
        assert (failure(err).code, failure(err).reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_AUTHORIZED")
    leader.kill()
    new = cluster.wait_for_leader(topic, 0, not_in=(leader.broker_id,))
    # (the new leader serves them once its high watermark moved: its follower fetched from it)
    cluster.wait_for(lambda: [r.value for r in read_all(cluster.stub(new), topic, 0)] == [b"a", b"b"],
                     what="the records on the new leader")
    request = cluster_pb2.ReplicaFetchRequest(
        replica_id=9, partitions=[cluster_pb2.ReplicaFetchPartition(topic=topic, partition=0)]
    )
    try:
        cluster.stub(new).ReplicaFetch(request, timeout=TIMEOUT_S)
        raise AssertionError("a client principal fetched as a replica")
    except grpc.RpcError as err:
        got = failure(err)
        assert (got.code, got.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_AUTHORIZED")
    assert fetches_served(new, "ReplicaFetchChannel") > 0  # its follower, with the broker token
    address = replica_address(cluster, new)
    for token, reason in ((CLIENT_TOKEN, "NOT_AUTHORIZED"), ("wrong", "NOT_AUTHENTICATED")):
        with pytest.raises(ReplicaChannelRefused) as refused:
            asyncio.run(ReplicaChannel.connect(address, broker_id=9, token=token, ssl_context=None,
                                               timeout_s=TIMEOUT_S))
        assert refused.value.reason == reason


def test_a_tls_cluster_replicates_over_the_replica_channel_with_tls(cluster_factory, tmp_path):
    certificates = make_certificates(tmp_path / "certs", ips=("127.0.0.11", "127.0.0.12"))
    cluster = cluster_factory(
        brokers=2, security_file=security_file(tmp_path / "security.toml"), token=CLIENT_TOKEN,
        inter_broker_token=BROKER_TOKEN, tls=certificates,
    )
    topic = unique_topic("tls")
    cluster.create_topic(topic, partitions=1, replication_factor=2)
    leader = cluster.leader_of(topic)
    result = cluster.stub(leader).Produce(produce_request(topic, encode_batch([b"a"])), timeout=TIMEOUT_S)
    assert not result.results[0].error.reason  # acks=all: the follower fetched over TLS
    trusting = ssl.create_default_context(cafile=str(certificates.ca))
    assert fetches_served(leader, "ReplicaFetchChannel", tls=trusting) > 0
    address = replica_address(cluster, leader)
    with pytest.raises(ReplicaChannelRefused) as refused:
        asyncio.run(ReplicaChannel.connect(address, broker_id=9, token="wrong", ssl_context=trusting,
                                           timeout_s=TIMEOUT_S))
    assert refused.value.reason == "NOT_AUTHENTICATED"
    with pytest.raises(ConnectionError):  # no plaintext on a TLS broker's replica port
        asyncio.run(ReplicaChannel.connect(address, broker_id=9, token=BROKER_TOKEN, ssl_context=None,
                                           timeout_s=TIMEOUT_S))
