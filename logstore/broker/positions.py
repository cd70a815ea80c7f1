"""Where a reset moves a reader: earliest, latest, a time or an offset, resolved on one
partition log (consumer-group ``ResetOffsets`` and share-group ``ResetShareGroup``)."""

from __future__ import annotations

from logstore.errors import InvalidRequestError, OffsetOutOfRangeError
from logstore.storage import PartitionLog


def reset_target(partition_log: PartitionLog, spec: str, offset: int = 0, timestamp_ms: int = 0) -> int:
    """The offset ``spec`` ("earliest", "latest", "timestamp", "offset") names; an offset outside
    [log start, log end] raises OffsetOutOfRangeError, an unknown spec InvalidRequestError."""
    if spec == "earliest":
        return partition_log.log_start_offset
    if spec == "latest":
        return partition_log.log_end_offset
    if spec == "timestamp":
        found = partition_log.offset_for_timestamp(timestamp_ms)
        return partition_log.log_end_offset if found is None else found
    if spec == "offset":
        if not partition_log.log_start_offset <= offset <= partition_log.log_end_offset:
            raise OffsetOutOfRangeError(
                topic=partition_log.topic, partition=partition_log.partition, offset=offset,
                log_start_offset=partition_log.log_start_offset,
                log_end_offset=partition_log.log_end_offset,
            )
        return offset
    raise InvalidRequestError(f"unknown reset spec {spec!r}", field="spec")
