"""Produce and fetch through ``Broker``: validation (all or nothing), acks, long polls, budgets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from crc32c import crc32c

from logstore.broker import (
    Acks,
    Broker,
    FetchItem,
    Isolation,
    ListOffsetsItem,
    OffsetSpec,
    ProduceItem,
    StartPosition,
)
from logstore.errors import (
    BatchTooLargeError,
    CorruptBatchError,
    InvalidRequestError,
    OffsetOutOfRangeError,
    PartitionNotAssignedError,
    ShuttingDownError,
    UnknownPartitionError,
    UnknownTopicError,
)
from logstore.records import HEADER_SIZE, decode_records, encode_batch, validate_batches
from logstore.records.layout import CRC_START, HEADER_STRUCT
from logstore.storage import ManualClock

from .helpers import committed_records, open_broker, opened, produce, run

#: A long poll that returns this much earlier than its max_wait was woken, not timed out.
LONG_WAIT_MS = 10_000


def corrupt(data: bytes) -> bytes:
    """Flip one byte of the last record's value (covered by the crc)."""
    damaged = bytearray(data)
    damaged[-1] ^= 0xFF
    return bytes(damaged)


def empty_batch() -> bytes:
    """A well-formed batch (crc and all) of zero records, which encode_batch will not make."""
    fields = list(HEADER_STRUCT.unpack(encode_batch([b"x"])[:HEADER_SIZE]))
    fields[1], fields[7], fields[8] = HEADER_SIZE, 0, 0  # batch_length, last_offset_delta, record_count
    header = bytearray(HEADER_STRUCT.pack(*fields))
    header[16:20] = crc32c(bytes(header[CRC_START:])).to_bytes(4, "little")
    validate_batches(bytes(header))  # the records layer lets it through; the broker must not
    return bytes(header)


def values_of(records: bytes | memoryview, offset: int = 0) -> list[bytes | None]:
    return [r.value for r in decode_records(records, min_offset=offset)]


def ends(broker: Broker, topic: str = "t") -> list[int]:
    return [lg.log_end_offset for lg in broker.data_dir.topic(topic).logs]


