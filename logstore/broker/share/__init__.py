"""Share groups (queue mode, Kafka KIP-932): any number of members take records one by one from
the same partitions and acknowledge each.

- ``config.py``: a group's knobs (lock, deliveries, backoff, dead-letter topic, window bound).
- ``window.py``: one share-partition's in-flight window, per-record state in numpy arrays.
- ``state_log.py``: the window's durable form in ``__share_group_state`` (snapshots + deltas).
- ``partition.py``: a share-partition: its window over a partition log (acquire reads batches).
- ``dead_letter.py``: archived records written to the group's dead-letter topic with headers.
- ``coordinator.py``: every share group of the broker: fetch, acknowledge, admin calls.

State lives on the broker that holds the partition (single broker today). Everything a
share-partition needs is derived from its keys in ``__share_group_state``, so a future cluster
can move it with its partition's leader by replaying those keys.
"""

from logstore.broker.share.config import ShareGroupConfig
from logstore.broker.share.coordinator import ShareCoordinator
from logstore.broker.share.types import (
    AckKind,
    AckRange,
    AcquiredPartition,
    ShareGroupInfo,
    SharePartitionInfo,
)

__all__ = [
    "AckKind",
    "AckRange",
    "AcquiredPartition",
    "ShareCoordinator",
    "ShareGroupConfig",
    "ShareGroupInfo",
    "SharePartitionInfo",
]
