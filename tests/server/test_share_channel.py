"""The share channel (``server.share_channel``): a share group member's stream on the stream
port, answered as the gRPC ``ShareStream`` answers, and what it refuses."""

from __future__ import annotations

import json
import socket

from logstore.api.v1 import share_pb2
from logstore.client import Admin, Producer
from tests.broker_fixture import BrokerProcess
from tests.server.test_service_share import accept, acquired_offsets
from tests.server.test_stream_listener import U32, advertised_port, produce_channel, read_frame


def fetch(correlation_id: int, topics: list[str], acks=()) -> bytes:  # type: ignore[no-untyped-def]
    return share_pb2.ShareFetchRequest(group_id="chan-g", member_id="m1", topics=topics, max_records=2,
                                       correlation_id=correlation_id, acknowledgements=list(acks)).SerializeToString()


def test_a_share_channel_answers_in_order_and_stays_open_after_a_bad_request(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("jobs", 1)
    with Producer(broker.address) as producer:
        producer.send_batch("jobs", [b"j%d" % i for i in range(4)], partition=0).result(10)
    requests = [fetch(1, ["jobs"]), b"\xff\xff", fetch(3, ["missing"]), fetch(4, ["jobs"], [accept("jobs", 0, 1)])]
    with produce_channel(advertised_port(broker.address), call="share") as sock:
        sock.sendall(b"".join(U32.pack(len(r)) + r for r in requests))
        answers = []
        for _ in requests:
            kind, body = read_frame(sock)
            assert kind == 0
            answers.append(share_pb2.ShareFetchResponse.FromString(body))
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # the client ended its stream: the broker closes
    first, malformed, unknown, fourth = answers
    assert (first.correlation_id, acquired_offsets(first)) == (1, [0, 1])
    assert malformed.error.reason == "INVALID_REQUEST"
    assert (unknown.correlation_id, unknown.error.reason) == (3, "UNKNOWN_TOPIC")
    assert (fourth.correlation_id, list(fourth.refused), acquired_offsets(fourth)) == (4, [], [2, 3])


def test_a_share_request_past_max_request_bytes_is_refused_unread(broker: BrokerProcess) -> None:
    with produce_channel(advertised_port(broker.address), call="share") as sock:
        sock.sendall(U32.pack((64 << 20) + 1))
        kind, body = read_frame(sock)
    assert kind == 1 and json.loads(body)["reason"] == "LIMIT_EXCEEDED"
