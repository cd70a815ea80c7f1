"""Share-group administration, mixed into ``Admin``: list, describe, configure, reset.

``alter_share_group_config(group, {"lock_ms": "60s", "max_deliveries": 5, "backoff": "1s,5s,30s",
"dead_letter_topic": "tasks.dlq", "max_acquired_records": 2000, "auto_offset_reset": "earliest"},
reset=["backoff"])`` creates the group if needed. ``reset_share_group(group, topic,
to="earliest"|"latest"|OFFSET)`` is refused (``GroupNotEmptyError``) while records are acquired.

In a cluster each broker knows the share-partitions it leads: list, describe and reset ask every
live broker and merge the answers (list: the most members any broker saw, records acquired
summed; describe: each member's acquired records summed, each partition from its leader). A partition whose leader is unreachable right now is missing
from the description (and not reset). The config is cluster metadata: one call, any broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from logstore.api.v1 import share_pb2
from logstore.errors import LogstoreError


@dataclass(frozen=True, slots=True)
class ShareGroupSummary:
    group_id: str
    #: Members seen within the group's lock_ms.
    members: int
    #: Records acquired now.
    acquired: int


@dataclass(frozen=True, slots=True)
class SharePartitionState:
    topic: str
    partition: int
    start_offset: int
    end_offset: int
    log_end_offset: int
    available: int
    acquired: int
    acknowledged: int
    archived: int
    delayed: int
    oldest_unacknowledged_age_ms: int
    redeliveries: int
    dead_lettered: int
    lock_expiries: int


@dataclass(frozen=True, slots=True)
class ShareGroupDescription:
    group_id: str
    config: dict[str, str] = field(default_factory=dict)
    #: (member id, last seen ms since the epoch, records acquired).
    members: list[tuple[str, int, int]] = field(default_factory=list)
    partitions: list[SharePartitionState] = field(default_factory=list)


def _state(p: share_pb2.SharePartitionState) -> SharePartitionState:
    return SharePartitionState(
        p.topic, p.partition, p.start_offset, p.end_offset, p.log_end_offset, p.available,
        p.acquired, p.acknowledged, p.archived, p.delayed, p.oldest_unacknowledged_age_ms,
        p.redeliveries, p.dead_lettered, p.lock_expiries,
    )


def _description(d: share_pb2.ShareGroupDescription) -> ShareGroupDescription:
    return ShareGroupDescription(
        d.group_id, dict(d.config), [(m.member_id, m.last_seen_ms, m.acquired) for m in d.members],
        [_state(p) for p in d.partitions],
    )


_RESET = {"earliest": share_pb2.SHARE_RESET_EARLIEST, "latest": share_pb2.SHARE_RESET_LATEST}


class ShareAdminMixin:
    _stub: Any
    _metadata: Any
    _channels: Any
    timeout: float
    server: str

    def _call(self, method: str, request: Any) -> Any:
        from logstore.client.channel import translate_errors

        with translate_errors(self.server):
            return getattr(self._stub, method)(request, timeout=self.timeout)

    def _each_broker(self, method: str, request: Any) -> list[Any]:
        """The answer of the one broker, or in a cluster of every live broker (those that know
        nothing of it — UNKNOWN_GROUP, NOT_LEADER — left out; the first such error raised when
        every broker says so)."""
        from logstore.client.channel import translate_errors

        if not self._metadata.routes_by_leader():
            return [self._call(method, request)]
        answers = []
        unknown: LogstoreError | None = None
        for address in self._metadata.view().live_addresses():
            try:
                with translate_errors(address):
                    answers.append(getattr(self._channels.stub(address), method)(request, timeout=self.timeout))
            except LogstoreError as exc:
                if exc.reason not in ("UNKNOWN_GROUP", "NOT_LEADER"):
                    raise
                unknown = unknown or exc
        if not answers and unknown is not None:
            raise unknown
        return answers

    def list_share_groups(self) -> list[ShareGroupSummary]:
        merged: dict[str, tuple[int, int]] = {}
        for response in self._each_broker("ListShareGroups", share_pb2.ListShareGroupsRequest()):
            for g in response.groups:
                members, acquired = merged.get(g.group_id, (0, 0))  # (members poll every leader)
                merged[g.group_id] = (max(members, g.members), acquired + g.acquired)
        return [ShareGroupSummary(group, *merged[group]) for group in sorted(merged)]

    def describe_share_group(self, group_id: str) -> ShareGroupDescription:
        answers = [_description(d) for d in self._each_broker(
            "DescribeShareGroup", share_pb2.DescribeShareGroupRequest(group_id=group_id))]
        if len(answers) == 1:
            return answers[0]
        members: dict[str, tuple[int, int]] = {}
        partitions: dict[tuple[str, int], SharePartitionState] = {}
        for answer in answers:
            for member_id, seen, acquired in answer.members:
                last, held = members.get(member_id, (0, 0))
                members[member_id] = (max(last, seen), held + acquired)
            for p in answer.partitions:
                partitions.setdefault((p.topic, p.partition), p)
        return ShareGroupDescription(
            group_id, answers[0].config, [(m, *members[m]) for m in sorted(members)],
            [partitions[k] for k in sorted(partitions)])

    def alter_share_group_config(self, group_id: str, config: Mapping[str, object] | None = None,
                                 reset: Iterable[str] = ()) -> ShareGroupDescription:
        request = share_pb2.AlterShareGroupConfigRequest(
            group_id=group_id, set={k: str(v) for k, v in (config or {}).items()}, reset=list(reset))
        return _description(self._call("AlterShareGroupConfig", request))

    def reset_share_group(self, group_id: str, topic: str, to: str | int = "earliest",
                          partitions: Iterable[int] = ()) -> list[SharePartitionState]:
        if isinstance(to, int) and not isinstance(to, bool):
            spec, offset = share_pb2.SHARE_RESET_OFFSET, to
        elif to in _RESET:
            spec, offset = _RESET[to], 0
        else:
            raise ValueError(f"to must be 'earliest', 'latest' or an offset, not {to!r}")
        request = share_pb2.ResetShareGroupRequest(
            group_id=group_id, topic=topic, partitions=list(partitions), spec=spec, offset=offset)
        return [_state(p) for response in self._each_broker("ResetShareGroup", request) for p in response.partitions]
