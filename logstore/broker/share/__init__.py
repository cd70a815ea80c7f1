"""Share groups (queue mode, Kafka KIP-932): any number of members take records one by one from
the same partitions and acknowledge each.

- ``config.py``: a group's knobs (lock, deliveries, backoff, dead-letter topic, window bound).
- ``window.py``: one share-partition's in-flight window, per-record state in numpy arrays.
- ``state_log.py``: the window's durable form in ``__share_group_state`` (snapshots + deltas).
- ``partition.py``: a share-partition: its window over a partition log (acquire reads batches).
- ``dead_letter.py``: archived records written to the group's dead-letter topic with headers.
- ``coordinator.py``: every share group of the broker: fetch, acknowledge, admin calls.
- ``leadership.py``: in a cluster, where a share-partition's state lives (``__share_state.<topic>``,
  replicated with the partition) and the cluster's hooks; ``clustered.py``: the coordinator's
  part in a cluster (serving the share-partitions led here, loading them at a new leader epoch).

On a single node the state is in ``__share_group_state``; in a cluster a share-partition is
served by its partition's leader and rebuilt by the next one from its replicated state.
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
