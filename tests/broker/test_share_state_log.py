"""Share-group state in ``__share_group_state``: rebuilt after clean and unclean restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from logstore.broker import Broker
from logstore.broker.internal import SHARE_STATE_TOPIC, read_entries
from logstore.broker.share import AckKind
from logstore.broker.share.state_log import DELTAS_PER_SNAPSHOT
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
