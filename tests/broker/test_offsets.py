"""Committed offsets through the broker: round trips, restarts, compaction, deletes, lag, resets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logstore.broker import Broker
from logstore.broker.internal import OFFSETS_TOPIC, partition_for
from logstore.errors import (
    FencedMemberEpochError,
    GroupNotEmptyError,
    OffsetOutOfRangeError,
    PartitionNotAssignedError,
    UnknownGroupError,
    UnknownMemberError,
    UnknownTopicError,
)
from logstore.storage import ManualClock

from .helpers import crash, opened, produce, run

DAY_MS = 24 * 3600 * 1000


async def topic_with(broker: Broker, name: str, *sizes: int, timestamps: int | None = None) -> None:
    """Create ``name`` with one partition per size and that many records in each."""
    broker.create_topic(name, len(sizes))
    for partition, size in enumerate(sizes):
        if size:
            stamps = None if timestamps is None else [timestamps + i * 1000 for i in range(size)]
            await produce(broker, name, partition, *[b"v%d" % i for i in range(size)], timestamps=stamps)


def committed(broker: Broker, group: str) -> dict[tuple[str, int], tuple[int, str]]:
    return {(o.topic, o.partition): (o.offset, o.metadata) for o in broker.fetch_offsets(group)}


def test_commit_then_fetch_returns_offset_metadata_and_time(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 10, 10)
            results = broker.commit_offsets("g", "", -1, [("t", 0, 4, "meta"), ("t", 1, 10, "")])
            assert [error for _, _, error in results] == [None, None]
            infos = broker.fetch_offsets("g")
            assert [(i.topic, i.partition, i.offset, i.metadata) for i in infos] == [
                ("t", 0, 4, "meta"), ("t", 1, 10, ""),
            ]
            assert {i.commit_timestamp_ms for i in infos} == {clock.now_ms()}
            assert broker.list_groups() == [("g", "empty", 0)]

    run(body())


def test_a_later_commit_replaces_the_earlier_one(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 10)
            broker.commit_offsets("g", "", -1, [("t", 0, 7, "a")])
            broker.commit_offsets("g", "", -1, [("t", 0, 3, "b")])  # moving back is allowed
            assert committed(broker, "g") == {("t", 0): (3, "b")}

    run(body())


def test_offsets_survive_a_clean_restart(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 5, 5)
            broker.commit_offsets("g1", "", -1, [("t", 0, 2, "x"), ("t", 1, 5, "")])
            broker.commit_offsets("g2", "", -1, [("t", 1, 1, "y")])
        async with opened(tmp_path, clock) as broker:
            assert committed(broker, "g1") == {("t", 0): (2, "x"), ("t", 1): (5, "")}
            assert committed(broker, "g2") == {("t", 1): (1, "y")}

    run(body())


def test_offsets_survive_a_crash(tmp_path: Path, clock: ManualClock) -> None:
    """The internal topic is flush=always: an acknowledged commit is on disk."""
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 5)
            broker.commit_offsets("g", "", -1, [("t", 0, 3, "")])
            crash(broker)
        async with opened(tmp_path, clock) as broker:
            assert committed(broker, "g") == {("t", 0): (3, "")}

    run(body())


def test_a_committed_offset_past_a_log_cut_by_recovery_moves_back_to_the_log_end(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A power loss took records the group had committed past; found by the torture run: the
    records appended after the restart at those offsets would otherwise never reach the group."""
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1, {"flush": "never"})
            await produce(broker, "t", 0, *[b"a%d" % i for i in range(5)])
            segment = tmp_path / "t-0" / "00000000000000000000.log"
            synced = segment.stat().st_size
            await produce(broker, "t", 0, *[b"b%d" % i for i in range(5)])
            broker.commit_offsets("g", "", -1, [("t", 0, 8, "m")])
            crash(broker)
        os.truncate(segment, synced + 10)  # the second batch never reached the disk
        async with opened(tmp_path, clock) as broker:
            assert broker.data_dir.log("t", 0).log_end_offset == 5
            assert committed(broker, "g") == {("t", 0): (5, "m")}
            crash(broker)
        async with opened(tmp_path, clock) as broker:  # the move was committed, durably
            assert committed(broker, "g") == {("t", 0): (5, "m")}

    run(body())


