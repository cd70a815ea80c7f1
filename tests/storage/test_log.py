"""log.py: a partition's run of segments — append, read, time lookup, truncation, log start,
durability (flush policies, group commit, clean shutdown) and failed writes."""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time

import numpy as np
import pytest

from logstore.errors import (
    BatchTooLargeError,
    CorruptBatchError,
    DiskFullError,
    LogClosedError,
    OffsetOutOfRangeError,
)
from logstore.records import decode_records, encode_batch, iter_headers
from logstore.storage import LogConfig
from logstore.storage import segment as segment_module
from logstore.storage.log import CHECKPOINT_FILE, CLEAN_SHUTDOWN_FILE
from logstore.storage.segment import file_name

from ..conftest import TINY
from .helpers import T0, batch, fill, read_all, value_batch


def expected(count: int, records: int = 1, size: int = 100) -> list[tuple[int, bytes]]:
    return [
        (i * records + r, (b"%d-%d:" % (i, r)).ljust(size, b"."))
        for i in range(count)
        for r in range(records)
    ]


# -- appending --------------------------------------------------------------------------------------


def test_append_assigns_consecutive_offsets(open_log):
    partition_log = open_log()
    first = partition_log.append(batch(b"a", b"b", b"c"))
    second = partition_log.append(batch(b"d"))
    assert (first.base_offset, first.last_offset, first.log_end_offset) == (0, 2, 3)
    assert (second.base_offset, second.last_offset, second.log_end_offset) == (3, 3, 4)
    assert partition_log.log_end_offset == 4
    assert read_all(partition_log) == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]


def test_append_of_several_batches_in_one_payload(open_log):
    partition_log = open_log()
    result = partition_log.append(batch(b"a", b"b") + batch(b"c", timestamp=T0 + 5))
    assert (result.base_offset, result.last_offset, result.batches) == (0, 2, 2)
    assert result.max_timestamp == T0 + 5
    headers = list(iter_headers(partition_log.read(0).data))
    assert [h.base_offset for h in headers] == [0, 2]


def test_many_batches_in_one_payload_overflow_a_small_index_safely(open_log):
    config = LogConfig(segment_bytes=4096, index_interval_bytes=0, segment_index_bytes=64)
    partition_log = open_log(config)
    payload = b"".join(value_batch(i, size=10) for i in range(30))
    assert partition_log.append(payload).log_end_offset == 30
    assert read_all(partition_log) == expected(30, size=10)
    partition_log.append(value_batch(30, size=10))  # the full index rolls the segment
    assert len(partition_log.segments) == 2
    partition_log.close()
    assert read_all(open_log(config)) == expected(31, size=10)


def test_a_corrupt_payload_appends_nothing(open_log):
    partition_log = open_log()
    bad = bytearray(batch(b"x"))
    bad[-1] ^= 1
    with pytest.raises(CorruptBatchError):
        partition_log.append(batch(b"ok") + bytes(bad))
    assert partition_log.log_end_offset == 0
    assert partition_log.size_bytes == 0


def test_a_batch_over_max_batch_bytes_is_rejected(open_log):
    partition_log = open_log(LogConfig(max_batch_bytes=1024))
    with pytest.raises(BatchTooLargeError) as caught:
        partition_log.append(value_batch(0, size=2000))
    assert caught.value.limit == 1024 and caught.value.size > 2000
    assert partition_log.log_end_offset == 0


def test_the_active_segment_rolls_when_full(open_log, log_dir):
    partition_log = open_log()
    fill(partition_log, 60)
    segments = partition_log.segments
    assert len(segments) >= 3
    assert all(s.size <= TINY.segment_bytes for s in segments)
    assert [s.base_offset for s in segments[1:]] == [s.next_offset for s in segments[:-1]]
    assert not any(s.writable for s in segments[:-1]) and segments[-1].writable
    names = sorted(os.listdir(log_dir))
    assert file_name(segments[1].base_offset, ".log") in names


def test_the_active_segment_rolls_when_a_record_is_segment_ms_past_its_first_batch(open_log):
    partition_log = open_log(LogConfig(segment_ms=1000))
    for ms in (0, 500, 1000):  # 1000 ms past the first batch: not more than segment_ms
        partition_log.append(batch(b"x", timestamp=T0 + ms))
    assert len(partition_log.segments) == 1
    partition_log.append(batch(b"late", timestamp=T0 + 1001))
    assert [s.base_offset for s in partition_log.segments] == [0, 3]


