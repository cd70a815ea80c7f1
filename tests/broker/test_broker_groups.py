"""Consumer groups through ``Broker``: heartbeats, describe/list, fencing of fetches and commits,
housekeeping, topic deletion, restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from logstore.broker import Broker, BrokerConfig, FetchItem
from logstore.broker.groups.coordinator import LEAVE_EPOCH
from logstore.errors import (
    InvalidNameError,
    PartitionNotAssignedError,
    UnknownGroupError,
    UnknownMemberError,
)
from logstore.storage import ManualClock

from .helpers import opened, produce, run


class Member:
    def __init__(self, broker: Broker, group: str = "g", topics: tuple[str, ...] = ("t",), **join: object) -> None:
        self.broker = broker
        self.group = group
        result = broker.group_heartbeat(group, "", 0, topics=list(topics), **join)
        self.member_id = result.member_id
        self.epoch = result.member_epoch
        self.owned = set(result.assignment)

    def beat(self, **options: object) -> set[tuple[str, int]]:
        result = self.broker.group_heartbeat(self.group, self.member_id, self.epoch, owned=sorted(self.owned), **options)
        self.epoch = result.member_epoch
        self.owned = set(result.assignment)
        return self.owned

    async def fetch(self, *partitions: tuple[str, int]):  # type: ignore[no-untyped-def]
        return await self.broker.fetch(
            [FetchItem(t, p, 0) for t, p in partitions], group=(self.group, self.member_id, self.epoch)
        )


def settle(*members: Member) -> None:
    for _ in range(4):
        for member in members:
            member.beat()


def test_describe_group_shows_members_assignment_and_offsets(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            await produce(broker, "t", 0, b"a", b"b")
            first = Member(broker, assignor="range")
            broker.commit_offsets("g", first.member_id, first.epoch, [("t", 0, 1, "")])
            info = broker.describe_group("g")
            assert (info.state, info.assignor, len(info.members)) == ("stable", "range", 1)
            assert info.members[0].assignment == [("t", 0), ("t", 1)]
            assert [(o.partition, o.offset, o.lag) for o in info.offsets] == [(0, 1, 1), (1, -1, 0)]
            assert broker.list_groups() == [("g", "stable", 1)]

    run(body())


def test_a_second_member_makes_the_group_reconcile_until_the_first_revokes(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 4)
            first = Member(broker)
            second = Member(broker)
            assert broker.describe_group("g").state == "reconciling"
            first.beat()
            revoking = {tp for m in broker.describe_group("g").members for tp in m.revoking}
            assert len(revoking) == 2
            # while revoking, the first may still fetch and commit them (its last offsets)
            (outcome,) = await first.fetch(sorted(revoking)[0])
            assert outcome.error is None
            assert all(e is None for _, _, e in broker.commit_offsets(
                "g", first.member_id, first.epoch, [(t, p, 0, "") for t, p in revoking]
            ))
            first.beat()  # revocation confirmed
            with pytest.raises(PartitionNotAssignedError):
                await first.fetch(sorted(revoking)[0])
            assert second.beat() == revoking
            assert broker.describe_group("g").state == "stable"

    run(body())


def test_a_member_that_left_is_unknown_to_fetch_and_commit(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            member = Member(broker)
            broker.group_heartbeat("g", member.member_id, LEAVE_EPOCH)
            with pytest.raises(UnknownMemberError):
                await member.fetch(("t", 0))
            with pytest.raises(UnknownMemberError):
                broker.commit_offsets("g", member.member_id, member.epoch, [("t", 0, 0, "")])
            assert broker.list_groups() == [("g", "empty", 0)]
            broker.delete_group("g")
            with pytest.raises(UnknownGroupError):
                broker.describe_group("g")

    run(body())


def test_invalid_group_names_are_refused(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            for name in ("", "a/b", "x" * 300):
                with pytest.raises(InvalidNameError):
                    broker.group_heartbeat(name, "", 0, topics=["t"])
                with pytest.raises(InvalidNameError):
                    broker.fetch_offsets(name)

    run(body())


def test_members_are_forgotten_by_a_restart_but_offsets_are_not(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            await produce(broker, "t", 0, b"a")
            member = Member(broker)
            broker.commit_offsets("g", member.member_id, member.epoch, [("t", 0, 1, "")])
        async with opened(tmp_path, clock) as broker:
            member.broker = broker
            with pytest.raises(UnknownMemberError):
                member.beat()
            assert broker.describe_group("g").state == "empty"
            assert [o.offset for o in broker.fetch_offsets("g")] == [1]
            again = Member(broker)
            assert again.owned == {("t", 0)}

    run(body())


def test_housekeeping_evicts_silent_members_and_expires_transactions(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        config = BrokerConfig(housekeeping_interval_ms=5)
        async with opened(tmp_path, clock, config) as broker:
            broker.create_topic("t", 1)
            member = Member(broker, session_timeout_ms=1_000)
            pid, epoch = broker.init_producer_id("tx", timeout_ms=1_000)
            broker.add_partitions_to_txn("tx", pid, epoch, [("t", 0)])
            broker.start()
            await asyncio.sleep(0.05)
            assert broker.describe_group("g").members  # time has not moved
            clock.advance(1_001)
            for _ in range(100):
                await asyncio.sleep(0.01)
                if not broker.describe_group("g").members:
                    break
            with pytest.raises(UnknownMemberError):
                member.beat()
            assert broker.transactions.transactions["tx"].state == "complete_abort"

    run(body())


def test_deleting_a_subscribed_topic_takes_its_partitions_out_of_the_assignment(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            broker.create_topic("u", 2)
            member = Member(broker, topics=("t", "u"))
            assert len(member.owned) == 4
            broker.commit_offsets("g", member.member_id, member.epoch, [("u", 0, 0, "")])
            broker.delete_topic("u")
            settle(member)
            assert member.owned == {("t", 0), ("t", 1)}
            info = broker.describe_group("g")
            assert info.state == "stable"
            assert [(o.topic, o.partition) for o in info.offsets] == [("t", 0), ("t", 1)]  # no u
            broker.create_topic("u", 1)  # back again: assigned again
            settle(member)
            assert member.owned == {("t", 0), ("t", 1), ("u", 0)}

    run(body())


def test_a_static_member_keeps_its_partitions_across_a_bounce(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 4)
            static = Member(broker, instance_id="pod-0")
            other = Member(broker)
            settle(static, other)
            kept = set(static.owned)
            broker.group_heartbeat("g", static.member_id, -2)
            settle(other)
            back = Member(broker, instance_id="pod-0")
            assert back.owned == kept
            with pytest.raises(UnknownMemberError):
                broker.commit_offsets("g", static.member_id, static.epoch, [("t", 0, 0, "")])

    run(body())
