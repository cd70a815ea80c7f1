"""Produce and ProduceStream over gRPC: offsets, acks 0/1/all, record fields, pipelining, a
transaction ended behind its last batch (end_transaction)."""

from __future__ import annotations

import random
import uuid

import grpc

from logstore.api.v1 import common_pb2, records_pb2, transactions_pb2
from logstore.records import decode_records, encode_batch, now_ms
from tests.server.helpers import (
    TIMEOUT_S,
    batch,
    create_topic,
    log_end,
    produce,
    produce_request,
    read_all,
    values,
    values_of,
    wait_until,
)


def test_produce_assigns_consecutive_offsets(stub, topic):
    create_topic(stub, topic)

    first = produce(stub, topic, values_of("a", 5))
    second = produce(stub, topic, values_of("b", 3))

    assert (first.base_offset, first.last_offset) == (0, 4)
    assert (second.base_offset, second.last_offset) == (5, 7)
    assert second.log_start_offset == 0
    assert (second.topic, second.partition) == (topic, 0)
    assert values(read_all(stub, topic)) == values_of("a", 5) + values_of("b", 3)


def test_produce_appends_to_several_partitions_in_one_request(stub, topic):
    create_topic(stub, topic, partitions=3)
    request = records_pb2.ProduceRequest(
        acks=records_pb2.ACKS_ALL,
        partitions=[
            records_pb2.PartitionRecords(topic=topic, partition=p, records=batch(values_of(f"p{p}", p + 1)))
            for p in (2, 0, 1)
        ],
    )

    response = stub.Produce(request, timeout=TIMEOUT_S)

    assert [(r.partition, r.base_offset, r.last_offset) for r in response.results] == [
        (2, 0, 2), (0, 0, 0), (1, 0, 1)
    ]
    for p in range(3):
        assert values(read_all(stub, topic, p)) == values_of(f"p{p}", p + 1)


def test_produce_appends_back_to_back_batches_of_one_partition(stub, topic):
    create_topic(stub, topic)
    payload = batch(values_of("x", 2)) + batch(values_of("y", 3))

    response = stub.Produce(produce_request(topic, payload), timeout=TIMEOUT_S)

    assert (response.results[0].base_offset, response.results[0].last_offset) == (0, 4)
    assert values(read_all(stub, topic)) == values_of("x", 2) + values_of("y", 3)


def test_produce_acks_none_answers_without_offsets_and_appends(stub, topic):
    create_topic(stub, topic)

    result = produce(stub, topic, values_of("fire-and-forget", 4), acks=records_pb2.ACKS_NONE)

    assert result.base_offset == -1
    wait_until(lambda: log_end(stub, topic) == 4)
    assert values(read_all(stub, topic)) == values_of("fire-and-forget", 4)


def test_produce_acks_leader_answers_with_offsets(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("pre", 2))

    result = produce(stub, topic, values_of("leader", 3), acks=records_pb2.ACKS_LEADER)

    assert (result.base_offset, result.last_offset) == (2, 4)
    assert values(read_all(stub, topic, offset=2)) == values_of("leader", 3)


def test_produce_acks_all_on_a_flush_always_topic_answers_with_offsets(stub, topic):
    create_topic(stub, topic, flush="always")

    results = [produce(stub, topic, values_of(f"all{i}", 2), acks=records_pb2.ACKS_ALL) for i in range(3)]

    assert [(r.base_offset, r.last_offset) for r in results] == [(0, 1), (2, 3), (4, 5)]
    assert log_end(stub, topic) == 6


def test_produce_unspecified_acks_behaves_as_acks_all(stub, topic):
    create_topic(stub, topic)

    result = produce(stub, topic, [b"v"], acks=records_pb2.ACKS_UNSPECIFIED)

    assert (result.base_offset, result.last_offset) == (0, 0)