def test_segment_age_survives_a_reopen(open_log, clock):
    """Age is record time from the first batch, which lives in the .log: neither a reopen nor
    the clock alone restarts or advances it."""
    config = LogConfig(segment_ms=1000)
    partition_log = open_log(config)
    partition_log.append(batch(b"first", timestamp=T0))
    partition_log.close()
    clock.advance(10 * 24 * 3600 * 1000)
    partition_log = open_log(config)
    partition_log.append(batch(b"same second", timestamp=T0 + 999))
    assert len(partition_log.segments) == 1
    partition_log.close()
    partition_log = open_log(config)
    partition_log.append(batch(b"past it", timestamp=T0 + 1001))
    assert [s.base_offset for s in partition_log.segments] == [0, 2]


def test_a_first_batch_without_a_timestamp_ages_by_the_clock(open_log, clock):
    partition_log = open_log(LogConfig(segment_ms=1000))
    partition_log.append(batch(b"no time", timestamp=-1))
    clock.advance(1000)
    partition_log.append(batch(b"x", timestamp=-1))
    assert len(partition_log.segments) == 1
    clock.advance(1)
    partition_log.append(batch(b"y", timestamp=-1))
    assert [s.base_offset for s in partition_log.segments] == [0, 2]


def test_a_batch_larger_than_a_segment_gets_a_segment_of_its_own(open_log):
    partition_log = open_log()
    fill(partition_log, 1)
    partition_log.append(value_batch(1, size=6000))
    fill(partition_log, 1)
    assert [s.base_offset for s in partition_log.segments] == [0, 1, 2]
    assert partition_log.segments[1].size > TINY.segment_bytes


def test_roll_starts_a_new_segment_only_if_the_active_one_holds_something(open_log):
    partition_log = open_log()
    partition_log.roll()
    assert len(partition_log.segments) == 1
    fill(partition_log, 1)
    partition_log.roll()
    assert [s.base_offset for s in partition_log.segments] == [0, 1]


def test_listeners_are_called_after_each_append(open_log):
    partition_log = open_log()
    seen = []
    listener = lambda log: seen.append(log.log_end_offset)  # noqa: E731
    partition_log.add_listener(listener)
    fill(partition_log, 2)
    partition_log.remove_listener(listener)
    fill(partition_log, 1)
    assert seen == [1, 2]


def test_a_closed_log_refuses_appends_and_reads(open_log):
    partition_log = open_log()
    fill(partition_log, 1)
    partition_log.close()
    with pytest.raises(LogClosedError):
        partition_log.append(batch(b"x"))
    with pytest.raises(LogClosedError):
        partition_log.read(0)


# -- reading ----------------------------------------------------------------------------------------


def test_read_before_the_first_offset_raises_out_of_range(open_log):
    partition_log = open_log()
    fill(partition_log, 10)
    partition_log.delete_records_before(4)
    with pytest.raises(OffsetOutOfRangeError) as caught:
        partition_log.read(3)
    error = caught.value
    assert (error.topic, error.partition, error.offset) == ("topic", 0, 3)
    assert (error.log_start_offset, error.log_end_offset) == (4, 10)
    assert error.metadata == {
        "topic": "topic", "partition": "0", "offset": "3",
        "log_start_offset": "4", "log_end_offset": "10",
    }


def test_read_of_a_negative_offset_raises_out_of_range(open_log):
    partition_log = open_log()
    with pytest.raises(OffsetOutOfRangeError):
        partition_log.read(-1)


def test_read_past_the_end_raises_out_of_range(open_log):
    partition_log = open_log()
    fill(partition_log, 3)
    with pytest.raises(OffsetOutOfRangeError) as caught:
        partition_log.read(4)
    assert (caught.value.offset, caught.value.log_end_offset) == (4, 3)


def test_read_at_the_end_is_empty(open_log):
    partition_log = open_log()
    fill(partition_log, 3)
    result = partition_log.read(3)
    assert len(result.data) == 0
    assert (result.log_start_offset, result.log_end_offset) == (0, 3)


def test_read_from_the_middle_of_a_batch_returns_the_whole_batch(open_log):
    partition_log = open_log()
    fill(partition_log, 3, records=5)
    data = partition_log.read(7, max_bytes=1).data
    assert [r.offset for r in decode_records(data)] == [5, 6, 7, 8, 9]
    assert [r.offset for r in decode_records(data, min_offset=7)] == [7, 8, 9]


