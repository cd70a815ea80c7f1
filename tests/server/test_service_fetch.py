"""Fetch (with long poll) and ListOffsets over gRPC."""

from __future__ import annotations

import threading
import time

import grpc

from logstore.api.v1 import admin_pb2, records_pb2
from logstore.records import decode_records, now_ms
from tests.server.helpers import (
    TIMEOUT_S,
    create_topic,
    fetch_partition,
    produce,
    read_all,
    values,
    values_of,
)

# -- Fetch ------------------------------------------------------------------------------------------


def test_fetch_returns_whole_batches_from_the_requested_offset(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("a", 4))
    produce(stub, topic, values_of("b", 4))

    fetched = fetch_partition(stub, topic, offset=6)

    records = decode_records(fetched.records)
    assert [r.offset for r in records] == [4, 5, 6, 7]  # the batch holding offset 6
    assert (fetched.next_offset, fetched.high_watermark, fetched.log_start_offset) == (8, 8, 0)
    assert fetched.last_stable_offset == 8
    assert not fetched.HasField("error")


def test_fetch_at_the_log_end_returns_no_records(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("a", 3))

    fetched = fetch_partition(stub, topic, offset=3)

    assert fetched.records == b""
    assert (fetched.next_offset, fetched.high_watermark) == (3, 3)


def test_fetch_max_bytes_returns_at_least_one_batch(stub, topic):
    create_topic(stub, topic)
    for i in range(5):
        produce(stub, topic, [f"{i}".encode() * 500])

    fetched = fetch_partition(stub, topic, offset=0, max_bytes=10)

    assert [r.offset for r in decode_records(fetched.records)] == [0]
    assert fetched.next_offset == 1
    assert values(read_all(stub, topic, max_bytes=10)) == [f"{i}".encode() * 500 for i in range(5)]


def test_fetch_reads_several_partitions_in_one_request(stub, topic):
    create_topic(stub, topic, partitions=3)
    for p in range(3):
        produce(stub, topic, values_of(f"p{p}", p + 1), partition=p)

    response = stub.Fetch(
        records_pb2.FetchRequest(
            partitions=[records_pb2.FetchPartition(topic=topic, partition=p, offset=0) for p in (1, 2, 0)]
        ),
        timeout=TIMEOUT_S,
    )

    assert [p.partition for p in response.partitions] == [1, 2, 0]
    for fetched in response.partitions:
        assert values(decode_records(fetched.records)) == values_of(f"p{fetched.partition}", fetched.partition + 1)


def test_long_poll_fetch_returns_promptly_after_an_append_by_another_thread(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, [b"before"])
    appended_at: list[float] = []

    def append_later() -> None:
        time.sleep(0.4)  # the fetch below is parked by now
        appended_at.append(time.perf_counter())
        produce(stub, topic, [b"after"], acks=records_pb2.ACKS_LEADER)

    producer = threading.Thread(target=append_later)
    started = time.perf_counter()
    producer.start()
    try:
        fetched = fetch_partition(stub, topic, offset=1, max_wait_ms=5000)
        returned = time.perf_counter()
    finally:
        producer.join(TIMEOUT_S)

    assert values(decode_records(fetched.records)) == [b"after"]
    assert returned - started >= 0.3, "the fetch did not wait for the append"
    assert returned - appended_at[0] < 0.1, f"woke {returned - appended_at[0]:.3f}s after the append"


def test_long_poll_fetch_without_an_append_returns_empty_after_max_wait(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, [b"only"])

    started = time.perf_counter()
    fetched = fetch_partition(stub, topic, offset=1, max_wait_ms=1500)
    elapsed = time.perf_counter() - started

    assert fetched.records == b""
    assert fetched.next_offset == 1
    assert 1.45 <= elapsed < 2.5, elapsed


