"""Followers copy their leaders over the leader's replica data channel (plain TCP, no gRPC) when
the leader advertises one in its registration: the default. Table reads use each leader's
Subscribe data channel (its stream port, in the cluster's metadata) the same way."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import subprocess
import sys
import urllib.request

import pytest

from logstore.api.v1 import cluster_pb2
from logstore.cluster.etcd import EtcdClient
from logstore.cluster.replica_channel import (
    MAX_IOVECS,
    Connection,
    ReplicaChannel,
    frame,
    response_pieces,
)
from tests.broker_fixture import ROOT, free_port
from tests.server.helpers import batch, produce_request, unique_topic, values_of

from .cluster_fixture import TIMEOUT_S


def replica_address(cluster, broker) -> str:
    """The replica channel ``broker`` registered in etcd ("" if none)."""
    name = broker.args[broker.args.index("--cluster-name") + 1]

    async def read() -> str:
        async with EtcdClient(cluster.etcd.endpoints) as client:
            found = await client.get(f"/logstore/{name}/brokers/{broker.broker_id}", timeout_s=TIMEOUT_S)
        assert found is not None
        return str(json.loads(found.value).get("replica_address", ""))

    return asyncio.run(read())


def fetches_served(broker, method: str, tls: ssl.SSLContext | None = None) -> float:
    """The fetches the broker answered over ``method`` (its /metrics; https when ``tls``)."""
    scheme = "https" if tls is not None else "http"
    with urllib.request.urlopen(f"{scheme}://{broker.metrics_address}/metrics", timeout=TIMEOUT_S,
                                context=tls) as reply:
        text = reply.read().decode()
    pattern = rf'logstore_requests_total\{{code="OK",method="{method}"\}} (\S+)'
    return sum(float(m) for m in re.findall(pattern, text))


@pytest.fixture(scope="module")
def cluster(module_cluster_factory):
    return module_cluster_factory(brokers=3)


def test_followers_fetch_over_the_leaders_replica_channel(cluster):
    topic = unique_topic("channel")
    cluster.create_topic(topic, partitions=1)
    leader = cluster.leader_of(topic)
    assert replica_address(cluster, leader).startswith(f"{leader.host}:")
    values = values_of("v", 30)
    result = cluster.stub(leader).Produce(produce_request(topic, batch(values)), timeout=TIMEOUT_S).results[0]
    assert not result.error.reason  # acks=all: both followers copied the batch
    assert fetches_served(leader, "ReplicaFetchChannel") > 0
    assert fetches_served(leader, "ReplicaFetch") == 0


def test_the_replica_channel_answers_what_replica_fetch_answers(cluster):
    topic = unique_topic("answer")
    cluster.create_topic(topic, partitions=1)
    leader = cluster.leader_of(topic)
    values = values_of("w", 5)
    cluster.stub(leader).Produce(produce_request(topic, batch(values)), timeout=TIMEOUT_S)
    epoch = cluster.partition(topic, 0).leader_epoch
    request = cluster_pb2.ReplicaFetchRequest(replica_id=99, max_wait_ms=0, max_bytes=1 << 20)
    request.partitions.add(topic=topic, partition=0, leader_epoch=epoch, fetch_offset=0)
    request.partitions.add(topic=topic, partition=0, leader_epoch=epoch + 5, fetch_offset=0)

    address = replica_address(cluster, leader)

    async def fetch() -> list:
        channel = await ReplicaChannel.connect(address, broker_id=99, token="",
                                               ssl_context=None, timeout_s=TIMEOUT_S)
        try:
            return [(f.fields, bytes(f.records)) for f in await channel.fetch(request)]
        finally:
            channel.close()

    over_channel = asyncio.run(fetch())
    over_grpc = cluster.stub(leader).ReplicaFetch(request, timeout=TIMEOUT_S).partitions
    assert [(f.high_watermark, f.log_end_offset, f.error.reason, records) for f, records in over_channel] == [
        (f.high_watermark, f.log_end_offset, f.error.reason, f.records) for f in over_grpc
    ]
    assert over_channel[0][1] and over_channel[1][0].error.reason == "FENCED_LEADER_EPOCH"


def test_followers_fetch_over_grpc_from_a_leader_without_a_replica_channel(cluster_factory):
    cluster = cluster_factory(brokers=2, broker_args=("--replica-port", "-1"))
    topic = unique_topic("grpc")
    cluster.create_topic(topic, partitions=1, replication_factor=2)
    leader = cluster.leader_of(topic)
    assert replica_address(cluster, leader) == ""
    result = cluster.stub(leader).Produce(produce_request(topic, batch([b"a"])), timeout=TIMEOUT_S).results[0]
    assert not result.error.reason  # acks=all: the follower copied it over gRPC
    assert fetches_served(leader, "ReplicaFetch") > 0
    assert fetches_served(leader, "ReplicaFetchChannel") == 0


def test_a_response_of_many_partitions_and_megabytes_arrives_whole():
    """More partitions than one sendmsg takes, and more bytes than the socket buffers hold."""
    records = [bytes([i % 251]) * (i * 97) for i in range(MAX_IOVECS + 100)]
    records[7] = b"x" * (6 << 20)

    async def main() -> list[tuple[int, bytes]]:
        async def serve() -> None:
            sock, _ = await loop.sock_accept(listener)
            connection = Connection(sock)
            await connection.read_frame()  # hello
            await connection.send(frame(b'{"ok": true}'))
            cluster_pb2.ReplicaFetchRequest.FromString(await connection.read_frame())
            smalls = [cluster_pb2.ReplicaFetchedPartition(topic="t", partition=i) for i in range(len(records))]
            await connection.send(response_pieces(list(zip(smalls, [memoryview(r) for r in records], strict=True))))
            connection.close()

        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        serving = loop.create_task(serve())
        channel = await ReplicaChannel.connect(f"127.0.0.1:{listener.getsockname()[1]}", broker_id=1,
                                               token="", ssl_context=None, timeout_s=TIMEOUT_S)
        fetched = await channel.fetch(cluster_pb2.ReplicaFetchRequest(replica_id=1))
        answer = [(f.fields.partition, bytes(f.records)) for f in fetched]
        await serving
        channel.close()
        listener.close()
        return answer

    assert asyncio.run(main()) == list(enumerate(records))


def test_a_replica_port_out_of_range_or_taken_exits_2(tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        for port, says in (("70000", "--replica-port must be a port"),
                           (str(taken.getsockname()[1]), "cannot listen on the replica port")):
            result = subprocess.run(
                [sys.executable, "-m", "logstore", "serve", "--data-dir", str(tmp_path / "data"),
                 "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", "", "--log-format", "text",
                 "--cluster", "etcd://127.0.0.1:1", "--broker-id", "1", "--replica-port", port],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )
            assert result.returncode == 2, result.stderr
            assert says in result.stderr
    finally:
        taken.close()


def test_a_range_read_goes_over_each_leaders_stream_channel(cluster):
    from logstore import Consumer, Producer

    topic = unique_topic("table")
    cluster.create_topic(topic, partitions=3)
    leaders = [cluster.partition(topic, p).leader_id for p in range(3)]
    with Producer(cluster.bootstrap, acks="all") as producer:
        for partition in range(3):
            producer.send_batch(topic, [b"%d-%d" % (partition, i) for i in range(100)], partition=partition)
        producer.flush(30)
    assert all(b.stream_port > 0 for b in cluster.metadata().brokers)
    before = {b.broker_id: fetches_served(b, "SubscribeChannel") for b in cluster.brokers}
    with Consumer(cluster.bootstrap) as consumer:
        table = consumer.read_arrow(topic, columns=["partition", "value"])
    assert table.column("value").to_pylist() == [b"%d-%d" % (p, i) for p in range(3) for i in range(100)]

    def served() -> list[float]:  # counted as each stream ends, once the reader has closed it
        return [fetches_served(b, "SubscribeChannel") - before[b.broker_id] for b in cluster.brokers]

    expected = [leaders.count(b.broker_id) for b in cluster.brokers]
    cluster.wait_for(lambda: served() == expected, what=f"streams served {expected}")