def test_read_across_a_segment_roll(open_log):
    partition_log = open_log()
    fill(partition_log, 60, records=2)
    boundary = partition_log.segments[1].base_offset
    before = decode_records(partition_log.read(boundary - 1, max_bytes=1 << 20).data)
    assert before[-1].offset == boundary - 1  # a read returns batches of one segment
    after = decode_records(partition_log.read(boundary, max_bytes=1).data)
    assert [r.offset for r in after] == [boundary, boundary + 1]
    assert read_all(partition_log) == expected(60, records=2)


def test_every_offset_reads_the_batch_holding_it(open_log):
    partition_log = open_log()
    fill(partition_log, 50, records=3)
    for offset in range(150):
        records = decode_records(partition_log.read(offset, max_bytes=1).data)
        assert records[0].offset == offset - offset % 3 and len(records) == 3


def test_read_with_max_bytes_returns_whole_batches_and_at_least_one(open_log):
    partition_log = open_log()
    fill(partition_log, 10)
    length = len(value_batch(0))
    assert len(partition_log.read(0, max_bytes=0).data) == length
    assert len(partition_log.read(0, max_bytes=1).data) == length
    assert len(partition_log.read(0, max_bytes=3 * length).data) == 3 * length
    assert len(partition_log.read(0, max_bytes=4 * length - 1).data) == 3 * length
    assert len(partition_log.read(2, max_bytes=1 << 20).data) == 8 * length


def test_read_result_names_the_next_offset_to_read(open_log):
    partition_log = open_log()
    fill(partition_log, 10, records=2)
    length = len(value_batch(0, records=2))
    assert partition_log.read(3, max_bytes=2 * length).next_offset == 6
    assert partition_log.read(20).next_offset == 20


def test_read_with_max_offset_stops_before_the_batch_holding_it(open_log):
    partition_log = open_log()
    fill(partition_log, 5, records=2)
    data = partition_log.read(0, max_offset=5).data
    assert [r.offset for r in decode_records(data)] == [0, 1, 2, 3]
    assert len(partition_log.read(6, max_offset=6).data) == 0


# -- indexes are rebuilt, never trusted ---------------------------------------------------------------


def test_index_rebuilt_after_it_is_corrupted(open_log, log_dir):
    partition_log = open_log()
    fill(partition_log, 60)
    sealed = partition_log.segments[0]
    partition_log.close()
    index_path = log_dir / file_name(sealed.base_offset, ".index")
    size = index_path.stat().st_size
    assert size > 0
    index_path.write_bytes(np.random.default_rng(1).bytes(size))  # nonsense
    reopened = open_log()
    assert read_all(reopened) == expected(60)
    reopened.segments[0].index.sanity_check(reopened.segments[0].size)


def test_index_whose_entries_name_the_wrong_batches_is_rebuilt(open_log, log_dir):
    partition_log = open_log()
    fill(partition_log, 60)
    sealed = partition_log.segments[0]
    entries = np.fromfile(sealed.index.path, dtype=[("relative_offset", "<u4"), ("position", "<u4")])
    partition_log.close()
    entries["relative_offset"] -= 1  # increasing and inside the log, but each one offset low
    entries.tofile(log_dir / file_name(sealed.base_offset, ".index"))
    reopened = open_log()
    assert read_all(reopened) == expected(60)
    for offset in range(reopened.segments[0].next_offset):
        assert decode_records(reopened.read(offset, max_bytes=1).data)[0].offset == offset


def test_index_rebuilt_after_it_is_deleted(open_log, log_dir):
    partition_log = open_log()
    fill(partition_log, 60)
    first = partition_log.segments[0].base_offset
    second = partition_log.segments[1].base_offset
    partition_log.close()
    os.unlink(log_dir / file_name(first, ".index"))
    os.unlink(log_dir / file_name(second, ".timeindex"))
    reopened = open_log()
    assert (log_dir / file_name(first, ".index")).exists()
    assert (log_dir / file_name(second, ".timeindex")).exists()
    assert read_all(reopened) == expected(60)
    assert reopened.offset_for_timestamp(T0 + 10 * second + 5) == second + 1


def test_active_index_is_rebuilt_after_a_crash(open_log, log_dir):
    partition_log = open_log()
    fill(partition_log, 10)
    active = partition_log.active_segment.base_offset
    partition_log.abandon()
    path = log_dir / file_name(active, ".index")
    path.write_bytes(np.random.default_rng(2).bytes(path.stat().st_size))
    assert read_all(open_log()) == expected(10)