def test_offsets_survive_compaction_of_the_internal_topic(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 100, 100, 100)
            offsets_log = broker.data_dir.topic(OFFSETS_TOPIC).logs[
                partition_for("g", broker.config.offsets_topic_partitions)
            ]
            for round_ in range(5):
                for step in range(40):
                    n = round_ * 40 + step
                    broker.commit_offsets("g", "", -1, [("t", n % 3, n // 3, f"m{n}")])
                offsets_log.roll()
            expected = committed(broker, "g")
            records_before = offsets_log.log_end_offset - offsets_log.log_start_offset
            results = broker.data_dir.run_compaction(force=True)
            assert sum(r.records_removed for r in results) == records_before - 3
            assert len(offsets_log.segments) < 6
            assert committed(broker, "g") == expected
        async with opened(tmp_path, clock) as broker:
            assert committed(broker, "g") == expected == {
                ("t", 0): (66, "m198"), ("t", 1): (66, "m199"), ("t", 2): (65, "m197"),
            }

    run(body())


def test_deleted_group_stays_deleted_after_its_tombstones_are_compacted_away(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 10)
            for offset in range(10):
                broker.commit_offsets("g", "", -1, [("t", 0, offset, "")])
            broker.delete_group("g")
            for offsets_log in broker.data_dir.topic(OFFSETS_TOPIC).logs:
                offsets_log.roll()
            clock.advance(DAY_MS + 1)  # past delete_retention_ms: the tombstones may go too
            broker.data_dir.run_compaction(force=True)
            remaining = sum(lg.size_bytes for lg in broker.data_dir.topic(OFFSETS_TOPIC).logs)
            assert remaining == 0
        async with opened(tmp_path, clock) as broker:
            assert broker.fetch_offsets("g") == []
            assert broker.list_groups() == []

    run(body())


def test_delete_group_tombstones_its_offsets(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 5)
            broker.commit_offsets("g", "", -1, [("t", 0, 3, "")])
            broker.commit_offsets("keep", "", -1, [("t", 0, 1, "")])
            broker.delete_group("g")
            assert broker.fetch_offsets("g") == []
            with pytest.raises(UnknownGroupError):
                broker.describe_group("g")
        async with opened(tmp_path, clock) as broker:
            assert broker.fetch_offsets("g") == []
            assert [name for name, _, _ in broker.list_groups()] == ["keep"]
            with pytest.raises(UnknownGroupError):
                broker.delete_group("g")

    run(body())


def test_delete_group_is_refused_while_members_are_active(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 5)
            broker.group_heartbeat("g", "", 0, topics=["t"])
            with pytest.raises(GroupNotEmptyError):
                broker.delete_group("g")

    run(body())


def test_delete_topic_tombstones_its_offsets_in_every_group(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 5, 5)
            await topic_with(broker, "other", 5)
            for group in ("g1", "g2", "g3"):
                broker.commit_offsets(group, "", -1, [("t", 0, 1, ""), ("t", 1, 2, ""), ("other", 0, 3, "")])
            broker.delete_topic("t")
            for group in ("g1", "g2", "g3"):
                assert committed(broker, group) == {("other", 0): (3, "")}
        async with opened(tmp_path, clock) as broker:
            for group in ("g1", "g2", "g3"):
                assert committed(broker, group) == {("other", 0): (3, "")}

    run(body())


def test_commit_past_the_log_end_or_negative_is_refused_for_that_partition_only(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 5, 5, 5)
            results = broker.commit_offsets(
                "g", "", -1, [("t", 0, 6, ""), ("t", 1, 5, ""), ("t", 2, -1, ""), ("gone", 0, 1, "")]
            )
            errors = {(t, p): e for t, p, e in results}
            assert isinstance(errors[("t", 0)], OffsetOutOfRangeError)
            assert errors[("t", 0)].reason == "OFFSET_OUT_OF_RANGE"
            assert errors[("t", 0)].log_end_offset == 5
            assert errors[("t", 1)] is None
            assert isinstance(errors[("t", 2)], OffsetOutOfRangeError)
            assert isinstance(errors[("gone", 0)], UnknownTopicError)
            assert committed(broker, "g") == {("t", 1): (5, "")}

    run(body())


def test_lag_is_log_end_minus_committed(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 10, 4)
            broker.commit_offsets("g", "", -1, [("t", 0, 3, "")])
            info = {(o.topic, o.partition): o for o in broker.fetch_offsets("g", [("t", 0), ("t", 1)])}
            assert (info[("t", 0)].offset, info[("t", 0)].log_end_offset, info[("t", 0)].lag) == (3, 10, 7)
            # nothing committed: offset -1, the lag is the whole partition
            assert (info[("t", 1)].offset, info[("t", 1)].lag) == (-1, 4)
            await produce(broker, "t", 0, b"more", b"more")
            (again,) = broker.fetch_offsets("g", [("t", 0)])
            assert again.lag == 9

    run(body())


def test_reset_offsets_of_an_inactive_group(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            base = clock.now_ms()
            await topic_with(broker, "t", 10, 6, timestamps=base)  # record i at base + i s
            broker.commit_offsets("g", "", -1, [("t", 0, 5, ""), ("t", 1, 5, "")])
            broker.reset_offsets("g", "t", [], "earliest")
            assert committed(broker, "g") == {("t", 0): (0, ""), ("t", 1): (0, "")}
            broker.reset_offsets("g", "t", [1], "latest")
            assert committed(broker, "g") == {("t", 0): (0, ""), ("t", 1): (6, "")}
            broker.reset_offsets("g", "t", [0], "offset", offset=7)
            assert committed(broker, "g")[("t", 0)] == (7, "")
            broker.reset_offsets("g", "t", [], "timestamp", timestamp_ms=base + 4_500)
            assert committed(broker, "g") == {("t", 0): (5, ""), ("t", 1): (5, "")}
            broker.reset_offsets("g", "t", [], "timestamp", timestamp_ms=base + 60_000)
            assert committed(broker, "g") == {("t", 0): (10, ""), ("t", 1): (6, "")}

    run(body())


def test_reset_offsets_dry_run_commits_nothing(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 10)
            broker.commit_offsets("g", "", -1, [("t", 0, 2, "")])
            (planned,) = broker.reset_offsets("g", "t", [0], "latest", dry_run=True)
            assert (planned.offset, planned.lag) == (10, 0)
            assert committed(broker, "g") == {("t", 0): (2, "")}

    run(body())


def test_reset_to_an_offset_outside_the_log_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 10)
            with pytest.raises(OffsetOutOfRangeError):
                broker.reset_offsets("g", "t", [0], "offset", offset=11)
            assert broker.fetch_offsets("g") == []

    run(body())


def test_reset_offsets_is_refused_while_members_are_active(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 10)
            broker.commit_offsets("g", "", -1, [("t", 0, 2, "")])
            broker.group_heartbeat("g", "", 0, topics=["t"])
            with pytest.raises(GroupNotEmptyError):
                broker.reset_offsets("g", "t", [], "earliest")
            assert committed(broker, "g") == {("t", 0): (2, "")}

    run(body())


def test_member_commits_only_its_own_partitions(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 5, 5)
            await topic_with(broker, "u", 5)
            joined = broker.group_heartbeat("g", "", 0, topics=["t"])
            results = broker.commit_offsets(
                "g", joined.member_id, joined.member_epoch, [("t", 0, 1, ""), ("u", 0, 1, "")]
            )
            errors = {(t, p): e for t, p, e in results}
            assert errors[("t", 0)] is None
            assert isinstance(errors[("u", 0)], PartitionNotAssignedError)
            assert committed(broker, "g") == {("t", 0): (1, "")}

    run(body())


def test_commit_from_a_stale_or_unknown_member_is_refused_whole(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await topic_with(broker, "t", 5)
            joined = broker.group_heartbeat("g", "", 0, topics=["t"])
            with pytest.raises(FencedMemberEpochError):
                broker.commit_offsets("g", joined.member_id, joined.member_epoch + 5, [("t", 0, 1, "")])
            with pytest.raises(UnknownMemberError):
                broker.commit_offsets("g", "nobody", 1, [("t", 0, 1, "")])
            with pytest.raises(UnknownMemberError):  # a standalone commit into a live group
                broker.commit_offsets("g", "", -1, [("t", 0, 1, "")])
            assert broker.fetch_offsets("g") == []

    run(body())
