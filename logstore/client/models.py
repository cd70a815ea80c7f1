"""The small value types the client hands out: no protobuf message ever leaves the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from logstore.records.headers import Headers


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class ConsumerRecord(NamedTuple):
    """One record as ``Consumer.poll`` returns it. ``key`` and ``value`` are bytes or None."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    key: bytes | None
    value: bytes | None
    headers: Headers


class RecordMetadata(NamedTuple):
    """Where ``Producer.send`` put a record. ``offset`` is -1 with acks=0."""

    partition: int
    offset: int


class BatchMetadata(NamedTuple):
    """Where one batch of ``Producer.send_batch`` went: offsets ``base_offset..last_offset``."""

    partition: int
    base_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    internal: bool = False


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    log_start_offset: int
    #: One past the last offset: the next offset to be assigned.
    log_end_offset: int
    last_stable_offset: int
    size_bytes: int
    segments: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    partition_count: int
    internal: bool
    #: Every config key with its effective value, as strings.
    config: dict[str, str] = field(default_factory=dict)
    partitions: list[PartitionInfo] = field(default_factory=list)


class GroupMetadata(NamedTuple):
    """Who a consumer is in its group (``Consumer.group_metadata()``), for
    ``Producer.send_offsets_to_transaction``: the broker refuses offsets from a fenced member."""

    group_id: str
    member_id: str
    member_epoch: int


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    """A group's committed offset of one partition, with the partition's end and the lag."""

    topic: str
    partition: int
    #: The next offset the group reads; -1 when nothing is committed.
    offset: int
    log_end_offset: int
    #: ``log_end_offset - offset`` (everything from log start when nothing is committed).
    lag: int
    metadata: str = ""
    commit_timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group_id: str
    #: "empty", "stable", "reconciling" or "dead".
    state: str
    members: int


@dataclass(frozen=True, slots=True)
class GroupMember:
    member_id: str
    instance_id: str
    member_epoch: int
    topics: list[str]
    assignment: list[TopicPartition]
    #: Partitions the member still has to give up.
    revoking: list[TopicPartition]


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: str
    assignor: str
    group_epoch: int
    members: list[GroupMember]
    offsets: list[CommittedOffset]


# -- the cluster (``Admin.describe_cluster``) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_id: int
    #: host:port clients use (the broker's ``--advertise`` address).
    address: str
    #: Holds a live membership lease (always True on a single node).
    alive: bool = True
    #: Port of its Subscribe data channel on the host of ``address`` (0: none; table reads
    #: then go through gRPC).
    stream_port: int = 0


@dataclass(frozen=True, slots=True)
class PartitionPlacement:
    """Where one partition lives: its leader (-1: none right now), the leader epoch (bumped by
    every leader change), every replica (the preferred leader first) and the in-sync ones."""

    topic: str
    partition: int
    leader_id: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def under_replicated(self) -> bool:
        """Fewer replicas in sync than the partition has."""
        return len(self.isr) < len(self.replicas)


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    """``Admin.describe_cluster()``: the brokers, the controller, and every partition's
    placement (internal topics included). A single-node broker is a cluster of one:
    ``clustered`` False, broker 0, controller 0 with epoch 0, every partition led by it."""

    clustered: bool
    cluster_name: str
    controller_id: int
    controller_epoch: int
    brokers: list[BrokerInfo]
    partitions: list[PartitionPlacement]

    @property
    def under_replicated_partitions(self) -> int:
        """How many partitions have an ISR shorter than their replica list."""
        return sum(p.under_replicated for p in self.partitions)
