"""The record accumulator: batching by size and linger, sticky partitions, lazy futures."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from logstore.client.accumulator import Accumulator
from logstore.client.batch import ProducerBatch
from logstore.client.hold import FIRST_ROUND_TRIP_S
from logstore.client.models import RecordMetadata
from logstore.client.partitioner import Partitioner, partition_for_key
from logstore.errors import UnknownPartitionError, UnknownTopicError
from logstore.records import RECORD_OVERHEAD, decode_records, validate_batch


def make(partitions: int = 1, *, batch_bytes: int = 1 << 20, linger_ms: float = 10_000,
         buffer_bytes: int = 1 << 30) -> Accumulator:
    return Accumulator(batch_bytes=batch_bytes, linger_ms=linger_ms, buffer_bytes=buffer_bytes,
                       describe=lambda topic: partitions, partitioner=Partitioner(seed=1))


def test_batch_closes_when_it_reaches_batch_bytes() -> None:
    record = 100 + RECORD_OVERHEAD
    accumulator = make(batch_bytes=10 * record)
    for _ in range(9):
        accumulator.append("t", b"x" * 100, partition=0)
    assert not accumulator.ready
    accumulator.append("t", b"x" * 100, partition=0)
    assert [batch.record_count for batch in accumulator.ready] == [10]
    accumulator.append("t", b"x" * 100, partition=0)  # opens the next batch
    assert len(accumulator.opened) == 1


def test_drain_takes_no_open_batch_while_a_request_is_in_flight_and_on_time() -> None:
    accumulator = make(linger_ms=10_000)
    accumulator.request_sent()
    accumulator.append("t", b"v", partition=0)
    batches, wait = accumulator.drain(1 << 20)
    assert batches == []
    # the sender wakes when the request would be late (twice the first assumed round trip)
    assert wait is not None and 0.0 < wait <= 2 * FIRST_ROUND_TRIP_S


def test_a_late_request_lets_the_open_batches_go_as_a_second_one() -> None:
    accumulator = make(linger_ms=10_000)
    accumulator.request_sent()
    accumulator.append("t", b"v", partition=0)
    time.sleep(2 * FIRST_ROUND_TRIP_S + 0.002)
    assert [batch.record_count for batch in accumulator.drain(1 << 20)[0]] == [1]
    accumulator.request_sent()  # two in flight: the next batch waits for an answer or linger
    accumulator.append("t", b"w", partition=0)
    time.sleep(2 * FIRST_ROUND_TRIP_S + 0.002)
    batches, wait = accumulator.drain(1 << 20)
    assert batches == []
    assert wait is not None and 9.0 < wait <= 10.0


def test_drain_takes_an_open_batch_at_once_when_nothing_is_in_flight() -> None:
    accumulator = make(linger_ms=10_000)
    accumulator.append("t", b"v", partition=0)
    batches, wait = accumulator.drain(1 << 20)
    assert [batch.record_count for batch in batches] == [1]
    assert wait is None


def test_the_last_answer_releases_the_open_batches() -> None:
    accumulator = make(linger_ms=10_000)
    accumulator.request_sent()
    accumulator.append("t", b"v", partition=0)
    assert accumulator.drain(1 << 20)[0] == []
    accumulator.idle = True  # the sender sleeps
    accumulator.wakeup.clear()
    accumulator.request_done()
    assert accumulator.wakeup.is_set()
    assert [batch.record_count for batch in accumulator.drain(1 << 20)[0]] == [1]


def test_linger_when_idle_waits_even_with_nothing_in_flight() -> None:
    accumulator = Accumulator(batch_bytes=1 << 20, linger_ms=10_000, buffer_bytes=1 << 30,
                              describe=lambda topic: 1, linger_when_idle=True)
    accumulator.append("t", b"v", partition=0)
    assert accumulator.drain(1 << 20)[0] == []


def test_drain_takes_a_batch_once_it_lingered() -> None:
    accumulator = make(linger_ms=20)
    accumulator.request_sent()
    accumulator.append("t", b"v", partition=0)
    time.sleep(0.03)
    batches, wait = accumulator.drain(1 << 20)
    assert [batch.record_count for batch in batches] == [1]
    assert wait is None


def test_forced_drain_takes_every_open_batch() -> None:
    accumulator = make(partitions=3)
    for partition in range(3):
        accumulator.append("t", b"v", partition=partition)
    batches, _ = accumulator.drain(1 << 20, force=True)
    assert sorted(batch.partition for batch in batches) == [0, 1, 2]


def test_drain_stops_at_max_bytes_but_takes_at_least_one() -> None:
    record = 1000 + RECORD_OVERHEAD
    accumulator = make(batch_bytes=record)  # every record closes its batch
    for _ in range(5):
        accumulator.append("t", b"x" * 1000, partition=0)
    first, _ = accumulator.drain(2 * record)
    assert len(first) == 2
    single, _ = accumulator.drain(1)
    assert len(single) == 1


def test_keyless_records_stick_to_one_partition_until_its_batch_closes() -> None:
    record = 10 + RECORD_OVERHEAD
    accumulator = make(partitions=4, batch_bytes=3 * record)
    partitions = [accumulator.append("t", b"x" * 10)._batch.partition for _ in range(9)]
    assert partitions[0:3] == [partitions[0]] * 3
    assert partitions[3:6] == [partitions[3]] * 3
    assert partitions[3] != partitions[0]
    assert partitions[6] != partitions[3]


def test_keyed_records_go_to_the_murmur2_partition() -> None:
    accumulator = make(partitions=5)
    for key in (b"alice", b"bob", b"carol", b""):
        future = accumulator.append("t", b"v", key=key)
        assert future._batch.partition == partition_for_key(key, 5)


def test_futures_resolve_from_the_batch_base_offset() -> None:
    accumulator = make()
    futures = [accumulator.append("t", b"v%d" % i, partition=0) for i in range(3)]
    assert not futures[0].done()
    futures[0]._batch.complete(100)
    assert [f.result(0) for f in futures] == [RecordMetadata(0, 100), RecordMetadata(0, 101),
                                              RecordMetadata(0, 102)]


def test_a_failed_batch_fails_every_future() -> None:
    accumulator = make()
    futures = [accumulator.append("t", b"v", partition=0) for _ in range(2)]
    futures[0]._batch.fail(UnknownTopicError("t"))
    for future in futures:
        assert isinstance(future.exception(0), UnknownTopicError)
        with pytest.raises(UnknownTopicError):
            future.result(0)


def test_result_times_out_while_pending() -> None:
    future = make().append("t", b"v", partition=0)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.01)


def test_done_callbacks_run_once_the_batch_completes() -> None:
    future = make().append("t", b"v", partition=0)
    seen: list[object] = []
    future.add_done_callback(lambda f: seen.append(f.result()))
    future._batch.complete(7)
    future.add_done_callback(lambda f: seen.append("late"))  # already done: runs at once
    assert seen == [RecordMetadata(0, 7), "late"]


def test_encode_keeps_keys_timestamps_headers_and_nulls_in_place() -> None:
    accumulator = make()
    accumulator.append("t", b"plain", partition=0)
    accumulator.append("t", None, key=b"k", partition=0)
    accumulator.append("t", b"h", headers=[("a", b"1")], timestamp=1234, partition=0)
    accumulator.append("t", "text", key="key", partition=0)
    batch, = accumulator.drain(1 << 20, force=True)[0]
    encoded = batch.encode("none")
    validate_batch(encoded)
    records = decode_records(encoded)
    assert [(r.key, r.value, r.headers) for r in records] == [
        (None, b"plain", ()), (b"k", None, ()), (None, b"h", (("a", b"1"),)),
        (b"key", b"text", ()),
    ]
    assert records[2].timestamp == 1234
    assert records[0].timestamp == records[1].timestamp == batch.timestamp


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_encode_mixed_lengths_with_a_codec(codec: str) -> None:
    accumulator = make()
    values = [b"x" * n for n in (0, 1, 50, 3)]
    for value in values:
        accumulator.append("t", value, partition=0)
    batch, = accumulator.drain(1 << 20, force=True)[0]
    assert [r.value for r in decode_records(batch.encode(codec))] == values


def test_an_unknown_partition_is_refused() -> None:
    accumulator = make(partitions=2)
    with pytest.raises(UnknownPartitionError):
        accumulator.append("t", b"v", partition=2)
    with pytest.raises(UnknownPartitionError):
        accumulator.append("t", b"v", partition=-1)


def test_values_must_be_bytes_str_or_none() -> None:
    with pytest.raises(TypeError):
        make().append("t", 12, partition=0)


def test_enqueue_sends_the_open_batch_of_the_partition_first() -> None:
    accumulator = make()
    accumulator.learn("t")
    accumulator.append("t", b"first", partition=0)
    encoded = ProducerBatch.of_encoded("t", 0, b"...", 1)
    accumulator.enqueue([encoded])
    batches, _ = accumulator.drain(1 << 20)
    assert batches[1] is encoded
    assert batches[0].record_count == 1 and batches[0] is not encoded


def test_append_blocks_while_too_much_is_ready() -> None:
    record = 100 + RECORD_OVERHEAD
    accumulator = make(batch_bytes=record, buffer_bytes=2 * record)
    accumulator.append("t", b"x" * 100, partition=0)
    accumulator.append("t", b"x" * 100, partition=0)
    done = threading.Event()

    def third() -> None:
        accumulator.append("t", b"x" * 100, partition=0)
        done.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not done.wait(0.2)
    accumulator.drain(1 << 20)
    assert done.wait(5)
    thread.join()


def test_bad_headers_are_refused_at_send_and_leave_the_batch_alone() -> None:
    accumulator = make()
    accumulator.append("t", b"ok", partition=0)
    with pytest.raises((TypeError, ValueError, AttributeError)):
        accumulator.append("t", b"bad", headers=[("k", 12)], partition=0)
    batch, = accumulator.drain(1 << 20, force=True)[0]
    assert [r.value for r in decode_records(batch.encode("none"))] == [b"ok"]


def test_keyless_records_join_a_batch_keyed_records_opened_on_the_sticky_partition() -> None:
    accumulator = make(partitions=3)
    sticky = accumulator.learn("t").sticky
    key = next(k for k in (b"k%d" % i for i in range(100)) if partition_for_key(k, 3) == sticky)
    accumulator.append("t", b"keyed", key=key)
    accumulator.append("t", b"plain")
    (batch,) = accumulator.opened
    assert (batch.partition, batch.record_count) == (sticky, 2)


def test_keyless_records_follow_the_sticky_partition_that_send_batch_moved() -> None:
    accumulator = make(partitions=3)
    state = accumulator.learn("t")
    first = state.sticky
    accumulator.append("t", b"a")
    assert accumulator.sticky_partitions("t", 1) == [first]  # the open batch stays on first
    accumulator.append("t", b"b")
    partitions = sorted(batch.partition for batch in accumulator.opened)
    assert partitions == sorted({first, state.sticky}) and state.sticky != first


def test_a_future_the_caller_keeps_is_never_reused() -> None:
    accumulator = make()
    kept = [accumulator.append("t", b"v") for _ in range(5)]
    assert len({id(future) for future in kept}) == 5
    (batch,) = accumulator.opened
    batch.complete(100)
    assert [future.result().offset for future in kept] == [100, 101, 102, 103, 104]


def test_a_future_the_caller_dropped_is_handed_out_again() -> None:
    accumulator = make()
    accumulator.append("t", b"opens the batch")
    accumulator.append("t", b"v")
    dropped = id(accumulator.spare)
    future = accumulator.append("t", b"w")
    assert id(future) == dropped and future._index == 2
    assert accumulator.append("t", b"x") is not future  # held now: a new one


def test_records_for_a_given_partition_join_its_open_batch_and_an_unknown_one_is_refused() -> None:
    accumulator = make(partitions=2)
    first = accumulator.append("t", b"a", partition=1)
    second = accumulator.append("t", b"b", partition=1)
    (batch,) = accumulator.opened
    assert (batch.partition, first._index, second._index) == (1, 0, 1)
    with pytest.raises(UnknownPartitionError):
        accumulator.append("t", b"c", partition=2)
    with pytest.raises(UnknownPartitionError):
        accumulator.append("t", b"c", partition=-1)


def test_threads_sending_while_the_sender_drains_lose_and_repeat_nothing() -> None:
    accumulator = make(partitions=3, batch_bytes=40 * (8 + RECORD_OVERHEAD))
    accumulator.learn("t")
    senders, per_sender = 4, 3000
    kept: list[tuple[bytes, object]] = []
    drained: list[ProducerBatch] = []
    done = threading.Event()

    def send(n: int) -> None:
        for i in range(per_sender):
            value = b"%02d-%05d" % (n, i)
            future = accumulator.append("t", value, partition=None if i % 3 else i % 2)
            if i % 7 == 0:
                kept.append((value, future))  # list.append is atomic

    def drain() -> None:
        while not done.is_set():
            drained.extend(accumulator.drain(1 << 20, force=True)[0])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch every few bytecodes: the races happen
    try:
        drainer = threading.Thread(target=drain)
        drainer.start()
        threads = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        drainer.join()
    finally:
        sys.setswitchinterval(interval)
    drained.extend(accumulator.drain(1 << 20, force=True)[0])
    values = [value for batch in drained for value in batch.values]
    assert sorted(values) == sorted(b"%02d-%05d" % (n, i)
                                    for n in range(senders) for i in range(per_sender))
    for value, future in kept:
        assert future._batch.values[future._index] == value  # type: ignore[attr-defined]
    assert accumulator.gate == [None]


def test_the_sender_waits_for_a_fast_path_append_to_give_the_gate_back() -> None:
    accumulator = make()
    accumulator.append("t", b"v")
    accumulator.gate.pop()  # as a fast-path append in progress holds it
    drained: list[list[ProducerBatch]] = []
    drainer = threading.Thread(target=lambda: drained.append(accumulator.drain(1 << 20, True)[0]))
    drainer.start()
    drainer.join(0.05)
    assert drainer.is_alive() and not drained
    accumulator.gate.append(None)
    drainer.join(5)
    assert [batch.record_count for batch in drained[0]] == [1]


def test_a_send_while_the_batches_are_held_waits_on_the_lock() -> None:
    accumulator = make()
    accumulator.append("t", b"v")
    futures: list[object] = []
    with accumulator.exclusive:
        sender = threading.Thread(target=lambda: futures.append(accumulator.append("t", b"w")))
        sender.start()
        sender.join(0.05)
        assert sender.is_alive() and not futures
    sender.join(5)
    (batch,) = accumulator.opened
    assert batch.values == [b"v", b"w"] and accumulator.gate == [None]
