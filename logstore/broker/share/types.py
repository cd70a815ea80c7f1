"""Share-group request and result types: plain dataclasses and numpy arrays, no protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from logstore.errors import LogstoreError


class AckKind(IntEnum):
    """What a member says about records it holds (the API's enum numbers)."""

    ACCEPT = 1  # done: Acknowledged
    RELEASE = 2  # back to Available, now or after a delay
    REJECT = 3  # poison: Archived at once (and dead-lettered)
    RENEW = 4  # keep the lock: the deadline moves lock_ms from now


@dataclass(slots=True)
class AckRange:
    """Records ``first_offset..last_offset`` (inclusive) of one partition."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    kind: AckKind
    #: RELEASE only: None = the group's backoff for the delivery count; 0 = now; >0 = this
    #: delay in milliseconds (negative is refused).
    delay_ms: int | None = None
    #: Why the member failed or rejected it (the dead-letter record's ``last_error``).
    error: str = ""


@dataclass(slots=True)
class AcquiredPartition:
    """What one share fetch took from one partition.

    ``records`` are pieces of the log (bytes as stored, each one or more whole batches; every
    batch once, in offset order) holding the acquired records; a batch may hold records not
    acquired (taken by another member, acknowledged): only the offsets in the ranges
    ``first_offsets[i]..last_offsets[i]`` are this member's, each delivered ``delivery_counts[i]``
    times (this delivery included).
    """

    topic: str
    partition: int
    records: list[memoryview] = field(default_factory=list)
    first_offsets: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    last_offsets: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    delivery_counts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    #: Per-partition problem (unknown partition, deleted topic); the others are still served.
    error: LogstoreError | None = None

    @property
    def record_count(self) -> int:
        return int((self.last_offsets - self.first_offsets + 1).sum())


@dataclass(slots=True)
class AckResult:
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    error: LogstoreError | None = None


@dataclass(slots=True)
class SharePartitionInfo:
    topic: str
    partition: int
    start_offset: int
    end_offset: int  # one past the last record taken into the window
    log_end_offset: int
    available: int  # in the window, plus the records not fetched yet
    acquired: int
    acknowledged: int
    archived: int
    delayed: int  # available later (released with a delay)
    oldest_unacknowledged_age_ms: int  # -1 when none
    redeliveries: int
    dead_lettered: int
    lock_expiries: int


@dataclass(slots=True)
class ShareMemberInfo:
    member_id: str
    last_seen_ms: int
    acquired: int


@dataclass(slots=True)
class ShareGroupInfo:
    group_id: str
    config: dict[str, str]
    members: list[ShareMemberInfo]
    partitions: list[SharePartitionInfo]