# -- truncation and log start -----------------------------------------------------------------------


def test_truncate_to_an_offset_inside_the_active_segment(open_log):
    partition_log = open_log()
    fill(partition_log, 10, records=2)
    partition_log.truncate_to(7)  # offsets 6..7 form a batch: it goes with everything after
    assert partition_log.log_end_offset == 6
    assert read_all(partition_log) == expected(3, records=2)
    with pytest.raises(OffsetOutOfRangeError):
        partition_log.read(7)
    assert partition_log.append(batch(b"new")).base_offset == 6


def test_truncate_to_an_offset_in_a_sealed_segment_drops_later_segments(open_log, log_dir):
    partition_log = open_log()
    fill(partition_log, 60)
    assert len(partition_log.segments) >= 3
    partition_log.truncate_to(5)
    assert partition_log.log_end_offset == 5
    assert len(partition_log.segments) == 1
    assert sorted(n for n in os.listdir(log_dir) if n.endswith(".log")) == [file_name(0, ".log")]
    partition_log.append(batch(b"new"))
    assert read_all(partition_log) == expected(5) + [(5, b"new")]
    partition_log.close()
    assert read_all(open_log()) == expected(5) + [(5, b"new")]


def test_truncate_to_a_segment_boundary(open_log):
    partition_log = open_log()
    fill(partition_log, 60)
    boundary = partition_log.segments[1].base_offset
    partition_log.truncate_to(boundary)
    assert partition_log.log_end_offset == boundary
    assert read_all(partition_log) == expected(boundary)
    assert partition_log.append(batch(b"x")).base_offset == boundary


def test_truncate_to_log_start_empties_the_log(open_log):
    partition_log = open_log()
    fill(partition_log, 60)
    partition_log.delete_records_before(30)
    start = partition_log.log_start_offset
    partition_log.truncate_to(0)
    assert partition_log.log_end_offset == start == partition_log.log_start_offset
    assert partition_log.append(batch(b"x")).base_offset == start


def test_truncate_to_past_the_end_changes_nothing(open_log):
    partition_log = open_log()
    fill(partition_log, 5)
    partition_log.truncate_to(9)
    assert partition_log.log_end_offset == 5


def test_truncated_log_survives_a_crash(open_log):
    partition_log = open_log()
    fill(partition_log, 40)
    partition_log.truncate_to(33)
    partition_log.abandon()
    reopened = open_log()
    assert reopened.log_end_offset == 33
    assert read_all(reopened) == expected(33)


def test_delete_records_before_raises_log_start_and_persists_it(open_log, log_dir):
    partition_log = open_log()
    fill(partition_log, 60)
    second = partition_log.segments[1].base_offset
    assert partition_log.delete_records_before(second + 2) == second + 2
    assert partition_log.segments[0].base_offset == second  # the wholly-deleted segment went
    assert not (log_dir / file_name(0, ".log")).exists()
    assert json.loads((log_dir / CHECKPOINT_FILE).read_text())["log_start_offset"] == second + 2
    assert read_all(partition_log) == expected(60)[second + 2 :]
    partition_log.close()
    reopened = open_log()
    assert reopened.log_start_offset == second + 2
    with pytest.raises(OffsetOutOfRangeError):
        reopened.read(second + 1)


def test_delete_records_before_persists_across_a_crash(open_log):
    partition_log = open_log()
    fill(partition_log, 10)
    partition_log.delete_records_before(7)
    partition_log.abandon()
    assert open_log().log_start_offset == 7


def test_delete_records_before_never_lowers_log_start(open_log):
    partition_log = open_log()
    fill(partition_log, 10)
    partition_log.delete_records_before(6)
    assert partition_log.delete_records_before(2) == 6


def test_delete_records_before_up_to_the_end_keeps_the_active_segment(open_log):
    partition_log = open_log()
    fill(partition_log, 60)
    assert partition_log.delete_records_before(60) == 60
    assert len(partition_log.segments) == 1
    assert len(partition_log.read(60).data) == 0
    assert partition_log.append(batch(b"x")).base_offset == 60


def test_delete_records_before_past_the_end_raises(open_log):
    partition_log = open_log()
    fill(partition_log, 3)
    with pytest.raises(OffsetOutOfRangeError):
        partition_log.delete_records_before(4)


# -- a write that fails part way ----------------------------------------------------------------


