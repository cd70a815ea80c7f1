"""``frames.socket_stream``: Subscribe read straight off its own socket as an HTTP/2 call to the
gRPC port, and the way back to gRPC (``frames.fetch``) when such a stream ends early. The
broker's data channel (``test_channel_stream``) is left out here, so range reads take this path."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from logstore.client import Admin, Consumer, Producer
from logstore.client.frames import fetch, socket_stream
from logstore.client.frames.socket_stream import SocketStream, _hpack_integer
from logstore.client.models import TopicPartition
from logstore.client.socket_reader import Ended, split_address
from tests.broker_fixture import BrokerProcess
from tests.certs import tls_broker
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


@pytest.fixture(autouse=True)
def _no_data_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "CHANNEL_STREAMS", False)


def test_addresses_that_are_not_host_and_port_stay_with_grpc() -> None:
    assert split_address("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert split_address("broker-1.local:80") == ("broker-1.local", 80)
    assert split_address("[::1]:9092") == ("::1", 9092)
    for target in ("unix:/tmp/broker.sock", "dns:///broker:9092", "::1:9092", "broker", "host:x"):
        assert split_address(target) is None


def test_hpack_integers_follow_rfc_7541() -> None:
    assert _hpack_integer(10, 5) == b"\x0a"  # C.1.1
    assert _hpack_integer(1337, 5) == b"\x1f\x9a\x0a"  # C.1.2
    assert _hpack_integer(42, 8) == b"\x2a"  # C.1.3
    assert _hpack_integer(127, 7) == b"\x7f\x00"


def test_a_connection_refused_or_closed_at_once_ends_the_stream() -> None:
    tp = TopicPartition("orders", 0)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        closer = threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True)
        closer.start()
        out: queue.Queue[tuple[SocketStream, object]] = queue.Queue()
        SocketStream(f"127.0.0.1:{listener.getsockname()[1]}", tp, 0, 0, 1 << 20, out)
        assert isinstance(out.get(timeout=10)[1], Ended)
        closer.join(10)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens there once it is closed
    SocketStream(f"127.0.0.1:{port}", tp, 0, 0, 1 << 20, out)
    assert isinstance(out.get(timeout=10)[1], Ended)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[SocketStream]:
    """Every socket stream the range reads open (the real streams, counted)."""
    streams: list[SocketStream] = []

    class Counted(SocketStream):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            streams.append(self)

    monkeypatch.setattr(socket_stream, "SocketStream", Counted)
    return streams


def test_a_range_reads_through_its_own_socket_and_equals_grpc(
    server: str, new_topic: Topic, opened: list[SocketStream], monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = new_topic(2)
    with Producer(server) as producer:
        for partition in range(2):
            producer.send_batch(topic, [b"v%d" % i for i in range(3_000)], partition=partition,
                                keys=[b"k%d" % i for i in range(3_000)])
        producer.flush()
    with Consumer(server) as consumer:
        direct = consumer.read_arrow(topic)
        batches = list(consumer.iter_arrow(topic))
        assert [s.tp.partition for s in opened] == [0, 1, 0, 1]
        monkeypatch.setattr(fetch, "SOCKET_STREAMS", False)
        through_grpc = consumer.read_arrow(topic)
    assert len(opened) == 4
    assert sum(batch.num_rows for batch in batches) == 6_000
    assert table_rows(direct) == table_rows(through_grpc) == polled(server, topic)


def test_a_read_carries_on_through_grpc_when_the_broker_dies_under_it(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    read = read_across_a_restart(broker_factory())
    assert np.array_equal(read, np.arange(RESTART_RECORDS))  # nothing lost, nothing twice


def test_a_token_travels_on_the_socket_and_a_refused_stream_ends(
    broker_factory: Callable[..., BrokerProcess], tmp_path: Path,
) -> None:
    broker = guarded_broker(broker_factory, tmp_path)
    tp = TopicPartition("guarded", 0)
    first: dict[str | None, object] = {}
    for token in (ADMIN_TOKEN, READER_TOKEN, None):
        out: queue.Queue[tuple[SocketStream, object]] = queue.Queue()
        stream = SocketStream(broker.address, tp, 0, 0, 1 << 20, out, token)
        first[token] = out.get(timeout=20)[1]
        stream.close()
    assert bytes(getattr(first[ADMIN_TOKEN], "records", b"")).endswith(b"c")
    assert isinstance(first[READER_TOKEN], Ended) and isinstance(first[None], Ended)
    check_guarded_reads(broker)


def test_under_tls_a_range_reads_through_grpc(tmp_path: Path, opened: list[SocketStream]) -> None:
    with tls_broker(tmp_path) as (broker, ca):
        with Admin(broker.address, tls_ca=ca) as admin:
            admin.create_topic("sealed", 1)
        with Producer(broker.address, tls_ca=ca) as producer:
            producer.send_batch("sealed", [b"a", b"b"], partition=0).result(20)
        with Consumer(broker.address, tls_ca=ca) as consumer:
            assert consumer.read_arrow("sealed").column("value").to_pylist() == [b"a", b"b"]
    assert opened == []
