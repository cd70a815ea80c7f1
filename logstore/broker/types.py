"""The broker's request and result types: plain dataclasses, no protobuf (that is the server's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from logstore.errors import LogstoreError


class Acks(Enum):
    NONE = "0"  # answer before appending
    LEADER = "1"  # answer once appended
    ALL = "all"  # answer once appended and flushed as the topic's flush policy says


class Isolation(Enum):
    READ_UNCOMMITTED = "read_uncommitted"
    READ_COMMITTED = "read_committed"


@dataclass(slots=True)
class ProduceItem:
    topic: str
    partition: int
    records: bytes | memoryview


@dataclass(slots=True)
class ProduceOutcome:
    topic: str
    partition: int
    base_offset: int = -1
    last_offset: int = -1
    log_start_offset: int = -1
    duplicate: bool = False
    error: LogstoreError | None = None

    @property
    def record_count(self) -> int:
        return self.last_offset - self.base_offset + 1 if self.base_offset >= 0 else 0


@dataclass(slots=True)
class FetchItem:
    topic: str
    partition: int
    offset: int
    max_bytes: int = 0  # 0 = the request's


@dataclass(slots=True)
class AbortedTransaction:
    producer_id: int
    first_offset: int
    last_offset: int = -1


@dataclass(slots=True)
class FetchOutcome:
    topic: str
    partition: int
    records: memoryview | bytes = b""
    high_watermark: int = -1
    log_start_offset: int = -1
    last_stable_offset: int = -1
    next_offset: int = -1
    aborted: list[AbortedTransaction] = field(default_factory=list)
    error: LogstoreError | None = None


class OffsetSpec(Enum):
    EARLIEST = "earliest"
    LATEST = "latest"
    TIMESTAMP = "timestamp"


@dataclass(slots=True)
class ListOffsetsItem:
    topic: str
    partition: int
    spec: OffsetSpec
    timestamp_ms: int = 0


@dataclass(slots=True)
class ListedOffset:
    topic: str
    partition: int
    offset: int = -1
    error: LogstoreError | None = None


class StartPosition(Enum):
    EARLIEST = "earliest"
    LATEST = "latest"
    OFFSET = "offset"
    TIMESTAMP = "timestamp"


@dataclass(slots=True)
class OffsetInfo:
    """A group's committed offset of one partition, with the partition's end and the lag."""

    topic: str
    partition: int
    offset: int = -1
    metadata: str = ""
    log_end_offset: int = -1
    lag: int = -1
    commit_timestamp_ms: int = 0
    error: LogstoreError | None = None


@dataclass(slots=True)
class MemberInfo:
    member_id: str
    instance_id: str
    member_epoch: int
    topics: list[str]
    assignment: list[tuple[str, int]]
    revoking: list[tuple[str, int]]


@dataclass(slots=True)
class GroupInfo:
    group_id: str
    state: str
    assignor: str
    group_epoch: int
    members: list[MemberInfo]
    offsets: list[OffsetInfo]