def fail_after(monkeypatch, written: int) -> None:
    """``os.pwritev`` writes ``written`` bytes, then the disk is full."""
    real = os.pwritev
    calls = []

    def pwritev(fd, buffers, position):
        calls.append(1)
        if len(calls) == 1:
            return real(fd, [b"".join(bytes(b) for b in buffers)[:written]], position)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment_module.os, "pwritev", pwritev)


@pytest.mark.parametrize("reopen", ["none", "close", "crash"])
def test_a_failing_write_leaves_the_log_consistent(open_log, monkeypatch, reopen):
    partition_log = open_log()
    fill(partition_log, 5)
    size = partition_log.size_bytes
    fail_after(monkeypatch, written=100)
    with pytest.raises(DiskFullError):
        partition_log.append(value_batch(99, records=3))
    monkeypatch.undo()
    assert partition_log.log_end_offset == 5
    assert partition_log.size_bytes == size == os.path.getsize(partition_log.active_segment.log_path)
    assert read_all(partition_log) == expected(5)
    if reopen == "close":
        partition_log.close()
        partition_log = open_log()
    elif reopen == "crash":
        partition_log.abandon()
        partition_log = open_log()
    assert partition_log.append(value_batch(5)).base_offset == 5
    assert read_all(partition_log) == expected(6)


def test_a_failing_multi_batch_append_that_rolls_appends_nothing(open_log, monkeypatch):
    partition_log = open_log()
    fill(partition_log, 20)  # 20 * 184 bytes: three more batches do not fit the segment
    payload = value_batch(20) + value_batch(21) + value_batch(22)
    fail_after(monkeypatch, written=300)
    with pytest.raises(DiskFullError):
        partition_log.append(payload)
    monkeypatch.undo()
    assert partition_log.log_end_offset == 20 == partition_log.active_segment.next_offset
    assert read_all(partition_log) == expected(20)
    assert partition_log.append(payload).base_offset == 20
    assert read_all(partition_log) == expected(23)
    partition_log.close()
    assert read_all(open_log()) == expected(23)


def test_one_append_lands_in_one_segment(open_log):
    partition_log = open_log()
    per_batch = len(value_batch(0))
    first = TINY.segment_bytes // per_batch - 1  # batches that fit, leaving room for one more only
    fill(partition_log, first)
    partition_log.append(value_batch(first) + value_batch(first + 1) + value_batch(first + 2))
    assert [s.base_offset for s in partition_log.segments] == [0, first]
    assert partition_log.segments[1].next_offset == first + 3


# -- durability --------------------------------------------------------------------------------------


def count_syncs(monkeypatch, delay: float = 0.0) -> list[int]:
    real = os.fdatasync
    calls: list[int] = []

    def fdatasync(fd):
        calls.append(fd)
        if delay:
            time.sleep(delay)
        real(fd)

    monkeypatch.setattr(segment_module.os, "fdatasync", fdatasync)
    return calls


def test_flush_always_syncs_before_append_returns(open_log, monkeypatch):
    partition_log = open_log(LogConfig(flush="always"))
    calls = count_syncs(monkeypatch)
    result = partition_log.append(batch(b"durable"))
    assert len(calls) >= 1
    assert partition_log.recovery_point >= result.log_end_offset


def test_flush_interval_does_not_sync_on_append(open_log, monkeypatch):
    partition_log = open_log(LogConfig(flush="interval"))
    calls = count_syncs(monkeypatch)
    partition_log.append(batch(b"later"))
    assert calls == []
    assert partition_log.recovery_point == 0
    partition_log.flush()
    assert len(calls) == 1 and partition_log.recovery_point == 1


def test_sync_true_forces_a_sync_under_any_policy(open_log, monkeypatch):
    partition_log = open_log(LogConfig(flush="never"))
    calls = count_syncs(monkeypatch)
    partition_log.append(batch(b"x"), sync=True)
    assert len(calls) == 1


def test_sync_false_skips_the_sync_under_flush_always(open_log, monkeypatch):
    partition_log = open_log(LogConfig(flush="always"))
    calls = count_syncs(monkeypatch)
    partition_log.append(batch(b"x"), sync=False)
    assert calls == []


