"""A follower reads a ``ReplicaFetchResponse`` by hand, so that the megabytes of batches it
carries are never copied between the received bytes and the log write.

Layout (``proto/logstore/api/v1/cluster.proto``)::

    ReplicaFetchResponse    1: ReplicaFetchedPartition, repeated (length-delimited)
    ReplicaFetchedPartition 1: topic  2: partition  3: records (bytes)  4: high_watermark
                            5: log_start_offset  6: log_end_offset  7: error

Each partition's ``records`` field (key ``(3 << 3) | 2``, a varint length, the bytes) becomes a
memoryview of the response; its other fields, a few dozen bytes, are parsed by the generated
class. The leader writes the response the same way around its segment's bytes
(``logstore.server.wire``), one copy in all. Any protobuf library reads and writes this format:
unknown fields are skipped by both.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from logstore.api.v1 import cluster_pb2
from logstore.varint import decode_varint, skip_field

LENGTH_DELIMITED = 2
PARTITIONS_FIELD = 1
RECORDS_FIELD = 3

#: The gRPC method a follower calls with this decoder.
METHOD = "/logstore.api.v1.LogStore/ReplicaFetch"


@dataclass(slots=True)
class ReplicaFetched:
    """One partition of a replica fetch: its small fields, and ``records`` viewing the response."""

    fields: cluster_pb2.ReplicaFetchedPartition
    records: memoryview


def _partition(view: memoryview, position: int, end: int) -> ReplicaFetched:
    records = memoryview(b"")
    small: list[memoryview] = []
    while position < end:
        start = position
        key, position = decode_varint(view, position)
        if key == (RECORDS_FIELD << 3) | LENGTH_DELIMITED:
            length, position = decode_varint(view, position)
            if position + length > end:
                raise ValueError("a partition's records run past its length")
            records = view[position : position + length]
            position += length
        else:
            position = skip_field(view, position, key & 7)
            small.append(view[start:position])
    if position != end:
        raise ValueError("a ReplicaFetchedPartition runs past its length")
    try:
        fields = cluster_pb2.ReplicaFetchedPartition.FromString(b"".join(small))
    except DecodeError as exc:
        raise ValueError(f"a malformed ReplicaFetchedPartition: {exc}") from None
    return ReplicaFetched(fields, records)


def decode_replica_fetch_response(data: bytes) -> list[ReplicaFetched]:
    """The partitions of a serialized ``ReplicaFetchResponse``; ValueError if it is malformed."""
    view = memoryview(data)
    end = len(view)
    position = 0
    partitions: list[ReplicaFetched] = []
    while position < end:
        key, position = decode_varint(view, position)
        if key == (PARTITIONS_FIELD << 3) | LENGTH_DELIMITED:
            length, position = decode_varint(view, position)
            if position + length > end:
                raise ValueError("a ReplicaFetchedPartition runs past the response's end")
            partitions.append(_partition(view, position, position + length))
            position += length
        else:
            position = skip_field(view, position, key & 7)
    if position != end:
        raise ValueError("a ReplicaFetchResponse runs past its end")
    return partitions
