"""Share-group RPCs end to end on a real broker: fetch, piggybacked and unary acks, admin calls,
and every refusal with its status and reason."""

from __future__ import annotations

import queue
import time

import grpc

from logstore.api.v1 import share_pb2
from logstore.records import decode_columns
from tests.server.helpers import TIMEOUT_S, create_topic, expect_failure, produce, values_of


def share_fetch(stub, group, member, topic, acks=(), **options):  # type: ignore[no-untyped-def]
    request = share_pb2.ShareFetchRequest(group_id=group, member_id=member, topics=[topic],
                                          acknowledgements=list(acks), **options)
    return stub.ShareFetch(request, timeout=TIMEOUT_S)


def acquired_offsets(response: share_pb2.ShareFetchResponse) -> list[int]:
    offsets = []
    for part in response.partitions:
        columns = decode_columns(part.records)
        for first, last in zip(part.first_offsets, part.last_offsets, strict=True):
            offsets += [int(o) for o in set(columns.offsets.tolist()) if first <= o <= last]
    return sorted(offsets)


def accept(topic: str, first: int, last: int | None = None) -> share_pb2.ShareAcknowledgement:
    return share_pb2.ShareAcknowledgement(topic=topic, partition=0, first_offset=first,
                                          last_offset=first if last is None else last,
                                          kind=share_pb2.ACKNOWLEDGE_ACCEPT)


def test_fetch_acquires_and_a_piggybacked_ack_is_applied(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("task", 4))
    first = share_fetch(stub, "svc-g1", "m1", topic, max_records=4)
    assert acquired_offsets(first) == [0, 1, 2, 3]
    assert list(first.partitions[0].delivery_counts) == [1]
    second = share_fetch(stub, "svc-g1", "m1", topic, acks=[accept(topic, 0, 3)])
    assert list(second.refused) == [] and acquired_offsets(second) == []
    (state,) = stub.DescribeShareGroup(share_pb2.DescribeShareGroupRequest(group_id="svc-g1"),
                                        timeout=TIMEOUT_S).partitions
    assert (state.start_offset, state.acquired, state.available) == (4, 0, 0)


def test_ack_of_a_record_not_held_is_refused_with_record_not_acquired(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("task", 1))
    share_fetch(stub, "svc-g2", "m1", topic)
    response = stub.ShareAcknowledge(share_pb2.ShareAcknowledgeRequest(
        group_id="svc-g2", member_id="m2", acknowledgements=[accept(topic, 0)]), timeout=TIMEOUT_S)
    (refused,) = response.refused
    assert refused.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert refused.error.reason == "RECORD_NOT_ACQUIRED" and refused.error.metadata["offset"] == "0"