def test_concurrent_appends_share_fdatasyncs(open_log, monkeypatch):
    partition_log = open_log(LogConfig(flush="always"))
    calls = count_syncs(monkeypatch, delay=0.003)
    threads, per_thread = 8, 15
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def producer(index: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                result = partition_log.append(batch(b"%d-%d" % (index, i)))
                assert partition_log.recovery_point >= result.log_end_offset
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=producer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    appends = threads * per_thread
    assert partition_log.log_end_offset == appends
    assert 1 <= len(calls) < appends / 2
    assert sorted(v for _, v in read_all(partition_log)) == sorted(
        b"%d-%d" % (n, i) for n in range(threads) for i in range(per_thread)
    )


def test_clean_close_writes_the_marker_and_checkpoint(open_log, log_dir):
    partition_log = open_log()
    fill(partition_log, 5)
    partition_log.close()
    assert (log_dir / CLEAN_SHUTDOWN_FILE).exists()
    assert json.loads((log_dir / CHECKPOINT_FILE).read_text()) == {
        "log_start_offset": 0, "recovery_point": 5,
    }
    reopened = open_log()
    assert not (log_dir / CLEAN_SHUTDOWN_FILE).exists()  # a crash from now on is unclean
    assert reopened.recovery_point == 5


def test_reopen_after_abandon_recovers(open_log, log_dir):
    partition_log = open_log()
    fill(partition_log, 30)
    partition_log.abandon()
    assert not (log_dir / CLEAN_SHUTDOWN_FILE).exists()
    reopened = open_log()
    assert reopened.log_end_offset == 30
    assert read_all(reopened) == expected(30)
    assert reopened.append(batch(b"more")).base_offset == 30


def test_close_twice_is_harmless(open_log):
    partition_log = open_log()
    partition_log.close()
    partition_log.close()
    assert partition_log.closed


def test_replace_segments_refuses_the_active_segment(open_log):
    partition_log = open_log()
    fill(partition_log, 30)
    active = partition_log.active_segment
    with pytest.raises(ValueError, match="sealed"):
        partition_log.replace_segments([active], active)


def test_encode_batch_of_keys_round_trips_through_the_log(open_log):
    partition_log = open_log()
    partition_log.append(encode_batch([b"v", None], [b"k", b"t"], T0, [[("h", b"1")], None], codec="zstd"))
    records = decode_records(partition_log.read(0).data)
    assert [(r.offset, r.key, r.value, r.headers) for r in records] == [
        (0, b"k", b"v", (("h", b"1"),)),
        (1, b"t", None, ()),
    ]


def test_truncate_to_inside_the_batch_holding_log_start_leaves_an_empty_log_at_log_start(open_log):
    partition_log = open_log()
    partition_log.append(batch(b"a", b"b", b"c"))
    partition_log.append(batch(b"d", b"e", b"f"))
    partition_log.delete_records_before(4)
    partition_log.truncate_to(5)  # offsets 3..5 are one batch: it goes, and log start is inside it
    assert (partition_log.log_start_offset, partition_log.log_end_offset) == (4, 4)
    assert partition_log.append(batch(b"x")).base_offset == 4
    assert read_all(partition_log) == [(4, b"x")]
    partition_log.close()
    reopened = open_log()
    assert (reopened.log_start_offset, reopened.log_end_offset) == (4, 5)


def test_readers_see_only_whole_batches_while_a_writer_appends_and_rolls(open_log):
    config = LogConfig(segment_bytes=4096, index_interval_bytes=100, segment_index_bytes=64)
    partition_log = open_log(config)
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def value(offset: int) -> bytes:
        return b"%d;" % offset * (1 + offset % 9)

    def writer() -> None:
        try:
            for _ in range(250):
                end = partition_log.log_end_offset
                count = 1 + end % 3
                partition_log.append(encode_batch([value(end + i) for i in range(count)], timestamps=T0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                end = partition_log.log_end_offset
                if end == 0:
                    continue
                offset = int(rng.integers(0, end))
                result = partition_log.read(offset, max_bytes=int(rng.integers(1, 3000)))
                records = decode_records(result.data)
                assert records and records[0].offset <= offset <= records[-1].offset
                assert [r.offset for r in records] == list(range(records[0].offset, records[-1].offset + 1))
                assert all(r.value == value(r.offset) for r in records)
                assert result.next_offset == records[-1].offset + 1
                reads[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(n,)) for n in range(2)]
    # two readers spinning in Python hold the GIL for the whole 5 ms switch interval each time
    # the writer gives it up for a syscall: its 250 appends took 150-200 s; at 0.1 ms, under 1 s
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert reads[0] > 50
    assert len(partition_log.segments) > 5
