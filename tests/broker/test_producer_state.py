"""Idempotent producers: retries answered with the original offsets, sequences and epochs checked,
across clean and unclean restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logstore.broker import Broker, ProduceItem
from logstore.broker.producer_state import BATCH_CACHE, SNAPSHOT_FILE
from logstore.client.config import MAX_UNANSWERED_BATCHES, ProducerConfig
from logstore.errors import OutOfOrderSequenceError, ProducerFencedError
from logstore.records import decode_records, encode_batch
from logstore.storage import ManualClock

from .helpers import LIGHT, crash, opened, produce, run


def batch(pid: int, seq: int, count: int = 1, epoch: int = 0, tag: str = "v") -> bytes:
    return encode_batch(
        [f"{tag}{seq + i}".encode() for i in range(count)],
        producer_id=pid, producer_epoch=epoch, base_sequence=seq,
    )


async def send(broker: Broker, data: bytes, topic: str = "t", partition: int = 0):  # type: ignore[no-untyped-def]
    (outcome,) = await broker.produce([ProduceItem(topic, partition, data)])
    if outcome.error is not None:
        raise outcome.error
    return outcome


def values(broker: Broker, topic: str = "t", partition: int = 0) -> list[bytes | None]:
    partition_log = broker.data_dir.log(topic, partition)
    return [r.value for r in decode_records(partition_log.read(0, 1 << 30).data)]


def test_a_retried_batch_gets_the_original_offsets_and_is_not_appended_again(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, epoch = broker.init_producer_id()
            await produce(broker, "t", 0, b"before")
            first = await send(broker, batch(pid, 0, 3, epoch))
            retry = await send(broker, batch(pid, 0, 3, epoch))
            assert (retry.base_offset, retry.last_offset) == (first.base_offset, first.last_offset) == (1, 3)
            assert retry.duplicate and not first.duplicate
            assert values(broker) == [b"before", b"v0", b"v1", b"v2"]

    run(body())


def test_a_retried_request_of_several_batches_gets_the_whole_original_range(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            request = batch(pid, 0, 2) + batch(pid, 2, 3)
            first = await send(broker, request)
            retry = await send(broker, request)
            assert (first.base_offset, first.last_offset) == (retry.base_offset, retry.last_offset) == (0, 4)
            assert broker.data_dir.log("t", 0).log_end_offset == 5

    run(body())


@pytest.mark.parametrize("stop", ["clean", "crash"])
def test_a_retry_after_a_restart_is_still_recognised(tmp_path: Path, clock: ManualClock, stop: str) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            pid, _ = broker.init_producer_id()
            first = await send(broker, batch(pid, 0, 2))
            second = await send(broker, batch(pid, 2, 2))
            await send(broker, batch(pid, 0, 1), partition=1)
            if stop == "crash":
                crash(broker)
        assert (tmp_path / "t-0" / SNAPSHOT_FILE).exists() == (stop == "clean")
        async with opened(tmp_path, clock) as broker:
            for original, data in ((first, batch(pid, 0, 2)), (second, batch(pid, 2, 2))):
                retry = await send(broker, data)
                assert retry.duplicate
                assert (retry.base_offset, retry.last_offset) == (original.base_offset, original.last_offset)
            assert values(broker) == [b"v0", b"v1", b"v2", b"v3"]
            with pytest.raises(OutOfOrderSequenceError):  # the sequence is remembered too
                await send(broker, batch(pid, 5))
            assert (await send(broker, batch(pid, 4))).base_offset == 4
            assert (await send(broker, batch(pid, 0, 1), partition=1)).duplicate

    run(body())


def test_a_retry_after_a_clean_restart_then_a_crash_is_still_recognised(tmp_path: Path, clock: ManualClock) -> None:
    """The snapshot of the clean close must not be trusted after the next, unclean, stop."""
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            await send(broker, batch(pid, 0))
        async with opened(tmp_path, clock) as broker:
            await send(broker, batch(pid, 1))
            await produce(broker, "t", 0, b"plain")
            await send(broker, batch(pid, 2))
            crash(broker)
        async with opened(tmp_path, clock) as broker:
            for seq, offset in ((0, 0), (1, 1), (2, 3)):
                retry = await send(broker, batch(pid, seq))
                assert retry.duplicate and retry.base_offset == offset
            assert broker.data_dir.log("t", 0).log_end_offset == 4

    run(body())


def test_a_batch_lost_in_a_torn_tail_is_accepted_again_on_retry(tmp_path: Path, clock: ManualClock) -> None:
    """A crash cut the last batch (never flushed); the producer's retry of it is new, not a
    duplicate, and the one before it is still recognised."""
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            await send(broker, batch(pid, 0))
            await send(broker, batch(pid, 1))
            crash(broker)
        (segment,) = (tmp_path / "t-0").glob("*.log")
        with open(segment, "r+b") as file:
            file.truncate(segment.stat().st_size - 3)
        async with opened(tmp_path, clock) as broker:
            assert broker.data_dir.log("t", 0).log_end_offset == 1
            assert (await send(broker, batch(pid, 0))).duplicate
            retry = await send(broker, batch(pid, 1))
            assert not retry.duplicate and retry.base_offset == 1
            assert values(broker) == [b"v0", b"v1"]

    run(body())


def test_a_gap_in_sequences_is_refused_and_nothing_is_appended(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            await send(broker, batch(pid, 0, 2))
            with pytest.raises(OutOfOrderSequenceError) as caught:
                await send(broker, batch(pid, 3))
            assert (caught.value.expected, caught.value.received) == (2, 3)
            with pytest.raises(OutOfOrderSequenceError):  # a batch inside the previous one, not equal
                await send(broker, batch(pid, 1))
            assert broker.data_dir.log("t", 0).log_end_offset == 2
            assert (await send(broker, batch(pid, 2))).base_offset == 2

    run(body())


def test_a_request_with_a_gap_between_its_own_batches_is_refused_whole(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            with pytest.raises(OutOfOrderSequenceError):
                await send(broker, batch(pid, 0, 2) + batch(pid, 3, 1))
            assert broker.data_dir.log("t", 0).log_end_offset == 0

    run(body())


def test_a_request_mixing_a_retry_and_new_batches_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            await send(broker, batch(pid, 0))
            with pytest.raises(OutOfOrderSequenceError):
                await send(broker, batch(pid, 0) + batch(pid, 1))
            assert broker.data_dir.log("t", 0).log_end_offset == 1

    run(body())


def test_an_older_epoch_is_fenced(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            await send(broker, batch(pid, 0, epoch=0))
            await send(broker, batch(pid, 0, epoch=1))
            with pytest.raises(ProducerFencedError) as caught:
                await send(broker, batch(pid, 1, epoch=0))
            assert caught.value.current_epoch == 1
            with pytest.raises(ProducerFencedError):  # not even a retry of its own batch
                await send(broker, batch(pid, 0, epoch=0))
            assert broker.data_dir.log("t", 0).log_end_offset == 2

    run(body())


def test_a_new_epoch_restarts_the_sequence_at_zero(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            await send(broker, batch(pid, 0, 3, epoch=0))
            with pytest.raises(OutOfOrderSequenceError):
                await send(broker, batch(pid, 3, epoch=1))
            assert (await send(broker, batch(pid, 0, epoch=1))).base_offset == 3
            assert (await send(broker, batch(pid, 1, epoch=1))).base_offset == 4

    run(body())


def test_only_the_last_batch_cache_batches_are_remembered(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            for seq in range(BATCH_CACHE + 1):
                await send(broker, batch(pid, seq))
            with pytest.raises(OutOfOrderSequenceError):  # the oldest is forgotten: not a retry
                await send(broker, batch(pid, 0))
            for seq in range(1, BATCH_CACHE + 1):
                retry = await send(broker, batch(pid, seq))
                assert retry.duplicate and retry.base_offset == seq
            assert broker.data_dir.log("t", 0).log_end_offset == BATCH_CACHE + 1

    run(body())


def test_the_broker_remembers_every_batch_a_producer_may_leave_unanswered() -> None:
    # a retry of any unanswered batch must be recognized; at the defaults the whole window of
    # max_in_flight requests may hold batches of one partition (send_batch of a large array)
    defaults = ProducerConfig()
    assert BATCH_CACHE >= MAX_UNANSWERED_BATCHES
    assert MAX_UNANSWERED_BATCHES >= defaults.max_in_flight * (
        defaults.max_request_bytes // defaults.batch_bytes)


def test_producers_do_not_interfere(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            a, _ = broker.init_producer_id()
            b, _ = broker.init_producer_id()
            assert a != b
            await send(broker, batch(a, 0, tag="a"))
            await send(broker, batch(b, 0, tag="b"))
            await send(broker, batch(a, 1, tag="a"))
            assert (await send(broker, batch(b, 0, tag="b"))).base_offset == 1
            assert values(broker) == [b"a0", b"b0", b"a1"]

    run(body())


def test_sequences_wrap_around(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, _ = broker.init_producer_id()
            top = 0x7FFFFFFF
            await send(broker, batch(pid, 0))
            # a producer may not jump, so build up the state as the log would have it
            state = broker.producer_state(broker.data_dir.log("t", 0))
            state.producers[pid].batches[-1].last_sequence = top - 2
            await send(broker, batch(pid, top - 1, 2))  # top-1, top
            assert (await send(broker, batch(pid, 0))).base_offset == 3
            assert (await send(broker, batch(pid, 0))).duplicate

    run(body())


def test_producer_ids_are_never_handed_out_twice_across_restarts(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        seen: set[int] = set()
        for stop in ("clean", "crash", "clean"):
            async with opened(tmp_path, clock) as broker:
                for _ in range(3):
                    pid, epoch = broker.init_producer_id()
                    assert pid not in seen and epoch == 0
                    seen.add(pid)
                if stop == "crash":
                    crash(broker)

    run(body())


# -- rebuilt state equals live state -------------------------------------------------------------

ops = st.lists(
    st.tuples(st.integers(0, 2), st.integers(1, 3), st.booleans()),  # producer, records, retry
    min_size=1, max_size=25,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops, stop=st.sampled_from(["clean", "crash"]))
def test_state_rebuilt_after_a_restart_equals_the_live_state(tmp_path_factory, script, stop) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("rebuild")
    clock = ManualClock()

    def dump(broker: Broker) -> dict:  # type: ignore[type-arg]
        state = broker.producer_state(broker.data_dir.log("t", 0))
        return {
            pid: (e.epoch, [(b.first_sequence, b.last_sequence, b.base_offset, b.last_offset) for b in e.batches])
            for pid, e in state.producers.items()
        }

    async def body() -> None:
        async with opened(path, clock, LIGHT) as broker:
            broker.create_topic("t", 1)
            pids = [broker.init_producer_id()[0] for _ in range(3)]
            sequences = [0, 0, 0]
            last: list[bytes | None] = [None, None, None]
            for who, count, retry in script:
                if retry and last[who] is not None:
                    assert (await send(broker, last[who])).duplicate  # type: ignore[arg-type]
                    continue
                last[who] = batch(pids[who], sequences[who], count)
                await send(broker, last[who])  # type: ignore[arg-type]
                sequences[who] += count
            live = dump(broker)
            if stop == "crash":
                crash(broker)
        async with opened(path, clock, LIGHT) as broker:
            assert dump(broker) == live

    run(body())