def test_long_poll_fetch_wakes_on_an_append_to_any_partition_it_reads(stub, topic):
    create_topic(stub, topic, partitions=2)

    def append_later() -> None:
        time.sleep(0.3)
        produce(stub, topic, [b"p1"], partition=1, acks=records_pb2.ACKS_LEADER)

    producer = threading.Thread(target=append_later)
    started = time.perf_counter()
    producer.start()
    try:
        response = stub.Fetch(
            records_pb2.FetchRequest(
                partitions=[records_pb2.FetchPartition(topic=topic, partition=p) for p in (0, 1)],
                max_wait_ms=5000,
            ),
            timeout=TIMEOUT_S,
        )
    finally:
        producer.join(TIMEOUT_S)

    assert time.perf_counter() - started < 2
    assert [values(decode_records(p.records)) for p in response.partitions] == [[], [b"p1"]]


# -- ListOffsets ------------------------------------------------------------------------------------


def _list_offset(stub, topic, spec, timestamp_ms=0, partition=0) -> int:
    response = stub.ListOffsets(
        records_pb2.ListOffsetsRequest(
            partitions=[
                records_pb2.ListOffsetsPartition(
                    topic=topic, partition=partition, spec=spec, timestamp_ms=timestamp_ms
                )
            ]
        ),
        timeout=TIMEOUT_S,
    )
    (listed,) = response.offsets
    assert not listed.HasField("error"), listed.error
    assert (listed.topic, listed.partition) == (topic, partition)
    return listed.offset


def _timed_topic(stub, topic) -> int:
    """Three batches of three records, stamped base, base+1000 and base+2000; returns base."""
    create_topic(stub, topic)
    base = now_ms() - 60_000
    for i in range(3):
        produce(stub, topic, values_of(f"t{i}", 3), timestamps=base + 1000 * i)
    return base


def test_list_offsets_earliest_and_latest(stub, topic):
    _timed_topic(stub, topic)

    assert _list_offset(stub, topic, records_pb2.OFFSET_EARLIEST) == 0
    assert _list_offset(stub, topic, records_pb2.OFFSET_LATEST) == 9


def test_list_offsets_of_an_empty_partition(stub, topic):
    create_topic(stub, topic)

    assert _list_offset(stub, topic, records_pb2.OFFSET_EARLIEST) == 0
    assert _list_offset(stub, topic, records_pb2.OFFSET_LATEST) == 0
    assert _list_offset(stub, topic, records_pb2.OFFSET_TIMESTAMP, now_ms()) == 0


def test_list_offsets_by_timestamp_finds_the_first_record_at_or_after_it(stub, topic):
    base = _timed_topic(stub, topic)

    assert _list_offset(stub, topic, records_pb2.OFFSET_TIMESTAMP, base - 1) == 0
    assert _list_offset(stub, topic, records_pb2.OFFSET_TIMESTAMP, base) == 0
    assert _list_offset(stub, topic, records_pb2.OFFSET_TIMESTAMP, base + 1) == 3
    assert _list_offset(stub, topic, records_pb2.OFFSET_TIMESTAMP, base + 1000) == 3
    assert _list_offset(stub, topic, records_pb2.OFFSET_TIMESTAMP, base + 2000) == 6


def test_list_offsets_by_a_timestamp_newer_than_every_record_is_the_log_end(stub, topic):
    base = _timed_topic(stub, topic)

    assert _list_offset(stub, topic, records_pb2.OFFSET_TIMESTAMP, base + 2001) == 9


def test_long_poll_fetch_on_a_topic_deleted_meanwhile_returns_its_error_at_once(stub, topic):
    create_topic(stub, topic)

    def delete_later() -> None:
        time.sleep(0.3)
        stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=topic), timeout=TIMEOUT_S)

    deleter = threading.Thread(target=delete_later)
    started = time.perf_counter()
    deleter.start()
    try:
        fetched = fetch_partition(stub, topic, max_wait_ms=5000)
    finally:
        deleter.join(TIMEOUT_S)

    assert time.perf_counter() - started < 2
    assert (fetched.error.code, fetched.error.reason) == (grpc.StatusCode.NOT_FOUND.value[0], "UNKNOWN_TOPIC")
