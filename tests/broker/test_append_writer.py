"""Large appends on the broker's writer thread (``write_off_loop_bytes``): written off the loop,
answered in order, and a partition with an append on the thread is waited for, so sequence
checks and duplicates see every append before them."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from logstore.broker import Acks, Broker, BrokerConfig, ProduceItem
from logstore.records import decode_records, encode_batch
from logstore.storage import ManualClock, PartitionLog

from .helpers import opened, run

#: Every request of these tests goes to the writer thread.
OFF_LOOP = BrokerConfig(offsets_topic_partitions=1, write_off_loop_bytes=1)


def batch(pid: int, seq: int, count: int = 2) -> bytes:
    return encode_batch([f"v{seq + i}".encode() for i in range(count)],
                        producer_id=pid, producer_epoch=0, base_sequence=seq)


def values(broker: Broker) -> list[bytes | None]:
    return [r.value for r in decode_records(broker.data_dir.log("t", 0).read(0, 1 << 30).data)]


def appending_threads(broker: Broker) -> list[str]:
    """The names of the threads that append to t/0 from now on (its append listener)."""
    names: list[str] = []

    def listener(_: PartitionLog) -> None:
        names.append(threading.current_thread().name)

    broker.data_dir.log("t", 0).add_listener(listener)
    return names


def test_a_large_request_is_written_on_the_writer_thread_and_a_small_one_on_the_loop(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        config = BrokerConfig(offsets_topic_partitions=1, write_off_loop_bytes=64 << 10)
        async with opened(tmp_path, clock, config) as broker:
            broker.create_topic("t", 1)
            threads = appending_threads(broker)
            (large,) = await broker.produce([ProduceItem("t", 0, encode_batch([b"x" * (64 << 10)]))])
            (small,) = await broker.produce([ProduceItem("t", 0, encode_batch([b"y"]))])
            assert (large.base_offset, small.base_offset) == (0, 1)
            assert threads[0].startswith("logstore-writer")
            assert threads[1] == threading.current_thread().name

    run(body())


def test_requests_for_one_partition_sent_at_once_are_appended_in_order(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock, OFF_LOOP) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            outcomes = await asyncio.gather(
                *(broker.produce([ProduceItem("t", 0, batch(pid, seq))]) for seq in range(0, 10, 2))
            )
            assert [(o.error, o.base_offset) for (o,) in outcomes] == [(None, n) for n in range(0, 10, 2)]
            assert values(broker) == [f"v{n}".encode() for n in range(10)]

    run(body())


def test_a_retry_that_arrives_while_the_original_is_written_is_answered_as_a_duplicate(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock, OFF_LOOP) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            data = batch(pid, 0)
            original = asyncio.ensure_future(broker.produce([ProduceItem("t", 0, data)]))
            await asyncio.sleep(0)  # the original's write is on the thread now
            assert broker._append_writer.busy([broker.data_dir.log("t", 0)]) is not None
            (retry,) = await broker.produce([ProduceItem("t", 0, data)])
            (first,) = await original
            assert not first.duplicate and retry.duplicate
            assert (retry.base_offset, retry.last_offset) == (first.base_offset, first.last_offset) == (0, 1)
            assert values(broker) == [b"v0", b"v1"]

    run(body())


def test_a_cancelled_request_whose_write_went_ahead_is_still_in_the_producer_state(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock, OFF_LOOP) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            cancelled = asyncio.ensure_future(broker.produce([ProduceItem("t", 0, batch(pid, 0))]))
            await asyncio.sleep(0)
            cancelled.cancel()
            (retry,) = await broker.produce([ProduceItem("t", 0, batch(pid, 0))])
            (following,) = await broker.produce([ProduceItem("t", 0, batch(pid, 2))])
            assert retry.duplicate and (retry.base_offset, following.base_offset) == (0, 2)
            assert values(broker) == [b"v0", b"v1", b"v2", b"v3"]

    run(body())


def test_acks_zero_waits_for_the_append_on_the_thread(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock, OFF_LOOP) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            first = asyncio.ensure_future(broker.produce([ProduceItem("t", 0, batch(pid, 0))]))
            await asyncio.sleep(0)
            await broker.produce([ProduceItem("t", 0, batch(pid, 2))], Acks.NONE)
            await first
            for _ in range(100):  # the acks=0 append runs once the partition is free
                if broker.data_dir.log("t", 0).log_end_offset == 4:
                    break
                await asyncio.sleep(0.001)
            assert values(broker) == [b"v0", b"v1", b"v2", b"v3"]

    run(body())


def test_closing_the_broker_finishes_the_append_on_the_thread(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock, OFF_LOOP) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            pending = asyncio.ensure_future(broker.produce([ProduceItem("t", 0, batch(pid, 0))]))
            await asyncio.sleep(0)
            await broker.close()
            (outcome,) = await pending
            assert outcome.error is None and outcome.base_offset == 0
        async with opened(tmp_path, clock, OFF_LOOP) as reopened:
            (retry,) = await reopened.produce([ProduceItem("t", 0, batch(pid, 0))])
            assert retry.duplicate  # the producer state snapshot taken at close has the append

    run(body())
