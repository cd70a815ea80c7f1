"""The delete cleaner: remove whole sealed segments by age and by total size.

A segment goes when its newest record is older than ``retention_ms``, or while the partition is
larger than ``retention_bytes`` (oldest first), or when it lies wholly below log start (after
``delete_records_before``). Only a prefix of the segment list is ever deleted, the active segment
never; ``PartitionLog.delete_oldest_segments`` raises log start (and writes the checkpoint) before
any file goes, then renames each file to ``.deleted`` and removes it.

Runs on the data directory's background thread, or when called (tests, benchmarks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from logstore.storage.log import PartitionLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionResult:
    deleted_segments: int
    deleted_bytes: int
    log_start_offset: int


def segments_to_delete(partition_log: PartitionLog, now_ms: int) -> int:
    """How many of the oldest segments retention would delete now."""
    config = partition_log.config
    sealed = partition_log.segments[:-1]
    count = 0
    # wholly below log start
    while count < len(sealed) and sealed[count].next_offset <= partition_log.log_start_offset:
        count += 1
    if config.delete and config.retention_ms > 0:
        while count < len(sealed) and 0 <= sealed[count].max_timestamp < now_ms - config.retention_ms:
            count += 1
    if config.delete and config.retention_bytes >= 0:
        excess = partition_log.size_bytes - config.retention_bytes
        excess -= sum(segment.size for segment in sealed[:count])
        while count < len(sealed) and excess >= sealed[count].size:
            excess -= sealed[count].size
            count += 1
    return count


def apply_retention(partition_log: PartitionLog, now_ms: int) -> RetentionResult:
    """Delete what retention allows; returns what went."""
    with partition_log.lock:
        count = segments_to_delete(partition_log, now_ms)
        if count == 0:
            return RetentionResult(0, 0, partition_log.log_start_offset)
        deleted = partition_log.delete_oldest_segments(count)
    deleted_bytes = sum(segment.size for segment in deleted)
    log.info(
        "%s/%s: retention deleted %d segments (%d bytes); log start is now %d",
        partition_log.topic, partition_log.partition, len(deleted), deleted_bytes,
        partition_log.log_start_offset,
    )
    return RetentionResult(len(deleted), deleted_bytes, partition_log.log_start_offset)
