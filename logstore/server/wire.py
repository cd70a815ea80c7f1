"""Hand-rolled protobuf wire encoding for the two messages that carry megabytes of records.

Building a ``FetchResponse`` the ordinary way copies each partition's records three times (out of
the segment mapping, into the protobuf message, out again when serializing); parsing a
``ProduceRequest`` copies every batch once more. These functions speak the same wire format
directly: a fetched partition's small fields are serialized by protobuf, and its ``records`` field
(tag 3, length-delimited) is appended straight from the segment's memoryview — one copy in all.
A produce request is parsed into memoryviews of the request bytes — no copy.

The wire format is protobuf's: a field is a varint key ``(number << 3) | wire_type``, then a
varint (type 0), 8 bytes (type 1), a varint length and that many bytes (type 2), or 4 bytes
(type 5). Fields may come in any order and unknown ones are skipped, so a message built here is
read by any protobuf library (tests check both directions against the generated code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message

from logstore.api.v1 import records_pb2
from logstore.errors import InvalidRequestError
from logstore.varint import decode_varint as decode_unsigned
from logstore.varint import encode_varint

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5

#: FetchResponse.partitions (1), FetchedPartition.records (3), SubscribeResponse.records (1).
FETCH_PARTITIONS_KEY = bytes([(1 << 3) | LENGTH_DELIMITED])
FETCHED_RECORDS_KEY = bytes([(3 << 3) | LENGTH_DELIMITED])
SUBSCRIBE_RECORDS_KEY = bytes([(1 << 3) | LENGTH_DELIMITED])


def decode_varint(data: memoryview, position: int) -> tuple[int, int]:
    try:
        return decode_unsigned(data, position)
    except ValueError as exc:
        raise InvalidRequestError(f"malformed request: {exc}", field="request") from None


def _as_int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _as_int32(value: int) -> int:
    value &= (1 << 64) - 1
    value = value - (1 << 64) if value >= 1 << 63 else value
    if not -(1 << 31) <= value < 1 << 31:
        raise InvalidRequestError("malformed request: an int32 field is out of range", field="request")
    return value


def _fields(data: memoryview) -> list[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of every field in a message."""
    fields: list[tuple[int, int, int | memoryview]] = []
    position = 0
    end = len(data)
    while position < end:
        key, position = decode_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise InvalidRequestError("malformed request: field number 0", field="request")
        if wire_type == VARINT:
            value, position = decode_varint(data, position)
            fields.append((number, wire_type, value))
        elif wire_type == LENGTH_DELIMITED:
            length, position = decode_varint(data, position)
            if position + length > end:
                raise InvalidRequestError("malformed request: a field runs past the end", field="request")
            fields.append((number, wire_type, data[position : position + length]))
            position += length
        elif wire_type == FIXED64:
            position += 8
        elif wire_type == FIXED32:
            position += 4
        else:
            raise InvalidRequestError(f"malformed request: wire type {wire_type}", field="request")
        if position > end:
            raise InvalidRequestError("malformed request: a field runs past the end", field="request")
    return fields


@dataclass(slots=True)
class PartitionRecordsView:
    topic: str
    partition: int
    records: memoryview


@dataclass(slots=True)
class ProduceRequestView:
    acks: int
    partitions: list[PartitionRecordsView]
    correlation_id: int
    transactional_id: str
    #: ``end_transaction`` (field 5), parsed by the generated class: it is small.
    end_transaction: records_pb2.EndTransaction | None = None


def _text(value: int | memoryview, name: str) -> str:
    if not isinstance(value, memoryview):
        raise InvalidRequestError(f"malformed request: {name} is not a string", field=name)
    try:
        return bytes(value).decode()
    except UnicodeDecodeError:
        raise InvalidRequestError(f"malformed request: {name} is not UTF-8", field=name) from None


def parse_produce_request(data: bytes | memoryview) -> ProduceRequestView:
    """Parse a serialized ``ProduceRequest``; record bytes stay views of ``data``."""
    view = memoryview(data)
    request = ProduceRequestView(0, [], 0, "")
    for number, wire_type, value in _fields(view):
        if number == 1 and wire_type == VARINT:
            request.acks = _as_int32(value)  # type: ignore[arg-type]
        elif number == 2 and wire_type == LENGTH_DELIMITED:
            assert isinstance(value, memoryview)
            item = PartitionRecordsView("", 0, memoryview(b""))
            for inner_number, inner_type, inner in _fields(value):
                if inner_number == 1 and inner_type == LENGTH_DELIMITED:
                    item.topic = _text(inner, "topic")
                elif inner_number == 2 and inner_type == VARINT:
                    item.partition = _as_int32(inner)  # type: ignore[arg-type]
                elif inner_number == 3 and inner_type == LENGTH_DELIMITED:
                    item.records = inner  # type: ignore[assignment]
            request.partitions.append(item)
        elif number == 3 and wire_type == VARINT:
            request.correlation_id = value  # type: ignore[assignment]
        elif number == 4 and wire_type == LENGTH_DELIMITED:
            request.transactional_id = _text(value, "transactional_id")
        elif number == 5 and wire_type == LENGTH_DELIMITED:
            request.end_transaction = _end_transaction(value)  # type: ignore[arg-type]
    return request


def _end_transaction(value: memoryview) -> records_pb2.EndTransaction:
    try:
        return records_pb2.EndTransaction.FromString(bytes(value))
    except DecodeError:
        raise InvalidRequestError(
            "malformed request: end_transaction is not an EndTransaction", field="end_transaction"
        ) from None


def encode_fetched_partition(small: Message, records: bytes | memoryview) -> list[bytes | memoryview]:
    """The pieces of one serialized FetchedPartition: ``small`` (records unset) + records. A
    ``ReplicaFetchedPartition`` has the same layout (records is field 3, in a response whose
    field 1 repeats the partitions), so replica fetches are built with these two as well."""
    head = small.SerializeToString()
    if not len(records):
        return [head]
    return [head, FETCHED_RECORDS_KEY, encode_varint(len(records)), records]


def encode_fetch_response(partitions: Sequence[list[bytes | memoryview]]) -> bytes:
    """A serialized FetchResponse from the pieces of each partition, in one copy."""
    pieces: list[bytes | memoryview] = []
    for parts in partitions:
        size = sum(len(p) for p in parts)
        pieces.append(FETCH_PARTITIONS_KEY)
        pieces.append(encode_varint(size))
        pieces.extend(parts)
    return b"".join(pieces)


def subscribe_response_pieces(small: records_pb2.SubscribeResponse,
                              records: bytes | memoryview) -> list[bytes | memoryview]:
    """The pieces of one serialized SubscribeResponse: ``small`` (records unset) + records."""
    head = small.SerializeToString()
    if not len(records):
        return [head]
    return [head, SUBSCRIBE_RECORDS_KEY, encode_varint(len(records)), records]


def encode_subscribe_response(small: records_pb2.SubscribeResponse, records: bytes | memoryview) -> bytes:
    return b"".join(subscribe_response_pieces(small, records))