def test_produce_assigns_offsets_and_fetch_returns_the_records(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            outcomes = await broker.produce([
                ProduceItem("t", 0, encode_batch([b"a", b"b"]) + encode_batch([b"c"])),
                ProduceItem("t", 1, encode_batch([b"x"])),
            ])
            assert [(o.base_offset, o.last_offset, o.record_count) for o in outcomes] == [(0, 2, 3), (0, 0, 1)]
            fetched = await broker.fetch([FetchItem("t", 0, 1), FetchItem("t", 1, 0)])
            assert values_of(fetched[0].records, 1) == [b"b", b"c"]
            assert values_of(fetched[1].records) == [b"x"]
            assert [(f.high_watermark, f.next_offset, f.last_stable_offset) for f in fetched] == [(3, 3, 3), (1, 1, 1)]

    run(body())


def test_a_corrupt_batch_refuses_the_whole_request(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            with pytest.raises(CorruptBatchError) as caught:
                await broker.produce([
                    ProduceItem("t", 0, encode_batch([b"fine"])),
                    ProduceItem("t", 1, encode_batch([b"ok"]) + corrupt(encode_batch([b"bad"]))),
                ])
            assert (caught.value.fields["topic"], caught.value.fields["partition"]) == ("t", 1)
            assert caught.value.position is not None and caught.value.position > 0
            assert ends(broker) == [0, 0]

    run(body())


def test_a_truncated_batch_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            with pytest.raises(CorruptBatchError):
                await produce_raw(broker, encode_batch([b"whole"]) + encode_batch([b"cut"])[:-3])
            assert ends(broker) == [0]

    run(body())


async def produce_raw(broker: Broker, data: bytes, acks: Acks = Acks.ALL):  # type: ignore[no-untyped-def]
    return await broker.produce([ProduceItem("t", 0, data)], acks)


def test_control_batches_from_clients_are_refused(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            marker = encode_batch([b""], keys=[b"COMMIT"], producer_id=1, producer_epoch=0,
                                  transactional=True, control=True)
            with pytest.raises(InvalidRequestError):
                await produce_raw(broker, encode_batch([b"before"]) + marker)
            assert ends(broker) == [0]

    run(body())


def test_a_transactional_batch_without_producer_id_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            with pytest.raises(InvalidRequestError):
                await produce_raw(broker, encode_batch([b"x"], transactional=True))
            assert ends(broker) == [0]

    run(body())


def test_empty_requests_are_refused(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            with pytest.raises(InvalidRequestError):
                await broker.produce([])
            with pytest.raises(InvalidRequestError):
                await broker.fetch([])
            with pytest.raises(CorruptBatchError):  # a partition without batches
                await produce_raw(broker, b"")
            with pytest.raises(CorruptBatchError):  # a batch without records
                await produce_raw(broker, encode_batch([b"one"]) + empty_batch())
            assert ends(broker) == [0]

    run(body())


def test_a_batch_larger_than_max_batch_bytes_refuses_the_request(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1, {"max_batch_bytes": 1024})
            with pytest.raises(BatchTooLargeError) as caught:
                await produce_raw(broker, encode_batch([b"small"]) + encode_batch([b"x" * 2000]))
            assert caught.value.limit == 1024
            assert ends(broker) == [0]

    run(body())


def test_an_unknown_topic_or_partition_refuses_the_request(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            good = ProduceItem("t", 0, encode_batch([b"x"]))
            with pytest.raises(UnknownTopicError):
                await broker.produce([good, ProduceItem("nope", 0, encode_batch([b"x"]))])
            with pytest.raises(UnknownPartitionError):
                await broker.produce([good, ProduceItem("t", 1, encode_batch([b"x"]))])
            assert ends(broker) == [0]

    run(body())


def test_acks_none_answers_before_appending(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            (outcome,) = await produce_raw(broker, encode_batch([b"fire", b"forget"]), Acks.NONE)
            assert outcome.base_offset == -1 and outcome.error is None
            await asyncio.sleep(0)
            assert ends(broker) == [2]

    run(body())


def test_acks_all_on_a_flush_always_topic_returns_once_durable(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1, {"flush": "always"})
            await produce_raw(broker, encode_batch([b"a", b"b", b"c"]))
            assert broker.data_dir.log("t", 0).recovery_point == 3

    run(body())


def test_fetch_serves_the_good_partitions_when_one_fails(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            await produce(broker, "t", 0, b"a")
            good, past_end, missing = await broker.fetch(
                [FetchItem("t", 0, 0), FetchItem("t", 0, 5), FetchItem("t", 3, 0)], max_wait_ms=LONG_WAIT_MS
            )
            assert values_of(good.records) == [b"a"]
            assert isinstance(past_end.error, OffsetOutOfRangeError)
            assert isinstance(missing.error, UnknownPartitionError)

    run(body())


def test_negative_fetch_arguments_are_refused(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            with pytest.raises(InvalidRequestError):
                await broker.fetch([FetchItem("t", 0, -1)])
            with pytest.raises(InvalidRequestError):
                await broker.fetch([FetchItem("t", 0, 0)], max_wait_ms=-1)

    run(body())


def test_fetch_returns_at_least_one_whole_batch_however_small_max_bytes(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            await produce(broker, "t", 0, b"x" * 500)
            await produce(broker, "t", 0, b"y" * 500)
            await produce(broker, "t", 1, b"z" * 500)
            first, second = await broker.fetch([FetchItem("t", 0, 0), FetchItem("t", 1, 0)], max_bytes=10)
            assert values_of(first.records) == [b"x" * 500]
            assert first.next_offset == 1
            assert second.records == b"" and second.high_watermark == 1  # the budget is spent

    run(body())


def test_a_long_poll_returns_as_soon_as_a_record_is_appended(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            poll = asyncio.ensure_future(
                broker.fetch([FetchItem("t", 0, 0), FetchItem("t", 1, 0)], max_wait_ms=LONG_WAIT_MS)
            )
            await asyncio.sleep(0.05)
            assert not poll.done()
            await produce(broker, "t", 1, b"wake")
            outcomes = await asyncio.wait_for(poll, 5)
            assert loop.time() - started < LONG_WAIT_MS / 1000 / 2
            assert values_of(outcomes[1].records) == [b"wake"]
            assert outcomes[0].records == b""

    run(body())


def test_a_long_poll_waits_for_min_bytes(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            poll = asyncio.ensure_future(broker.fetch([FetchItem("t", 0, 0)], max_wait_ms=LONG_WAIT_MS, min_bytes=300))
            await produce(broker, "t", 0, b"tiny")
            await asyncio.sleep(0.05)
            assert not poll.done()
            await produce(broker, "t", 0, b"x" * 400)
            (outcome,) = await asyncio.wait_for(poll, 5)
            assert values_of(outcome.records) == [b"tiny", b"x" * 400]

    run(body())


def test_a_long_poll_with_nothing_new_returns_after_max_wait(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            (outcome,) = await broker.fetch([FetchItem("t", 0, 0)], max_wait_ms=100)
            assert 0.09 <= loop.time() - started < 2
            assert outcome.records == b"" and outcome.error is None

    run(body())


def test_a_read_committed_long_poll_returns_on_commit_not_on_the_transactional_append(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, epoch = broker.init_producer_id("tx")
            broker.add_partitions_to_txn("tx", pid, epoch, [("t", 0)])
            poll = asyncio.ensure_future(
                broker.fetch([FetchItem("t", 0, 0)], max_wait_ms=LONG_WAIT_MS, isolation=Isolation.READ_COMMITTED)
            )
            await asyncio.sleep(0.02)
            await produce(broker, "t", 0, b"pending", producer_id=pid, producer_epoch=epoch,
                          base_sequence=0, transactional=True)
            await asyncio.sleep(0.05)
            assert not poll.done()
            broker.end_txn("tx", pid, epoch, True)
            (outcome,) = await asyncio.wait_for(poll, 5)
            assert values_of(outcome.records) == [b"pending"]

    run(body())


def test_closing_the_broker_ends_a_long_poll_and_refuses_new_requests(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        broker = await open_broker(tmp_path, clock)
        broker.create_topic("t", 1)
        poll = asyncio.ensure_future(broker.fetch([FetchItem("t", 0, 0)], max_wait_ms=LONG_WAIT_MS))
        await asyncio.sleep(0.02)
        closing = asyncio.ensure_future(broker.close())
        (outcome,) = await asyncio.wait_for(poll, 5)
        assert outcome.records == b""
        await closing
        with pytest.raises(ShuttingDownError):
            await produce(broker, "t", 0, b"late")

    run(body())


def test_a_fetch_for_a_group_refuses_partitions_not_assigned_to_the_member(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            broker.create_topic("u", 1)
            joined = broker.group_heartbeat("g", "", 0, topics=["t"])
            group = ("g", joined.member_id, joined.member_epoch)
            (outcome,) = await broker.fetch([FetchItem("t", 0, 0)], group=group)
            assert outcome.error is None
            with pytest.raises(PartitionNotAssignedError):
                await broker.fetch([FetchItem("t", 0, 0), FetchItem("u", 0, 0)], group=group)

    run(body())


def test_subscribe_yields_what_is_there_then_what_is_appended(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            await produce(broker, "t", 0, b"old")
            start = broker.resolve_start("t", 0, StartPosition.EARLIEST)
            stream = broker.subscribe("t", 0, start)
            first = await asyncio.wait_for(stream.__anext__(), 5)
            assert values_of(first.records) == [b"old"]
            pending = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0.02)
            await produce(broker, "t", 0, b"new")
            second = await asyncio.wait_for(pending, 5)
            assert values_of(second.records) == [b"new"]
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator
            assert broker.subscriptions == 0

    run(body())


def test_subscribe_messages_start_small_and_double_up_to_max_bytes(tmp_path: Path, clock: ManualClock) -> None:
    """The first message holds up to SUBSCRIBE_FIRST_BYTES (256 KiB), each next one twice the
    one before, until max_bytes: whole batches of 64 KiB arrive 4, 8, 16, then 16 at a time."""
    batch_values = [bytes(1000)] * 64  # ~64 KiB per batch

    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            for _ in range(48):
                await produce(broker, "t", 0, *batch_values)
            stream = broker.subscribe("t", 0, 0, max_bytes=1 << 20)
            counts = []
            for _ in range(4):
                outcome = await asyncio.wait_for(stream.__anext__(), 5)
                counts.append(len(decode_records(outcome.records)) // len(batch_values))
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator
            assert counts == [4, 8, 16, 16]  # batches of ~63 KiB in 256 KiB, 512 KiB, 1 MiB

    run(body())


def test_list_offsets_earliest_latest_and_by_time(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            base = clock.now_ms()
            await produce(broker, "t", 0, b"a", b"b", b"c", timestamps=[base, base + 10, base + 20])
            listed = broker.list_offsets([
                ListOffsetsItem("t", 0, OffsetSpec.EARLIEST),
                ListOffsetsItem("t", 0, OffsetSpec.LATEST),
                ListOffsetsItem("t", 0, OffsetSpec.TIMESTAMP, base + 5),
                ListOffsetsItem("t", 0, OffsetSpec.TIMESTAMP, base + 50),
                ListOffsetsItem("t", 7, OffsetSpec.LATEST),
            ])
            assert [item.offset for item in listed[:4]] == [0, 3, 1, 3]
            assert isinstance(listed[4].error, UnknownPartitionError)

    run(body())


def test_records_survive_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            await produce(broker, "t", 0, b"kept")
        async with opened(tmp_path, clock) as broker:
            assert [r.value for r in await committed_records(broker, "t", 0)] == [b"kept"]

    run(body())


def test_internal_topics_are_hidden_and_cannot_be_deleted(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            assert broker.list_topics() == [("t", 1, False)]
            internal = {name for name, _, flag in broker.list_topics(include_internal=True) if flag}
            assert internal == {"__consumer_offsets", "__transaction_state", "__share_group_state"}
            with pytest.raises(InvalidRequestError):
                broker.delete_topic("__consumer_offsets")
            with pytest.raises(UnknownTopicError):
                broker.delete_topic("__nothing")
            assert broker.data_dir.has_topic("__consumer_offsets")

    run(body())
