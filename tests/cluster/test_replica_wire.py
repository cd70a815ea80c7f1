"""The follower's hand-made ReplicaFetchResponse reader agrees with the generated classes, and its
records view the received bytes."""

from __future__ import annotations

import pytest

from logstore.api.v1 import cluster_pb2, common_pb2
from logstore.cluster.replica_wire import decode_replica_fetch_response
from logstore.server import wire


def _partitions() -> list[cluster_pb2.ReplicaFetchedPartition]:
    return [
        cluster_pb2.ReplicaFetchedPartition(topic="t", partition=0, records=b"\x01" * 300, high_watermark=7,
                                            log_start_offset=-1, log_end_offset=1 << 40),
        cluster_pb2.ReplicaFetchedPartition(topic="t", partition=1, high_watermark=-1,
                                            error=common_pb2.ErrorDetail(reason="NOT_LEADER")),
    ]


def test_a_response_serialized_by_protobuf_reads_the_same_by_hand():
    expected = _partitions()
    data = cluster_pb2.ReplicaFetchResponse(partitions=expected).SerializeToString()
    decoded = decode_replica_fetch_response(data)
    assert [bytes(d.records) for d in decoded] == [p.records for p in expected]
    for got, want in zip(decoded, expected, strict=True):
        want.ClearField("records")
        assert got.fields == want


def test_the_leaders_one_copy_response_reads_back_with_records_viewing_it():
    expected = _partitions()
    pieces = []
    for p in expected:
        small = cluster_pb2.ReplicaFetchedPartition()
        small.CopyFrom(p)
        small.ClearField("records")
        pieces.append(wire.encode_fetched_partition(small, memoryview(p.records)))
    data = wire.encode_fetch_response(pieces)
    assert cluster_pb2.ReplicaFetchResponse.FromString(data) == cluster_pb2.ReplicaFetchResponse(partitions=expected)
    first = decode_replica_fetch_response(data)[0]
    assert first.records.obj is data and bytes(first.records) == expected[0].records


def test_a_truncated_response_is_a_value_error():
    data = cluster_pb2.ReplicaFetchResponse(partitions=_partitions()).SerializeToString()
    with pytest.raises(ValueError):
        decode_replica_fetch_response(data[:-3])