def test_produced_keys_timestamps_headers_and_nulls_read_back(stub, topic):
    create_topic(stub, topic)
    base = now_ms() - 5_000
    payload = encode_batch(
        [b"v0", None, b""],
        keys=[None, b"k1", b"k2"],
        timestamps=[base, base + 7, base + 3],
        headers=[None, [("h", b"1"), ("n", None)], None],
    )

    stub.Produce(produce_request(topic, payload), timeout=TIMEOUT_S)

    records = read_all(stub, topic)
    assert [(r.offset, r.timestamp, r.key, r.value) for r in records] == [
        (0, base, None, b"v0"),
        (1, base + 7, b"k1", None),
        (2, base + 3, b"k2", b""),
    ]
    assert records[1].headers == (("h", b"1"), ("n", None))


def test_produced_batch_bytes_come_back_with_assigned_offsets(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("pre", 3))
    payload = batch(values_of("z", 2), timestamps=now_ms())

    stub.Produce(produce_request(topic, payload), timeout=TIMEOUT_S)

    fetched = stub.Fetch(
        records_pb2.FetchRequest(partitions=[records_pb2.FetchPartition(topic=topic, offset=3)]),
        timeout=TIMEOUT_S,
    ).partitions[0]
    assert fetched.records[16:] == payload[16:]  # everything but base_offset and leader_epoch
    assert int.from_bytes(fetched.records[:8], "little") == 3
    assert [r.offset for r in decode_records(fetched.records)] == [3, 4]


# -- ProduceStream ----------------------------------------------------------------------------------


def test_produce_stream_answers_in_request_order_with_correlation_ids(stub, topic):
    create_topic(stub, topic)
    correlation_ids = random.Random(7).sample(range(1, 1 << 40), 30)
    requests = [
        produce_request(topic, batch(values_of(f"s{i}", 2)), correlation_id=cid)
        for i, cid in enumerate(correlation_ids)
    ]

    responses = list(stub.ProduceStream(iter(requests), timeout=TIMEOUT_S))

    assert [r.correlation_id for r in responses] == correlation_ids
    assert [r.results[0].base_offset for r in responses] == list(range(0, 60, 2))
    assert all(not r.HasField("error") for r in responses)
    assert values(read_all(stub, topic)) == [v for i in range(30) for v in values_of(f"s{i}", 2)]


def test_produce_stream_reads_ahead_of_large_requests_and_still_answers_in_order(stub, topic):
    create_topic(stub, topic)
    large = [b"L" * (300 << 10)]  # a request past READ_AHEAD_BYTES: the next is read meanwhile
    requests = [
        produce_request(topic, batch(large), correlation_id=1),
        produce_request(topic, batch(large), correlation_id=2),
        produce_request(topic, b"\x00" * (300 << 10), correlation_id=3),
        produce_request(topic, batch([b"small"]), correlation_id=4),
        produce_request(topic, batch(large), correlation_id=5),
    ]

    responses = list(stub.ProduceStream(iter(requests), timeout=TIMEOUT_S))

    assert [r.correlation_id for r in responses] == [1, 2, 3, 4, 5]
    assert responses[2].error.reason == "CORRUPT_BATCH"
    assert [r.results[0].base_offset for r in responses if not r.HasField("error")] == [0, 1, 2, 3]
    assert values(read_all(stub, topic)) == [large[0], large[0], b"small", large[0]]


def test_produce_stream_honours_each_requests_acks(stub, topic):
    create_topic(stub, topic)
    acks = [records_pb2.ACKS_ALL, records_pb2.ACKS_LEADER, records_pb2.ACKS_NONE, records_pb2.ACKS_ALL]
    requests = [
        produce_request(topic, batch([f"m{i}".encode()]), acks=a, correlation_id=i + 1)
        for i, a in enumerate(acks)
    ]

    responses = list(stub.ProduceStream(iter(requests), timeout=TIMEOUT_S))

    assert [r.correlation_id for r in responses] == [1, 2, 3, 4]
    assert [r.results[0].base_offset for r in responses] == [0, 1, -1, 3]
    wait_until(lambda: log_end(stub, topic) == 4)
    assert values(read_all(stub, topic)) == [b"m0", b"m1", b"m2", b"m3"]


