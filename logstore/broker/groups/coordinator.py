"""The group coordinator: membership, server-side assignment, incremental rebalances, fencing.

It follows Kafka's newer consumer protocol (KIP-848). A member joins, heartbeats and leaves with
one call, ``heartbeat``; the coordinator computes the group's *target* assignment with the
group's assignor and moves each member toward it one heartbeat at a time:

1. Partitions a member must give up are taken out of its assignment and put in ``revoking``; the
   member stops working on them, commits, and reports (in ``owned``) that it no longer has them.
2. Only then are they free; a partition goes to its new owner once nobody holds it — assigned or
   revoking — so no partition is ever worked on by two members at once.
3. A member's epoch rises whenever it receives partitions; commits and fetches carry it, and a
   stale epoch is refused (``FencedMemberEpochError``), as is an unknown member
   (``UnknownMemberError``) — e.g. one evicted after its session timeout (no heartbeat) or its
   rebalance timeout (no poll: a stuck member).

Members keep working on every partition that does not move. A *static* member (``instance_id``)
that leaves with epoch -2 keeps its partitions reserved for the session timeout; a new process
with the same instance id takes them over without a rebalance (and the old member id is fenced).

Membership lives in memory; committed offsets are durable (``offsets.py``). After a broker restart
members get UNKNOWN_MEMBER and rejoin.

Threading: event loop thread only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from logstore.broker.groups.assignors import ASSIGNORS, DEFAULT_ASSIGNOR
from logstore.errors import (
    FencedMemberEpochError,
    InvalidRequestError,
    PartitionNotAssignedError,
    UnknownMemberError,
)
from logstore.storage import DataDir
from logstore.storage.clock import Clock

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]

JOIN_EPOCH = 0
LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2
DEFAULT_SESSION_TIMEOUT_MS = 10_000
DEFAULT_REBALANCE_TIMEOUT_MS = 300_000
MIN_SESSION_TIMEOUT_MS = 100


@dataclass
class Member:
    member_id: str
    instance_id: str
    topics: list[str]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    last_heartbeat: float
    member_epoch: int = 0
    previous_epoch: int = -1
    assigned: set[TopicPartition] = field(default_factory=set)
    revoking: set[TopicPartition] = field(default_factory=set)
    left_at: float | None = None  # a static member that left for now

    def holds(self, tp: TopicPartition) -> bool:
        return tp in self.assigned or tp in self.revoking


@dataclass
class Group:
    group_id: str
    assignor: str = DEFAULT_ASSIGNOR
    group_epoch: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    target: dict[str, set[TopicPartition]] = field(default_factory=dict)
    target_epoch: int = -1
    partition_counts: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if not self.members:
            return "empty"
        for member in self.members.values():
            if member.revoking or member.assigned != self.target.get(member.member_id, set()):
                return "reconciling"
        return "stable"


@dataclass(frozen=True)
class HeartbeatResult:
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: list[TopicPartition]


class GroupCoordinator:
    def __init__(self, data_dir: DataDir, clock: Clock, heartbeat_interval_ms: int = 500) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.groups: dict[str, Group] = {}

    # -- the heartbeat -------------------------------------------------------------------------------

    def heartbeat(
        self,
        group_id: str,
        member_id: str,
        member_epoch: int,
        *,
        instance_id: str = "",
        topics: list[str] | None = None,
        assignor: str = "",
        session_timeout_ms: int = 0,
        rebalance_timeout_ms: int = 0,
        owned: list[TopicPartition] | None = None,
        ms_since_poll: int = 0,
    ) -> HeartbeatResult:
        now = self.clock.monotonic()
        if assignor and assignor not in ASSIGNORS:
            raise InvalidRequestError(
                f"unknown assignor {assignor!r}; use one of {', '.join(sorted(ASSIGNORS))}",
                field="assignor",
            )
        group = self.groups.get(group_id)
        if member_epoch == JOIN_EPOCH:
            if not topics:
                raise InvalidRequestError("joining a group needs at least one topic", field="topics")
            group = self.groups.setdefault(group_id, Group(group_id))
            member = self._join(group, instance_id, topics, session_timeout_ms, rebalance_timeout_ms, now)
        else:
            if group is None or member_id not in group.members:
                raise UnknownMemberError(group_id, member_id)
            member = group.members[member_id]
            if member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
                return self._leave(group, member, member_epoch, now)
            if member_epoch not in (member.member_epoch, member.previous_epoch):
                raise FencedMemberEpochError(group_id, member_id, member_epoch, member.member_epoch)
            if member.rebalance_timeout_ms and ms_since_poll > member.rebalance_timeout_ms:
                log.warning(
                    "group %s: evicting member %s: %d ms since its last poll exceeds %d",
                    group_id, member_id, ms_since_poll, member.rebalance_timeout_ms,
                )
                self._remove(group, member)
                raise UnknownMemberError(group_id, member_id)
            member.last_heartbeat = now
            member.left_at = None
            if topics and sorted(topics) != sorted(member.topics):
                member.topics = list(topics)
                group.group_epoch += 1
        if assignor and assignor != group.assignor:
            group.assignor = assignor
            group.group_epoch += 1
        self._refresh_target(group)
        self._reconcile(group, member, owned)
        pending = bool(member.revoking) or group.target.get(member.member_id, set()) != member.assigned
        return HeartbeatResult(
            member.member_id,
            member.member_epoch,
            max(50, self.heartbeat_interval_ms // 5) if pending else self.heartbeat_interval_ms,
            sorted(member.assigned),
        )

    def _join(
        self, group: Group, instance_id: str, topics: list[str], session_timeout_ms: int,
        rebalance_timeout_ms: int, now: float,
    ) -> Member:
        session = session_timeout_ms or DEFAULT_SESSION_TIMEOUT_MS
        if session < MIN_SESSION_TIMEOUT_MS:
            raise InvalidRequestError(
                f"session_timeout_ms must be at least {MIN_SESSION_TIMEOUT_MS}", field="session_timeout_ms"
            )
        new_id = uuid.uuid4().hex
        if instance_id:
            for old in list(group.members.values()):
                if old.instance_id == instance_id:
                    # a static member comes back: it takes over the old one's partitions and epoch;
                    # the old member id is fenced
                    old_id = old.member_id
                    del group.members[old_id]
                    old.member_id = new_id
                    old.topics = list(topics)
                    old.session_timeout_ms = session
                    old.rebalance_timeout_ms = rebalance_timeout_ms or DEFAULT_REBALANCE_TIMEOUT_MS
                    old.last_heartbeat = now
                    old.left_at = None
                    old.previous_epoch = old.member_epoch
                    old.member_epoch += 1
                    group.members[new_id] = old
                    group.target[new_id] = group.target.pop(old_id, set())
                    log.info("group %s: static member %s rejoined as %s", group.group_id, instance_id, new_id)
                    return old
        member = Member(
            new_id, instance_id, list(topics), session,
            rebalance_timeout_ms or DEFAULT_REBALANCE_TIMEOUT_MS, now,
        )
        group.members[new_id] = member
        group.group_epoch += 1
        member.member_epoch = group.group_epoch  # >= 1: epoch 0 only ever means "join"
        log.info("group %s: member %s joined (epoch %d)", group.group_id, new_id, group.group_epoch)
        return member

    def _leave(self, group: Group, member: Member, epoch: int, now: float) -> HeartbeatResult:
        if epoch == STATIC_LEAVE_EPOCH and member.instance_id:
            member.left_at = now
            return HeartbeatResult(member.member_id, STATIC_LEAVE_EPOCH, self.heartbeat_interval_ms, [])
        self._remove(group, member)
        return HeartbeatResult(member.member_id, LEAVE_EPOCH, self.heartbeat_interval_ms, [])

    def _remove(self, group: Group, member: Member) -> None:
        group.members.pop(member.member_id, None)
        group.target.pop(member.member_id, None)
        group.group_epoch += 1
        log.info("group %s: member %s left (epoch %d)", group.group_id, member.member_id, group.group_epoch)

    # -- assignment ----------------------------------------------------------------------------------

    def _partition_counts(self, group: Group) -> dict[str, int]:
        counts = {}
        for member in group.members.values():
            for topic in member.topics:
                if topic not in counts and self.data_dir.has_topic(topic):
                    counts[topic] = self.data_dir.topic(topic).partitions
        return counts

    def _refresh_target(self, group: Group) -> None:
        counts = self._partition_counts(group)
        if counts != group.partition_counts:
            group.partition_counts = counts
            group.group_epoch += 1
        if group.target_epoch == group.group_epoch:
            return
        members = {m.member_id: m.topics for m in group.members.values()}
        current = {m.member_id: set(m.assigned) | m.revoking for m in group.members.values()}
        group.target = ASSIGNORS[group.assignor](members, counts, current)
        group.target_epoch = group.group_epoch

    def _reconcile(self, group: Group, member: Member, owned: list[TopicPartition] | None) -> None:
        target = group.target.get(member.member_id, set())
        if member.revoking and owned is not None:
            member.revoking &= set(owned)  # what the member reports it no longer owns is free
        to_revoke = member.assigned - target
        if to_revoke:
            member.assigned -= to_revoke
            member.revoking |= to_revoke
        if member.revoking:
            return  # finish revoking before receiving anything new
        held_by_others = {
            tp for other in group.members.values() if other is not member
            for tp in (other.assigned | other.revoking)
        }
        additions = {tp for tp in target - member.assigned if tp not in held_by_others}
        if additions:
            member.assigned |= additions
            member.previous_epoch = member.member_epoch
            member.member_epoch = max(group.group_epoch, member.member_epoch + 1)

    # -- expiry --------------------------------------------------------------------------------------

    def expire(self) -> int:
        """Evict members whose session timed out; returns how many went."""
        now = self.clock.monotonic()
        evicted = 0
        for group in list(self.groups.values()):
            for member in list(group.members.values()):
                since = member.left_at if member.left_at is not None else member.last_heartbeat
                if (now - since) * 1000 > member.session_timeout_ms:
                    log.warning("group %s: member %s timed out", group.group_id, member.member_id)
                    self._remove(group, member)
                    evicted += 1
            if evicted:
                self._refresh_target(group)
        return evicted

    # -- fencing -------------------------------------------------------------------------------------

    def check_member(
        self, group_id: str, member_id: str, member_epoch: int, partitions: list[TopicPartition]
    ) -> None:
        """Refuse a commit or fetch from an unknown or stale member, or for partitions it does
        not hold. A group without members accepts commits from standalone consumers (no id)."""
        group = self.groups.get(group_id)
        if not member_id:
            if group is not None and group.members:
                raise UnknownMemberError(group_id, member_id)
            return
        if group is None or member_id not in group.members:
            raise UnknownMemberError(group_id, member_id)
        member = group.members[member_id]
        if member_epoch not in (member.member_epoch, member.previous_epoch):
            raise FencedMemberEpochError(group_id, member_id, member_epoch, member.member_epoch)
        for topic, partition in partitions:
            if not member.holds((topic, partition)):
                raise PartitionNotAssignedError(group_id, member_id, topic, partition)

    def active_members(self, group_id: str) -> int:
        group = self.groups.get(group_id)
        return len(group.members) if group else 0

    def forget(self, group_id: str) -> None:
        self.groups.pop(group_id, None)

    def forget_where(self, moved: Callable[[str], bool]) -> None:
        """Forget the membership of every group ``moved`` names (its coordinator changed: its
        members are unknown here and rejoin, their old member ids and epochs fenced)."""
        for group_id in [g for g in self.groups if moved(g)]:
            del self.groups[group_id]
