"""The storage engine: segments, indexes, partition logs, recovery, retention, compaction.

Usable in-process without a server — ``DataDir`` is the embedded API, and the broker stands on
exactly it::

    from logstore.records import encode_batch, decode_records
    from logstore.storage import DataDir

    with DataDir.open("./data") as store:
        store.create_topic("orders", partitions=3, config={"flush": "always"})
        store.append("orders", 0, encode_batch([b"one", b"two"]))
        print(decode_records(store.read("orders", 0, offset=0).data))
"""

from logstore.storage.clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock
from logstore.storage.compaction import CompactionResult, compact
from logstore.storage.config import LogConfig
from logstore.storage.data_dir import (
    DataDir,
    Limits,
    MaintenanceIntervals,
    PartitionDescription,
    TopicDescription,
    validate_topic_name,
)
from logstore.storage.log import AppendResult, PartitionLog, ReadResult
from logstore.storage.retention import RetentionResult, apply_retention

__all__ = [
    "SYSTEM_CLOCK",
    "AppendResult",
    "Clock",
    "CompactionResult",
    "DataDir",
    "Limits",
    "LogConfig",
    "MaintenanceIntervals",
    "ManualClock",
    "PartitionDescription",
    "PartitionLog",
    "ReadResult",
    "RetentionResult",
    "SystemClock",
    "TopicDescription",
    "apply_retention",
    "compact",
    "validate_topic_name",
]
