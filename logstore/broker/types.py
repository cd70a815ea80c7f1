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
