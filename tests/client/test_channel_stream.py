"""``channel_stream``: Subscribe streams read off the broker's data channel (its stream port) by
table reads and by consumers, the typed errors its refusals carry, and the ways on to HTTP/2 or
gRPC (``subscription.Subscriptions``) when the channel is not there or cannot serve a stream."""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from logstore.api.v1 import records_pb2
from logstore.client import Admin, Consumer, Producer, subscription
from logstore.client.channel_stream import ChannelStream
from logstore.client.frames import fetch, socket_stream
from logstore.client.frames.socket_stream import SocketStream
from logstore.client.models import TopicPartition
from logstore.client.socket_reader import Ended, SocketReader
from logstore.errors import (
    NotAuthenticatedError,
    NotAuthorizedError,
    OffsetOutOfRangeError,
    UnavailableError,
    UnknownTopicError,
)
from tests.broker_fixture import BrokerProcess
from tests.client.frames.helpers import (
    RESTART_RECORDS,
    check_guarded_reads,
    guarded_broker,
    polled,
    read_across_a_restart,
    table_rows,
)
from tests.server.test_security import ADMIN_TOKEN, READER_TOKEN

Topic = Callable[..., str]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[SocketReader]]:
    """The streams reads open, data channel and HTTP/2 apart (the real ones)."""
    streams: dict[str, list[SocketReader]] = {"channel": [], "http2": []}

    class CountedChannel(ChannelStream):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            streams["channel"].append(self)

    class CountedSocket(SocketStream):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            streams["http2"].append(self)

    monkeypatch.setattr(subscription, "ChannelStream", CountedChannel)
    monkeypatch.setattr(socket_stream, "SocketStream", CountedSocket)
    return streams


def stream_port(address: str, token: str | None = None) -> int:
    with Consumer(address, token=token) as consumer:
        return consumer._cluster.stream_port(address)


def first_item(address: str, port: int, tp: TopicPartition, token: str | None = None,
               offset: int = 0) -> object:
    out: queue.Queue[tuple[SocketReader, object]] = queue.Queue()
    host = address.rpartition(":")[0]
    stream = ChannelStream(f"{host}:{port}", tp, offset, 0, 1 << 20, out, token, broker_address=address)
    try:
        return out.get(timeout=20)[1]
    finally:
        stream.close()


