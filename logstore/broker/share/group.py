"""A share group: its config, its members (numbered for the window's owner column) and its
share-partitions. Members are not assigned partitions: every member fetches from every
partition of the topics it names. Not thread-safe: event loop thread only."""

from __future__ import annotations

import numpy as np

from logstore.broker.share.config import ShareGroupConfig
from logstore.broker.share.partition import SharePartition
from logstore.broker.share.window import ACQUIRED


class ShareGroup:
    __slots__ = ("group_id", "config", "partitions", "members", "last_seen_ms", "_next_owner", "turn")

    def __init__(self, group_id: str, config: ShareGroupConfig | None = None) -> None:
        self.group_id = group_id
        self.config = config or ShareGroupConfig()
        self.partitions: dict[tuple[str, int], SharePartition] = {}
        #: member id -> owner number (the window's ``owner`` column).
        self.members: dict[str, int] = {}
        self.last_seen_ms: dict[str, int] = {}
        self._next_owner = 0
        #: Rotates the partition a fetch starts with, so members spread over partitions.
        self.turn = 0

    def owner(self, member_id: str, now_ms: int) -> int:
        """The member's owner number (a new member gets the next one)."""
        number = self.members.get(member_id)
        if number is None:
            number = self.members[member_id] = self._next_owner
            self._next_owner += 1
        self.last_seen_ms[member_id] = now_ms
        return number

    def forget(self, member_id: str) -> None:
        self.members.pop(member_id, None)
        self.last_seen_ms.pop(member_id, None)

    def acquired_by(self, owner: int) -> int:
        return sum(
            int(np.count_nonzero((sp.window.owner == owner) & (sp.window.state == ACQUIRED)))
            for sp in self.partitions.values()
        )
