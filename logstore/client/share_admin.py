"""Share-group administration, mixed into ``Admin``: list, describe, configure, reset.

``alter_share_group_config(group, {"lock_ms": "60s", "max_deliveries": 5, "backoff": "1s,5s,30s",
"dead_letter_topic": "tasks.dlq", "max_acquired_records": 2000, "auto_offset_reset": "earliest"},
reset=["backoff"])`` creates the group if needed. ``reset_share_group(group, topic,
to="earliest"|"latest"|OFFSET)`` is refused (``GroupNotEmptyError``) while records are acquired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from logstore.api.v1 import share_pb2


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
    timeout: float
    server: str

    def _call(self, method: str, request: Any) -> Any:
        from logstore.client.channel import translate_errors

        with translate_errors(self.server):
            return getattr(self._stub, method)(request, timeout=self.timeout)

    def list_share_groups(self) -> list[ShareGroupSummary]:
        response = self._call("ListShareGroups", share_pb2.ListShareGroupsRequest())
        return [ShareGroupSummary(g.group_id, g.members, g.acquired) for g in response.groups]

    def describe_share_group(self, group_id: str) -> ShareGroupDescription:
        return _description(self._call("DescribeShareGroup", share_pb2.DescribeShareGroupRequest(group_id=group_id)))

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
        return [_state(p) for p in self._call("ResetShareGroup", request).partitions]