def test_negative_delay_is_invalid_argument(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("task", 1))
    share_fetch(stub, "svc-g3", "m1", topic)
    release = share_pb2.ShareAcknowledgement(topic=topic, partition=0, first_offset=0, last_offset=0,
                                             kind=share_pb2.ACKNOWLEDGE_RELEASE, delay_ms=-1)
    expect_failure(stub.ShareAcknowledge, share_pb2.ShareAcknowledgeRequest(
        group_id="svc-g3", member_id="m1", acknowledgements=[release]),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")


def test_unspecified_kind_is_invalid_argument(stub, topic):
    create_topic(stub, topic)
    bad = share_pb2.ShareAcknowledgement(topic=topic, partition=0, first_offset=0, last_offset=0)
    expect_failure(stub.ShareAcknowledge, share_pb2.ShareAcknowledgeRequest(
        group_id="svc-g4", member_id="m1", acknowledgements=[bad]),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")


def test_unknown_share_group_is_not_found(stub):
    expect_failure(stub.DescribeShareGroup, share_pb2.DescribeShareGroupRequest(group_id="svc-nobody"),
                   grpc.StatusCode.NOT_FOUND, "UNKNOWN_GROUP")


def test_fetch_without_member_id_is_invalid_argument(stub, topic):
    create_topic(stub, topic)
    expect_failure(stub.ShareFetch, share_pb2.ShareFetchRequest(group_id="svc-g5", topics=[topic]),
                   grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")


def test_fetch_from_an_unknown_topic_is_not_found(stub, topic):
    expect_failure(stub.ShareFetch, share_pb2.ShareFetchRequest(group_id="svc-g6", member_id="m", topics=[topic]),
                   grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOPIC")


def test_alter_config_shows_in_describe_and_bad_keys_are_refused(stub):
    description = stub.AlterShareGroupConfig(share_pb2.AlterShareGroupConfigRequest(
        group_id="svc-g7", set={"lock_ms": "5s", "backoff": "1s,5s"}), timeout=TIMEOUT_S)
    assert description.config["lock_ms"] == "5000" and description.config["backoff_ms"] == "1000ms,5000ms"
    expect_failure(stub.AlterShareGroupConfig, share_pb2.AlterShareGroupConfigRequest(
        group_id="svc-g7", set={"colour": "red"}), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CONFIG")
    listed = stub.ListShareGroups(share_pb2.ListShareGroupsRequest(), timeout=TIMEOUT_S)
    assert "svc-g7" in {g.group_id for g in listed.groups}


def test_reset_is_refused_while_records_are_acquired_then_moves_the_start(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("task", 3))
    share_fetch(stub, "svc-g8", "m1", topic, max_records=1)
    reset = share_pb2.ResetShareGroupRequest(group_id="svc-g8", topic=topic, spec=share_pb2.SHARE_RESET_LATEST)
    expect_failure(stub.ResetShareGroup, reset, grpc.StatusCode.FAILED_PRECONDITION, "GROUP_NOT_EMPTY")
    stub.ShareAcknowledge(share_pb2.ShareAcknowledgeRequest(group_id="svc-g8", member_id="m1", leave=True),
                          timeout=TIMEOUT_S)
    (state,) = stub.ResetShareGroup(reset, timeout=TIMEOUT_S).partitions
    assert state.start_offset == 3


def test_share_stream_answers_in_order_and_a_failed_request_keeps_the_stream(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("task", 4))

    def request(correlation_id, topics, acks=()):  # type: ignore[no-untyped-def]
        return share_pb2.ShareFetchRequest(group_id="svc-s1", member_id="m1", topics=topics, max_records=2,
                                           acknowledgements=list(acks), correlation_id=correlation_id)

    sent = [request(7, [topic]), request(8, [topic + "-missing"]), request(9, [topic], [accept(topic, 0, 1)])]
    first, failed, third = stub.ShareStream(iter(sent), timeout=TIMEOUT_S)  # all sent before any answer
    assert (first.correlation_id, acquired_offsets(first)) == (7, [0, 1])
    assert failed.correlation_id == 8 and failed.error.reason == "UNKNOWN_TOPIC"
    assert failed.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert (third.correlation_id, list(third.refused), acquired_offsets(third)) == (9, [], [2, 3])


class Requests:
    """A ShareStream's request iterator fed by the test, one request at a time."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[share_pb2.ShareFetchRequest | None] = queue.SimpleQueue()

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.queue.get, None)


def waiting_request(correlation_id: int, topic: str, acks=(), max_wait_ms: int = 5000):  # type: ignore[no-untyped-def]
    return share_pb2.ShareFetchRequest(group_id="svc-w1", member_id="m1", topics=[topic],
                                       max_records=10, max_wait_ms=max_wait_ms, correlation_id=correlation_id,
                                       acknowledgements=list(acks))


def test_a_stream_request_carrying_acks_ends_the_waits_of_those_before_it(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("task", 2))
    requests = Requests()
    call = stub.ShareStream(iter(requests), timeout=TIMEOUT_S)
    try:
        requests.queue.put(waiting_request(1, topic))
        assert acquired_offsets(next(call)) == [0, 1]
        requests.queue.put(waiting_request(2, topic))  # nothing left: waits up to 5 s
        requests.queue.put(waiting_request(3, topic))  # a second prefetch, queued behind it
        time.sleep(0.1)
        sent = time.monotonic()
        requests.queue.put(waiting_request(4, topic, [accept(topic, 0, 1)]))
        ended = [next(call), next(call)]
        assert [(e.correlation_id, acquired_offsets(e)) for e in ended] == [(2, []), (3, [])]
        assert time.monotonic() - sent < 1.0  # answered at once, not after their 5 s
        (state,) = stub.DescribeShareGroup(share_pb2.DescribeShareGroupRequest(group_id="svc-w1"),
                                            timeout=TIMEOUT_S).partitions
        assert (state.start_offset, state.acquired) == (2, 0)  # the acks behind it applied
    finally:
        call.cancel()


def test_a_stream_request_without_acks_leaves_the_wait_of_the_one_before_it(stub, topic):
    create_topic(stub, topic)
    requests = Requests()
    call = stub.ShareStream(iter(requests), timeout=TIMEOUT_S)
    try:
        sent = time.monotonic()
        requests.queue.put(waiting_request(1, topic, max_wait_ms=600))
        requests.queue.put(waiting_request(2, topic, max_wait_ms=600))  # a prefetch: no acks
        first = next(call)
        assert first.correlation_id == 1 and time.monotonic() - sent >= 0.55
    finally:
        call.cancel()
