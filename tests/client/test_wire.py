"""The hand-written ProduceRequest / FetchResponse wire format agrees with the generated code."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from logstore.api.v1 import common_pb2, records_pb2
from logstore.client.wire import (
    decode_fetch_response,
    encode_produce_request,
    encode_varint,
    read_varint,
)

int32 = st.integers(-(1 << 31), (1 << 31) - 1)
int64 = st.integers(-(1 << 63), (1 << 63) - 1)
topics = st.text(max_size=20)
partition_records = st.tuples(topics, int32, st.lists(st.binary(max_size=50), max_size=3))


@given(st.sampled_from([0, 1, 2, 3]), st.lists(partition_records, max_size=4),
       st.integers(0, (1 << 64) - 1), st.text(max_size=10))
def test_produce_request_is_byte_identical_to_serialize_to_string(
    acks: int, partitions: list[tuple[str, int, list[bytes]]], correlation_id: int,
    transactional_id: str,
) -> None:
    expected = records_pb2.ProduceRequest(
        acks=acks,  # type: ignore[arg-type]
        partitions=[records_pb2.PartitionRecords(topic=t, partition=p, records=b"".join(r))
                    for t, p, r in partitions],
        correlation_id=correlation_id,
        transactional_id=transactional_id,
    ).SerializeToString()
    assert encode_produce_request(acks, partitions, correlation_id, transactional_id) == expected


def test_a_produce_request_carries_a_transactions_end() -> None:
    end = records_pb2.EndTransaction(producer_id=7, producer_epoch=2, commit=True, sequences=[
        records_pb2.PartitionSequence(topic="t", partition=1, next_sequence=300)])
    expected = records_pb2.ProduceRequest(
        acks=3, partitions=[records_pb2.PartitionRecords(topic="t", partition=1, records=b"xy")],
        correlation_id=9, transactional_id="tx", end_transaction=end,
    ).SerializeToString()
    encoded = encode_produce_request(3, [("t", 1, [b"x", b"y"])], 9, "tx", end.SerializeToString())
    assert encoded == expected


fetched = st.builds(
    records_pb2.FetchedPartition,
    topic=topics, partition=int32, records=st.binary(max_size=200), high_watermark=int64,
    log_start_offset=int64, last_stable_offset=int64, next_offset=int64,
)


@given(st.lists(fetched, max_size=4))
def test_fetch_response_reads_what_the_generated_code_writes(
    partitions: list[records_pb2.FetchedPartition],
) -> None:
    data = records_pb2.FetchResponse(partitions=partitions).SerializeToString()
    decoded = decode_fetch_response(data)
    assert len(decoded) == len(partitions)
    for got, want in zip(decoded, partitions, strict=True):
        assert (got.topic, got.partition, bytes(got.records)) == (
            want.topic, want.partition, want.records)
        assert (got.high_watermark, got.log_start_offset, got.last_stable_offset,
                got.next_offset) == (want.high_watermark, want.log_start_offset,
                                     want.last_stable_offset, want.next_offset)
        assert got.error is None


def test_fetched_records_are_a_view_of_the_response_bytes() -> None:
    data = records_pb2.FetchResponse(
        partitions=[records_pb2.FetchedPartition(topic="t", records=b"batch-bytes")]
    ).SerializeToString()
    records = decode_fetch_response(data)[0].records
    assert isinstance(records, memoryview) and records.obj is data


def test_fetch_response_errors_and_aborted_transactions() -> None:
    data = records_pb2.FetchResponse(partitions=[records_pb2.FetchedPartition(
        topic="t", partition=1,
        aborted_transactions=[records_pb2.AbortedTransaction(producer_id=5, first_offset=9,
                                                              last_offset=12)],
        error=common_pb2.ErrorDetail(code=11, reason="OFFSET_OUT_OF_RANGE", message="m",
                                     metadata={"log_end_offset": "3"}),
    )]).SerializeToString()
    fetched, = decode_fetch_response(data)
    assert fetched.aborted_transactions == [(5, 9, 12)]
    assert fetched.error is not None and fetched.error.reason == "OFFSET_OUT_OF_RANGE"
    assert dict(fetched.error.metadata) == {"log_end_offset": "3"}


def test_unknown_fields_are_skipped() -> None:
    known = records_pb2.FetchedPartition(topic="t", next_offset=4).SerializeToString()
    unknown = (encode_varint((50 << 3) | 0) + encode_varint(7)          # varint
               + encode_varint((51 << 3) | 2) + encode_varint(3) + b"abc"  # bytes
               + encode_varint((52 << 3) | 5) + b"\x00" * 4                # fixed32
               + encode_varint((53 << 3) | 1) + b"\x00" * 8)               # fixed64
    inner = known + unknown
    data = encode_varint((1 << 3) | 2) + encode_varint(len(inner)) + inner + unknown
    fetched, = decode_fetch_response(data)
    assert (fetched.topic, fetched.next_offset) == ("t", 4)


@given(st.integers(0, (1 << 64) - 1))
def test_varints_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert read_varint(encoded, 0) == (value, len(encoded))
