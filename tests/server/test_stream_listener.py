"""The Subscribe data channel (``server.stream_listener``): its port in the broker's metadata,
its settings, and what it answers a client that breaks its protocol."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from logstore.api.v1 import cluster_pb2, records_pb2
from logstore.client import Admin, Consumer
from logstore.errors import InvalidConfigError
from logstore.server.config import ServerConfig
from tests.broker_fixture import BrokerProcess, free_port
from tests.certs import tls_broker
from tests.server.helpers import batch, produce_request

U32 = struct.Struct("<I")


def advertised_port(address: str, **options: str) -> int:
    with Consumer(address, **options) as consumer:
        brokers = consumer._cluster.view().brokers
    return next(iter(brokers.values())).stream_port


def exchange(port: int, *frames: bytes) -> tuple[int, dict[str, str]] | None:
    """Send ``frames`` (each length-prefixed) and read the broker's first frame: (kind, JSON
    body) for a refusal; None when it closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(b"".join(U32.pack(len(f)) + f for f in frames))
        except ConnectionResetError:
            return None
        head = b""
        while len(head) < 5:
            chunk = sock.recv(5 - len(head))
            if not chunk:
                return None
            head += chunk
        length, kind = struct.unpack("<IB", head)
        body = b""
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            assert chunk
            body += chunk
    return kind, json.loads(body)


def test_the_broker_advertises_its_stream_port_and_a_fixed_one_is_used(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    port = free_port()
    broker = broker_factory(args=["--stream-port", str(port)])
    assert advertised_port(broker.address) == port
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass  # it listens there
    serving = [json.loads(line) for line in broker.log_path.read_text().splitlines()
               if '"logstore serving"' in line]
    assert [line["stream_port"] for line in serving] == [port]  # the start-up line names it


def test_a_bad_stream_port_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="stream-port") as raised:
        ServerConfig.load(stream_port=70_000)
    assert raised.value.key == "stream_port"
    run = subprocess.run([sys.executable, "-m", "logstore", "serve", "--data-dir", str(tmp_path),
                          "--stream-port", "-2"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "--stream-port must be a port, 0 (ephemeral) or -1 (none), not -2" in run.stderr


def test_a_broker_with_tls_opens_no_stream_port(tmp_path: Path) -> None:
    with tls_broker(tmp_path) as (broker, ca):
        assert advertised_port(broker.address, tls_ca=ca) == 0


def test_a_malformed_hello_or_request_is_refused_and_closed(broker: BrokerProcess) -> None:
    port = advertised_port(broker.address)
    with Admin(broker.address) as admin:
        admin.create_topic("t", 1)
    request = records_pb2.SubscribeRequest(topic="t", partition=0).SerializeToString()
    assert exchange(port, b"[1, 2]", request) == (1, {
        "reason": "INVALID_REQUEST", "message": "the stream channel's hello is not a JSON object",
        "metadata": {"field": "hello"}})
    assert exchange(port, b"{}", b"\xff\xff\xff") == (1, {
        "reason": "INVALID_REQUEST", "message": "malformed request: not a SubscribeRequest",
        "metadata": {"field": "request"}})
    assert exchange(port, b"not json", request) == (1, {
        "reason": "INVALID_REQUEST", "message": "the stream channel's hello is not JSON",
        "metadata": {"field": "hello"}})
    assert exchange(port, b"{}" * (3 << 20), request) is None  # past the frame limit: closed
    assert exchange(port, b"{}", records_pb2.SubscribeRequest(topic="t", partition=7).SerializeToString()
                    )[1]["reason"] == "UNKNOWN_PARTITION"


def test_metadata_of_a_single_node_names_one_broker_with_its_stream_port(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        response = channel.unary_unary(
            "/logstore.api.v1.LogStore/Metadata",
            request_serializer=cluster_pb2.MetadataRequest.SerializeToString,
            response_deserializer=cluster_pb2.MetadataResponse.FromString,
        )(cluster_pb2.MetadataRequest(), timeout=10)
    assert [b.stream_port > 0 for b in response.brokers] == [True]


def produce_channel(port: int, token: str = "", call: str = "produce") -> socket.socket:
    """A connection to the stream port that said hello for ``call``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    hello = json.dumps({"token": token, "call": call}).encode()
    sock.sendall(U32.pack(len(hello)) + hello)
    return sock


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            assert chunk, "closed"
            data += chunk
        return data

    length, kind = struct.unpack("<IB", exactly(5))
    return kind, exactly(length)


def test_a_produce_channel_answers_each_request_in_order_and_stays_open_after_a_bad_one(
    broker: BrokerProcess,
) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("p", 1)
    port = advertised_port(broker.address)
    requests = [produce_request("p", batch([b"a%d" % i, b"b%d" % i]), correlation_id=i).SerializeToString()
                for i in (1, 2)]
    requests.insert(1, b"\xff\xff")  # not a ProduceRequest
    requests.append(produce_request("p", batch([b"c"]), correlation_id=3).SerializeToString())
    with produce_channel(port) as sock:
        sock.sendall(b"".join(U32.pack(len(r)) + r for r in requests))
        answers = []
        for _ in requests:
            kind, body = read_frame(sock)
            assert kind == 0
            answers.append(records_pb2.ProduceResponse.FromString(body))
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # every request answered: the broker closes
    assert answers[1].error.reason == "INVALID_REQUEST"
    good = [answers[0], answers[2], answers[3]]
    assert [a.correlation_id for a in good] == [1, 2, 3]
    assert [a.results[0].base_offset for a in good] == [0, 2, 4]


def test_a_produce_request_past_max_request_bytes_is_refused_unread(broker: BrokerProcess) -> None:
    with produce_channel(advertised_port(broker.address)) as sock:
        sock.sendall(U32.pack((64 << 20) + 1))
        kind, body = read_frame(sock)
    assert kind == 1 and json.loads(body)["reason"] == "LIMIT_EXCEEDED"


def test_a_hello_for_another_call_is_refused(broker: BrokerProcess) -> None:
    refused = exchange(advertised_port(broker.address), json.dumps({"call": "fetch"}).encode())
    assert refused is not None and refused[1]["reason"] == "INVALID_REQUEST"
    assert refused[1]["message"] == "the stream channel serves subscribe, produce and share, not 'fetch'"
