"""Share groups through the broker: acquire, acknowledge, locks, delays, dead letters, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from logstore.broker import Broker
from logstore.broker.share import AckKind
from logstore.errors import InvalidRequestError, RecordNotAcquiredError, UnknownGroupError
from logstore.records import decode_columns
from logstore.storage import ManualClock

from .helpers import LIGHT, opened, produce, run
from .share_helpers import ack, fetch


async def tasks(broker: Broker, *batches: int, partitions: int = 1) -> None:
    """Topic ``tasks``; batch i (of ``batches[i]`` records) goes to partition i % partitions."""
    broker.create_topic("tasks", partitions)
    n = 0
    for i, size in enumerate(batches):
        await produce(broker, "tasks", i % partitions, *[b"t%d" % (n + j) for j in range(size)])
        n += size


def test_members_outnumbering_partitions_all_get_work(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, 1, 1, 1, 1, 1, 1)  # one partition, six batches
            got = {m: await fetch(broker, m, max_records=2) for m in ("a", "b", "c")}
            assert all(len(records) == 2 for records in got.values())
            offsets = sorted(r[2] for records in got.values() for r in records)
            assert offsets == [0, 1, 2, 3, 4, 5]

    run(body())


def test_whole_batches_are_acquired_while_they_fit(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, 3, 3, 3)
            assert [r[2] for r in await fetch(broker, "a", max_records=7)] == [0, 1, 2, 3, 4, 5]
            assert [r[2] for r in await fetch(broker, "b", max_records=2)] == [6, 7]

    run(body())


def test_lock_expiry_redelivers_to_another_member(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        async with opened(tmp_path, clock, LIGHT) as broker:
            await tasks(broker, 2)
            await broker.alter_share_group_config("g", {"lock_ms": "1000"}, [])
            assert len(await fetch(broker, "a")) == 2
            assert await fetch(broker, "b") == []
            clock.advance(1000)
            again = await fetch(broker, "b")
            assert [(r[2], r[4]) for r in again] == [(0, 2), (1, 2)]

    run(body())


def test_ack_after_lock_expired_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        async with opened(tmp_path, clock, LIGHT) as broker:
            await tasks(broker, 1)
            await fetch(broker, "a", lock_ms=500)
            clock.advance(501)
            (result,) = await broker.share_acknowledge("g", "a", [ack("tasks", 0, 0)])
            assert isinstance(result.error, RecordNotAcquiredError)
            assert result.error.reason == "RECORD_NOT_ACQUIRED" and result.error.offset == 0
            assert [r[2] for r in await fetch(broker, "b")] == [0]  # still to be done

    run(body())


def test_accepted_records_are_not_delivered_again(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        async with opened(tmp_path, clock, LIGHT) as broker:
            await tasks(broker, 3)
            await fetch(broker, "a", lock_ms=100)
            (result,) = await broker.share_acknowledge("g", "a", [ack("tasks", 0, 0, 2)])
            assert result.error is None
            clock.advance(1000)
            assert await fetch(broker, "b") == []
            (info,) = broker.describe_share_group("g").partitions
            assert (info.start_offset, info.acknowledged, info.available) == (3, 0, 0)

    run(body())


def test_release_with_delay_is_not_redelivered_before_it(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        async with opened(tmp_path, clock, LIGHT) as broker:
            await tasks(broker, 1)
            await fetch(broker, "a")
            await broker.share_acknowledge("g", "a", [ack("tasks", 0, 0, kind=AckKind.RELEASE, delay_ms=2000)])
            clock.advance(1999)
            assert await fetch(broker, "b") == []
            clock.advance(1)
            assert [(r[2], r[4]) for r in await fetch(broker, "b")] == [(0, 2)]

    run(body())


def test_release_without_delay_follows_the_group_backoff(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        async with opened(tmp_path, clock, LIGHT) as broker:
            await tasks(broker, 1)
            await broker.alter_share_group_config("g", {"backoff": "1s,5s"}, [])
            for delivery, wait_ms in ((1, 1000), (2, 5000), (3, 5000)):
                (record,) = await fetch(broker, "a")
                assert record[4] == delivery
                await broker.share_acknowledge("g", "a", [ack("tasks", 0, 0, kind=AckKind.RELEASE)])
                clock.advance(wait_ms - 1)
                assert await fetch(broker, "a") == []
                clock.advance(1)

    run(body())


def test_renew_keeps_the_lock(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        async with opened(tmp_path, clock, LIGHT) as broker:
            await tasks(broker, 1)
            await fetch(broker, "a", lock_ms=1000)
            clock.advance(900)
            await broker.share_acknowledge("g", "a", [ack("tasks", 0, 0, kind=AckKind.RENEW)], lock_ms=1000)
            clock.advance(900)
            assert await fetch(broker, "b") == []
            (result,) = await broker.share_acknowledge("g", "a", [ack("tasks", 0, 0)])
            assert result.error is None

    run(body())


def dead_letters(broker: Broker, topic: str = "dlq") -> list[tuple[bytes, dict[str, bytes | None]]]:
    partition_log = broker.data_dir.log(topic, 0)
    columns = decode_columns(partition_log.read(0).data)
    return [(bytes(columns.value(i) or b""), dict(columns.headers(i))) for i in range(len(columns))]


def test_reject_archives_and_dead_letters_with_headers(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, 2)
            await broker.alter_share_group_config("g", {"dead_letter_topic": "dlq"}, [])
            await fetch(broker, "a")
            await broker.share_acknowledge("g", "a", [ack("tasks", 0, 1, kind=AckKind.REJECT, error="bad json")])
            ((value, headers),) = dead_letters(broker)
            assert value == b"t1"
            assert headers == {"topic": b"tasks", "partition": b"0", "offset": b"1",
                               "delivery_count": b"1", "last_error": b"bad json"}
            (info,) = broker.describe_share_group("g").partitions
            assert (info.archived, info.acquired, info.dead_lettered) == (1, 1, 1)

    run(body())


def test_max_deliveries_archives_and_dead_letters(tmp_path: Path) -> None:
    async def body() -> None:
        clock = ManualClock()
        async with opened(tmp_path, clock, LIGHT) as broker:
            await tasks(broker, 1)
            await broker.alter_share_group_config("g", {"dead_letter_topic": "dlq", "max_deliveries": 2}, [])
            await fetch(broker, "a", lock_ms=100)
            clock.advance(100)  # lock expiry: delivered once
            await fetch(broker, "a", lock_ms=100)
            clock.advance(100)  # second delivery expired: archived
            assert await fetch(broker, "b") == []
            ((value, headers),) = dead_letters(broker)
            assert headers["delivery_count"] == b"2" and headers["last_error"] == b"lock expired"

    run(body())


def test_max_acquired_records_bounds_the_window(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, *[1] * 10)
            await broker.alter_share_group_config("g", {"max_acquired_records": 4}, [])
            assert len(await fetch(broker, "a", max_records=3)) == 3
            assert len(await fetch(broker, "b", max_records=3)) == 1
            assert await fetch(broker, "c") == []
            await broker.share_acknowledge("g", "a", [ack("tasks", 0, 0, 2)])
            assert len(await fetch(broker, "c")) == 3

    run(body())


def test_leaving_member_releases_its_records_at_once(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, 2)
            await fetch(broker, "a")
            await broker.share_acknowledge("g", "a", [ack("tasks", 0, 0)], leave=True)
            assert [(r[2], r[4]) for r in await fetch(broker, "b")] == [(1, 2)]

    run(body())


def test_acks_for_offsets_never_delivered_are_refused_without_change(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, 3)
            await fetch(broker, "a", max_records=2)
            (result,) = await broker.share_acknowledge("g", "a", [ack("tasks", 0, 0, 2)])
            assert isinstance(result.error, RecordNotAcquiredError) and result.error.offset == 2
            (info,) = broker.describe_share_group("g").partitions
            assert (info.acquired, info.acknowledged, info.start_offset) == (2, 0, 0)

    run(body())


def test_acks_of_another_member_are_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, 1)
            await fetch(broker, "a")
            (result,) = await broker.share_acknowledge("g", "b", [ack("tasks", 0, 0)])
            assert result.error is not None and result.error.state == "acquired by another member"

    run(body())


def test_negative_delay_is_refused_before_anything_changes(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, 2)
            await fetch(broker, "a")
            with pytest.raises(InvalidRequestError) as info:
                await broker.share_acknowledge("g", "a", [
                    ack("tasks", 0, 0), ack("tasks", 0, 1, kind=AckKind.RELEASE, delay_ms=-5)])
            assert info.value.fields["field"] == "delay_ms"
            (part,) = broker.describe_share_group("g").partitions
            assert (part.acquired, part.acknowledged) == (2, 0)

    run(body())


def test_unknown_group_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, 1)
            with pytest.raises(UnknownGroupError):
                await broker.share_acknowledge("nobody", "a", [ack("tasks", 0, 0)])
            with pytest.raises(UnknownGroupError):
                broker.describe_share_group("nobody")

    run(body())


def test_reset_moves_the_start_offset(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, 5)
            await fetch(broker, "a", max_records=1)
            await broker.share_acknowledge("g", "a", [ack("tasks", 0, 0)])
            (info,) = await broker.reset_share_group("g", "tasks", [], "offset", 3)
            assert info.start_offset == 3
            assert [r[2] for r in await fetch(broker, "a")] == [3, 4]

    run(body())


def test_latest_auto_offset_reset_skips_older_records(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(tmp_path, ManualClock(), LIGHT) as broker:
            await tasks(broker, 2)
            await broker.alter_share_group_config("g", {"auto_offset_reset": "latest"}, [])
            assert await fetch(broker, "a") == []
            await produce(broker, "tasks", 0, b"new")
            assert [r[3] for r in await fetch(broker, "a")] == [b"new"]

    run(body())