def test_a_range_reads_over_the_data_channel_and_equals_grpc(
    server: str, new_topic: Topic, opened: dict[str, list[SocketReader]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = new_topic(2)
    with Producer(server) as producer:
        for partition in range(2):
            producer.send_batch(topic, [b"v%d" % i for i in range(3_000)], partition=partition,
                                keys=[b"k%d" % i for i in range(3_000)],
                                headers=[[("h", b"x")] if i % 7 == 0 else None for i in range(3_000)])
        producer.flush()
    with Consumer(server) as consumer:
        direct = consumer.read_arrow(topic)
        batches = list(consumer.iter_arrow(topic))
        monkeypatch.setattr(fetch, "SOCKET_STREAMS", False)
        through_grpc = consumer.read_arrow(topic)
    assert [s.tp.partition for s in opened["channel"]] == [0, 1, 0, 1]
    assert opened["http2"] == []
    assert sum(batch.num_rows for batch in batches) == 6_000
    assert table_rows(direct) == table_rows(through_grpc) == polled(server, topic)


def test_a_broker_without_a_stream_port_is_read_over_http2(
    broker_factory: Callable[..., BrokerProcess], opened: dict[str, list[SocketReader]],
) -> None:
    broker = broker_factory(args=["--stream-port", "-1"])
    with Admin(broker.address) as admin:
        admin.create_topic("plain", 1)
    with Producer(broker.address) as producer:
        producer.send_batch("plain", [b"a", b"b"], partition=0).result(20)
    assert stream_port(broker.address) == 0
    with Consumer(broker.address) as consumer:
        assert consumer.read_arrow("plain").column("value").to_pylist() == [b"a", b"b"]
    assert opened["channel"] == [] and len(opened["http2"]) == 1


def test_a_read_carries_on_when_the_broker_restarts_on_another_stream_port(
    broker_factory: Callable[..., BrokerProcess], opened: dict[str, list[SocketReader]],
) -> None:
    broker = broker_factory()
    before = stream_port(broker.address)
    read = read_across_a_restart(broker)
    after = stream_port(broker.address)
    assert after != before
    with Consumer(broker.address) as consumer:  # a new read: the new port at once
        assert len(consumer.read_arrow("restarts", columns=["offset"])) == RESTART_RECORDS
    assert np.array_equal(read, np.arange(RESTART_RECORDS))  # nothing lost, nothing twice
    ports = [s.port for s in opened["channel"]]  # the old port again until it refuses, then the new
    assert ports[0] == before and ports[-1] == after and set(ports) == {before, after}
    assert opened["http2"] == []


def test_a_token_travels_on_the_channel_and_a_refusal_ends_the_stream(
    broker_factory: Callable[..., BrokerProcess], tmp_path: Path,
) -> None:
    broker = guarded_broker(broker_factory, tmp_path)
    port = stream_port(broker.address, ADMIN_TOKEN)
    tp = TopicPartition("guarded", 0)
    assert bytes(getattr(first_item(broker.address, port, tp, ADMIN_TOKEN), "records", b"")).endswith(b"c")
    assert isinstance(first_item(broker.address, port, tp, READER_TOKEN), NotAuthorizedError)
    assert isinstance(first_item(broker.address, port, tp, "not-a-token"), NotAuthenticatedError)
    check_guarded_reads(broker)


def test_a_refusal_is_the_typed_error_grpc_raises(
    server: str, new_topic: Topic,
) -> None:
    topic = new_topic(1)
    with Producer(server) as producer:
        producer.send_batch(topic, [b"a"], partition=0).result(20)
    port = stream_port(server)
    unknown = first_item(server, port, TopicPartition("no-such-topic", 0))
    assert isinstance(unknown, UnknownTopicError) and unknown.fields["topic"] == "no-such-topic"
    past = first_item(server, port, TopicPartition(topic, 0), offset=5)
    assert isinstance(past, OffsetOutOfRangeError)
    assert (past.fields["log_start_offset"], past.fields["log_end_offset"]) == (0, 1)


def open_subscriptions(broker: BrokerProcess) -> float:
    with urllib.request.urlopen(f"http://{broker.metrics_address}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("logstore_subscriptions_open "):
                return float(line.split()[1])
    raise AssertionError("no logstore_subscriptions_open metric")


def test_a_reader_that_stops_early_ends_its_stream_on_the_broker(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    broker = broker_factory()
    with Admin(broker.address) as admin:
        admin.create_topic("long", 1)
    with Producer(broker.address) as producer:
        producer.send_batch("long", np.zeros((100_000, 100), np.uint8), partition=0).result(20)
    with Consumer(broker.address, max_partition_fetch_bytes=64 << 10) as consumer:
        batches = consumer.iter_arrow("long", columns=["offset"])
        next(batches)
        assert open_subscriptions(broker) == 1
        batches.close()
    deadline = time.monotonic() + 10
    while open_subscriptions(broker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_subscriptions(broker) == 0


def test_a_consumer_polls_over_the_data_channel(
    server: str, new_topic: Topic, opened: dict[str, list[SocketReader]],
) -> None:
    topic = new_topic(2)
    with Producer(server) as producer:
        for partition in range(2):
            producer.send_batch(topic, [b"p%d-%d" % (partition, i) for i in range(500)], partition=partition)
        producer.flush()
    with Consumer(server, auto_offset_reset="earliest") as consumer:
        consumer.assign(topic)
        values: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(values) < 1_000 and time.monotonic() < deadline:
            values += [r.value for r in consumer.poll(timeout=0.5) if r.value is not None]
        with Producer(server) as producer:  # the live tail: pushed over the same streams
            producer.send(topic, b"late", partition=1).result(20)
        while b"late" not in values and time.monotonic() < deadline:
            values += [r.value for r in consumer.poll(timeout=0.5) if r.value is not None]
    assert sorted(values) == sorted([b"p%d-%d" % (p, i) for p in range(2) for i in range(500)] + [b"late"])
    assert sorted(s.tp.partition for s in opened["channel"]) == [0, 1]
    assert opened["http2"] == []


def test_a_consumer_gets_the_typed_error_of_a_refused_stream(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    with Consumer(server, auto_offset_reset="error") as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek((topic, 0), 7)  # past the end of an empty partition
        with pytest.raises(OffsetOutOfRangeError):
            for _ in range(20):
                consumer.poll(timeout=0.5)


def test_a_port_that_does_not_speak_the_protocol_leaves_the_channel_out(
    server: str, new_topic: Topic, opened: dict[str, list[SocketReader]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = new_topic(1)
    with Producer(server) as producer:
        producer.send_batch(topic, [b"a", b"b"], partition=0).result(20)
    http_port = int(server.rpartition(":")[2])  # the gRPC port answers HTTP/2, not this protocol
    with Consumer(server) as consumer:
        monkeypatch.setattr(consumer._cluster, "stream_port", lambda address, fresh=False: http_port)
        assert consumer.read_arrow(topic).column("value").to_pylist() == [b"a", b"b"]
    assert len(opened["channel"]) == 1 and len(opened["http2"]) == 1  # then HTTP/2, at once


def serve_once(reply: bytes) -> tuple[int, threading.Thread, socket.socket]:
    """A port that accepts one connection, writes ``reply`` and closes it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        connection = listener.accept()[0]
        connection.sendall(reply)
        connection.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, listener


def test_a_channel_that_breaks_after_messages_is_unavailable_before_them_it_ended(server: str) -> None:
    tp = TopicPartition("orders", 0)
    message = records_pb2.SubscribeResponse(high_watermark=1, next_offset=1).SerializeToString()
    for reply, expected in ((struct.pack("<IB", len(message), 0) + message, UnavailableError),
                            (b"", Ended), (b"HTTP/1.1 400 Bad Request\r\n\r\n", Ended)):
        port, thread, listener = serve_once(reply)
        with listener:
            out: queue.Queue[tuple[SocketReader, object]] = queue.Queue()
            stream = ChannelStream(f"127.0.0.1:{port}", tp, 0, 0, 1 << 20, out)
            items = [out.get(timeout=20)[1]]
            if expected is UnavailableError:
                items.append(out.get(timeout=20)[1])
            stream.close()
            thread.join(10)
        assert isinstance(items[-1], expected), (reply, items)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens there once it is closed
    assert isinstance(first_item(server, port, tp), Ended)
