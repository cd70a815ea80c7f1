"""Protobuf <-> broker types, in one place. Field checks that protobuf cannot express (negative
partitions or offsets, unknown enum values) raise ``InvalidRequestError`` here; an empty
``records`` field is a ``CorruptBatchError`` (a payload with no batch in it), as for any other
payload that is not a run of whole batches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from logstore.api.v1 import admin_pb2, common_pb2, records_pb2
from logstore.broker import (
    AbortedTransaction,
    Acks,
    Broker,
    FetchItem,
    FetchOutcome,
    Isolation,
    ListedOffset,
    ListOffsetsItem,
    OffsetSpec,
    ProduceItem,
    ProduceOutcome,
    StartPosition,
)
from logstore.errors import CorruptBatchError, InvalidRequestError
from logstore.server.errors import error_detail
from logstore.server.wire import PartitionRecordsView, ProduceRequestView
from logstore.storage import TopicDescription

T = TypeVar("T")

_ACKS = {
    records_pb2.ACKS_UNSPECIFIED: Acks.ALL,
    records_pb2.ACKS_NONE: Acks.NONE,
    records_pb2.ACKS_LEADER: Acks.LEADER,
    records_pb2.ACKS_ALL: Acks.ALL,
}
_ISOLATION = {
    common_pb2.READ_UNCOMMITTED: Isolation.READ_UNCOMMITTED,
    common_pb2.READ_COMMITTED: Isolation.READ_COMMITTED,
}
_START = {
    records_pb2.START_EARLIEST: StartPosition.EARLIEST,
    records_pb2.START_LATEST: StartPosition.LATEST,
    records_pb2.START_OFFSET: StartPosition.OFFSET,
    records_pb2.START_TIMESTAMP: StartPosition.TIMESTAMP,
}
_OFFSET_SPEC = {
    records_pb2.OFFSET_EARLIEST: OffsetSpec.EARLIEST,
    records_pb2.OFFSET_LATEST: OffsetSpec.LATEST,
    records_pb2.OFFSET_TIMESTAMP: OffsetSpec.TIMESTAMP,
}


def _enum(table: Mapping[Any, T], value: int, field: str) -> T:
    try:
        return table[value]
    except KeyError:
        raise InvalidRequestError(f"unknown {field} value {value}", field=field) from None


def acks(value: int) -> Acks:
    return _enum(_ACKS, value, "acks")


def isolation(value: int) -> Isolation:
    return _enum(_ISOLATION, value, "isolation_level")


def start_position(value: int) -> StartPosition:
    return _enum(_START, value, "start")


def _partition(value: int, topic: str) -> int:
    if value < 0:
        raise InvalidRequestError(f"partition of {topic!r} must not be negative, not {value}", field="partition")
    return value


def partition_count(value: int) -> int:
    """CreateTopic's ``partitions``: at least 1."""
    if value < 1:
        raise InvalidRequestError(f"a topic needs at least 1 partition, not {value}", field="partitions")
    return value


def subscribe_start(request: records_pb2.SubscribeRequest) -> StartPosition:
    """Check a SubscribeRequest's fields; returns its start position."""
    _partition(request.partition, request.topic)
    start = start_position(request.start)
    if start is StartPosition.OFFSET and request.offset < 0:
        raise InvalidRequestError(f"offset must not be negative, not {request.offset}", field="offset")
    if request.max_bytes < 0:
        raise InvalidRequestError(f"max_bytes must not be negative, not {request.max_bytes}", field="max_bytes")
    return start


def _records(p: records_pb2.PartitionRecords | PartitionRecordsView) -> bytes | memoryview:
    if not p.records:
        raise CorruptBatchError(
            f"{p.topic}/{p.partition}: no record batches in the payload",
            position=0, topic=p.topic, partition=p.partition,
        )
    return p.records


def produce_items(request: records_pb2.ProduceRequest | ProduceRequestView) -> list[ProduceItem]:
    return [
        ProduceItem(p.topic, _partition(p.partition, p.topic), _records(p)) for p in request.partitions
    ]


def produce_result(outcome: ProduceOutcome) -> records_pb2.PartitionProduceResult:
    result = records_pb2.PartitionProduceResult(
        topic=outcome.topic,
        partition=outcome.partition,
        base_offset=outcome.base_offset,
        last_offset=outcome.last_offset,
        log_start_offset=outcome.log_start_offset,
        duplicate=outcome.duplicate,
    )
    if outcome.error is not None:
        result.error.CopyFrom(error_detail(outcome.error))
    return result


def fetch_items(request: records_pb2.FetchRequest) -> list[FetchItem]:
    return [
        FetchItem(p.topic, _partition(p.partition, p.topic), p.offset, p.max_bytes)
        for p in request.partitions
    ]


def fetched_partition(outcome: FetchOutcome, *, with_records: bool = True) -> records_pb2.FetchedPartition:
    """The partition's message; ``with_records=False`` leaves records out for ``wire``."""
    result = records_pb2.FetchedPartition(
        topic=outcome.topic,
        partition=outcome.partition,
        records=bytes(outcome.records) if with_records else b"",
        high_watermark=outcome.high_watermark,
        log_start_offset=outcome.log_start_offset,
        last_stable_offset=outcome.last_stable_offset,
        next_offset=outcome.next_offset,
        aborted_transactions=aborted(outcome.aborted),
    )
    if outcome.error is not None:
        result.error.CopyFrom(error_detail(outcome.error))
    return result


def aborted(items: list[AbortedTransaction]) -> list[records_pb2.AbortedTransaction]:
    return [
        records_pb2.AbortedTransaction(
            producer_id=a.producer_id, first_offset=a.first_offset, last_offset=a.last_offset
        )
        for a in items
    ]


def list_offsets_items(request: records_pb2.ListOffsetsRequest) -> list[ListOffsetsItem]:
    if not request.partitions:
        raise InvalidRequestError("a list-offsets request needs at least one partition", field="partitions")
    return [
        ListOffsetsItem(
            p.topic,
            _partition(p.partition, p.topic),
            _enum(_OFFSET_SPEC, p.spec, "spec"),  # type: ignore[arg-type]
            p.timestamp_ms,
        )
        for p in request.partitions
    ]


def listed_offset(item: ListedOffset) -> records_pb2.ListedOffset:
    result = records_pb2.ListedOffset(topic=item.topic, partition=item.partition, offset=item.offset)
    if item.error is not None:
        result.error.CopyFrom(error_detail(item.error))
    return result


def topic_description(description: TopicDescription, broker: Broker) -> admin_pb2.TopicDescription:
    partitions = []
    for p in description.partitions:
        lso = broker.last_stable_offset(broker.data_dir.log(description.name, p.partition))
        partitions.append(
            admin_pb2.PartitionDescription(
                partition=p.partition,
                log_start_offset=p.log_start_offset,
                log_end_offset=p.log_end_offset,
                last_stable_offset=lso,
                size_bytes=p.size_bytes,
                segments=p.segments,
            )
        )
    return admin_pb2.TopicDescription(
        name=description.name,
        partition_count=len(description.partitions),
        internal=description.internal,
        config={key: str(value) for key, value in description.config.to_dict().items()},
        partitions=partitions,
    )
