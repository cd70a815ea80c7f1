"""Share-group state in ``__share_group_state``: rebuilt after clean and unclean restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from logstore.broker import Broker, BrokerConfig
from logstore.broker.internal import SHARE_STATE_TOPIC, partition_for, read_entries
from logstore.broker.share import AckKind
from logstore.broker.share.state_log import DELTAS_PER_SNAPSHOT, ShareStateLog
from logstore.storage import ManualClock

from .helpers import LIGHT, crash, open_broker, opened, produce, run
from .share_helpers import ack, fetch


def test_restart_makes_acquired_available_and_keeps_counts(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        async with opened(tmp_path, clock, LIGHT) as broker:
            broker.create_topic("tasks", 1)
            await produce(broker, "tasks", 0, b"a", b"b", b"c")
            await fetch(broker, "w1")
            await broker.share_acknowledge("g", "w1", [ack("tasks", 0, 0)])
        async with opened(tmp_path, clock, LIGHT) as broker:
            assert [(r[2], r[4]) for r in await fetch(broker, "w2")] == [(1, 2), (2, 2)]

    run(body())


def test_acknowledged_state_survives_a_crash(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        broker = await open_broker(tmp_path, clock, LIGHT)
        broker.create_topic("tasks", 1)
        await produce(broker, "tasks", 0, b"a", b"b", b"c")
        await fetch(broker, "w1")
        await broker.share_acknowledge("g", "w1", [
            ack("tasks", 0, 0), ack("tasks", 0, 2, kind=AckKind.REJECT)])
        crash(broker)
        async with opened(tmp_path, clock, LIGHT) as broker:
            assert [(r[2], r[4]) for r in await fetch(broker, "w2")] == [(1, 2)]

    run(body())


def test_state_survives_many_snapshot_generations(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        count = DELTAS_PER_SNAPSHOT * 2 + 5
        async with opened(tmp_path, clock, LIGHT) as broker:
            broker.create_topic("tasks", 1)
            await produce(broker, "tasks", 0, *[b"x%d" % i for i in range(count + 3)])
            for offset in range(count):  # a fetch and an ack each: four generations
                (record,) = await fetch(broker, "w", max_records=1)
                assert record[2] == offset
                await broker.share_acknowledge("g", "w", [ack("tasks", 0, offset)])
            await fetch(broker, "w", max_records=1)
        async with opened(tmp_path, clock, LIGHT) as broker:
            got = await fetch(broker, "w2")
            assert [(r[2], r[4]) for r in got] == [(count, 2), (count + 1, 1), (count + 2, 1)]
            keys = {str(k) for _, k, _ in read_entries(broker.data_dir.log(SHARE_STATE_TOPIC, 0), raw_values=True)}
            assert len(keys) <= 1 + DELTAS_PER_SNAPSHOT  # slots reused: compaction keeps it small

    run(body())


def test_config_survives_a_restart(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await broker.alter_share_group_config("g", {"lock_ms": "5s", "backoff": "1s,2s"}, [])
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            config = broker.describe_share_group("g").config
            assert config["lock_ms"] == "5000" and config["backoff_ms"] == "1000ms,2000ms"

    run(body())


def test_delayed_release_survives_a_restart(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        async with opened(tmp_path, clock, LIGHT) as broker:
            broker.create_topic("tasks", 1)
            await produce(broker, "tasks", 0, b"a")
            await fetch(broker, "w")
            await broker.share_acknowledge("g", "w", [ack("tasks", 0, 0, kind=AckKind.RELEASE, delay_ms=1000)])
        async with opened(tmp_path, clock, LIGHT) as broker:
            assert await fetch(broker, "w") == []
            clock.advance(1000)
            assert len(await fetch(broker, "w")) == 1

    run(body())


def test_a_fetch_with_acknowledgements_writes_one_state_record(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            broker.create_topic("tasks", 1)
            await produce(broker, "tasks", 0, b"a", b"b")
            await produce(broker, "tasks", 0, b"c", b"d")
            await fetch(broker, "w", max_records=2)
            state = broker.data_dir.log(SHARE_STATE_TOPIC, 0)
            before = state.log_end_offset
            records = await fetch(broker, "w", acks=[ack("tasks", 0, 0, 1)], max_records=2)
            assert [r[2] for r in records] == [2, 3]
            assert state.log_end_offset == before + 1  # the acks and the acquisition: one delta

    run(body())


def test_concurrent_calls_of_one_tick_share_one_append(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            broker.create_topic("tasks", 2)
            for partition in (0, 1):
                await produce(broker, "tasks", partition, *[b"t%d" % i for i in range(8)])
            members = [f"w{i}" for i in range(8)]
            for member in members:
                await fetch(broker, member, max_records=2)
            state = broker.data_dir.log(SHARE_STATE_TOPIC, 0)
            before, appends = state.log_end_offset, broker.shares.writer.appends
            results = await asyncio.gather(*(
                broker.share_acknowledge("g", m, [ack("tasks", p, o) for p in (0, 1) for o in range(8)
                                                  if _holder(broker, p, o) == m])
                for m in members))
            assert all(r.error is None for rs in results for r in rs)
            assert broker.shares.writer.appends == appends + 1  # eight calls, one batch
            assert state.log_end_offset == before + 2  # one delta per share-partition, in that batch
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            assert await fetch(broker, "late") == []  # every task accepted, durably

    run(body())


def _holder(broker: Broker, partition: int, offset: int) -> str:
    sp = broker.shares.groups["g"].partitions[("tasks", partition)]
    owner = int(sp.window.owner[offset - sp.window.start_offset])
    return next(m for m, number in broker.shares.groups["g"].members.items() if number == owner)


def test_the_state_topic_is_written_through_not_fsynced_per_call(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            assert broker.data_dir.topic(SHARE_STATE_TOPIC).config.flush == "interval"

    run(body())


#: Four state partitions (the default), so share-partitions can land apart.
FOUR = BrokerConfig(offsets_topic_partitions=4)


def _apart_group() -> str:
    """A group whose share-partitions 0 and 1 of ``tasks`` earlier versions placed in different
    state partitions (by group, topic and partition)."""
    return next(g for g in (f"g{i}" for i in range(100))
                if partition_for(f"{g}\x00tasks\x000", 4) != partition_for(f"{g}\x00tasks\x001", 4))


def test_a_fetch_acking_one_partition_and_acquiring_another_is_one_append(tmp_path: Path) -> None:
    async def body() -> None:
        group = _apart_group()
        async with opened(tmp_path, ManualClock(), FOUR) as broker:
            broker.create_topic("tasks", 2)
            for partition in (0, 1):
                await produce(broker, "tasks", partition, b"a", b"b")
            (first, _) = await fetch(broker, "w", group=group, max_records=2)  # one partition's batch
            appends = broker.shares.writer.appends
            other = await fetch(broker, "w", group=group, max_records=2,
                                acks=[ack("tasks", first[1], 0, 1)])
            assert {r[1] for r in other} == {1 - first[1]}  # acked one share-partition, acquired the other
            assert broker.shares.writer.appends == appends + 1  # both deltas in one append

    run(body())


def test_state_written_where_earlier_versions_put_it_is_loaded_and_moved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        group, clock = _apart_group(), ManualClock()
        with monkeypatch.context() as patch:  # an earlier version: placed by group, topic, partition
            patch.setattr(ShareStateLog, "log_for", lambda self, g, t=None, p=0: (
                self._logs[partition_for(g if t is None else f"{g}\x00{t}\x00{p}", len(self._logs))]))
            async with opened(tmp_path, clock, FOUR) as broker:
                broker.create_topic("tasks", 2)
                for partition in (0, 1):
                    await produce(broker, "tasks", partition, b"a", b"b", b"c")
                got = await fetch(broker, "w", group=group, max_records=6)
                await broker.share_acknowledge(group, "w", [ack(t, p, o) for t, p, o, _, _ in got if o == 0])
        async with opened(tmp_path, clock, FOUR) as broker:  # this version: loads it, moves it
            got = await fetch(broker, "w2", group=group, max_records=6)
            assert sorted((r[1], r[2], r[4]) for r in got) == [(p, o, 2) for p in (0, 1) for o in (1, 2)]
            await broker.share_acknowledge(group, "w2", [ack(t, p, o) for t, p, o, _, _ in got if o == 1])
        async with opened(tmp_path, clock, FOUR) as broker:  # the newest state wins over the old place's
            got = await fetch(broker, "w3", group=group, max_records=6)
            assert sorted((r[1], r[2], r[4]) for r in got) == [(0, 2, 3), (1, 2, 3)]
            for t, p, o, _, _ in got:
                await broker.share_acknowledge(group, "w3", [ack(t, p, o, kind=AckKind.RELEASE, delay_ms=0)])
            broker.delete_topic("tasks")  # tombstones in both places
            broker.create_topic("tasks", 2)
            await produce(broker, "tasks", 0, b"new")
        async with opened(tmp_path, clock, FOUR) as broker:
            assert [(r[2], r[3], r[4]) for r in await fetch(broker, "w4", group=group)] == [(0, b"new", 1)]

    run(body())