def test_produce_stream_answers_a_failed_request_with_its_error_and_stays_open(stub, topic):
    create_topic(stub, topic)
    requests = [
        produce_request(topic, batch([b"one"]), correlation_id=1),
        produce_request(topic + "-missing", batch([b"lost"]), correlation_id=2),
        produce_request(topic, b"\x00" * 70, correlation_id=3),
        produce_request(topic, batch([b"two"]), correlation_id=4),
    ]

    responses = list(stub.ProduceStream(iter(requests), timeout=TIMEOUT_S))

    assert [r.correlation_id for r in responses] == [1, 2, 3, 4]
    assert not responses[0].HasField("error")
    assert (responses[1].error.code, responses[1].error.reason) == (
        grpc.StatusCode.NOT_FOUND.value[0], "UNKNOWN_TOPIC"
    )
    assert (responses[2].error.code, responses[2].error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT.value[0], "CORRUPT_BATCH"
    )
    assert responses[3].results[0].base_offset == 1
    assert values(read_all(stub, topic)) == [b"one", b"two"]


# -- end_transaction ----------------------------------------------------------------------------


def _transactional(topic: str, tid: str, pid: int, epoch: int, sequence: int, *values: bytes
                   ) -> records_pb2.ProduceRequest:
    batch = encode_batch(list(values), producer_id=pid, producer_epoch=epoch,
                         base_sequence=sequence, transactional=True)
    return records_pb2.ProduceRequest(
        transactional_id=tid,
        partitions=[records_pb2.PartitionRecords(topic=topic, partition=0, records=batch)],
    )


def _end(tid: str, pid: int, epoch: int, next_sequence: dict[str, int]) -> records_pb2.ProduceRequest:
    return records_pb2.ProduceRequest(transactional_id=tid, end_transaction=records_pb2.EndTransaction(
        producer_id=pid, producer_epoch=epoch, commit=True,
        sequences=[records_pb2.PartitionSequence(topic=t, partition=0, next_sequence=s)
                   for t, s in next_sequence.items()],
    ))


def _committed(stub, topic: str) -> tuple[list[bytes], int]:  # type: ignore[no-untyped-def]
    """The values a read_committed fetch returns, and the last stable offset."""
    response = stub.Fetch(records_pb2.FetchRequest(
        partitions=[records_pb2.FetchPartition(topic=topic, partition=0, offset=0)],
        isolation_level=common_pb2.READ_COMMITTED,
    ), timeout=TIMEOUT_S)
    (fetched,) = response.partitions
    aborted = [(a.first_offset, a.last_offset) for a in fetched.aborted_transactions]
    kept = [r.value for r in decode_records(fetched.records)
            if not any(first <= r.offset <= last for first, last in aborted)]
    return kept, fetched.last_stable_offset


def test_an_end_behind_the_batches_commits_them_and_a_short_count_aborts(stub, topic):
    create_topic(stub, topic)
    tid = f"end-{uuid.uuid4().hex[:8]}"
    ids = stub.InitProducerId(transactions_pb2.InitProducerIdRequest(transactional_id=tid),
                              timeout=TIMEOUT_S)
    pid, epoch = ids.producer_id, ids.producer_epoch
    requests = [
        _transactional(topic, tid, pid, epoch, 0, b"a", b"b"),
        _transactional(topic, tid, pid, epoch, 2, b"c"),
        _end(tid, pid, epoch, {topic: 3}),  # commits: the broker has sequences 0..2
        _end(tid, pid, epoch, {topic: 3}),  # sent again (a lost answer): done already
        _transactional(topic, tid, pid, epoch, 3, b"d"),
        _end(tid, pid, epoch, {topic: 5}),  # the producer counts a batch the broker lacks
    ]

    responses = list(stub.ProduceStream(iter(requests), timeout=TIMEOUT_S))

    assert [r.HasField("error") for r in responses] == [False] * 5 + [True]
    assert responses[5].error.reason == "TRANSACTION_ABORTED"
    assert "expects sequence 4 next" in responses[5].error.message
    # records 0-2, the commit marker at 3, "d" at 4 and the abort marker at 5: nothing open
    assert _committed(stub, topic) == ([b"a", b"b", b"c"], 6)
