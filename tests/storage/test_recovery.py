"""recovery.py: opening after a crash — torn tails are cut at the first invalid batch, the valid
prefix survives, what was cut is reported, and leftovers of interrupted work are resolved."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.records import encode_batch, iter_headers
from logstore.storage import LogConfig, PartitionLog
from logstore.storage.log import CHECKPOINT_FILE
from logstore.storage.recovery import open_segments
from logstore.storage.segment import file_name
from logstore.storage.time_index import ENTRY_DTYPE as TIME_ENTRY_DTYPE

from ..conftest import TINY
from .helpers import T0, read_all, value_batch

RECOVERY_LOGGER = "logstore.storage.recovery"


def build(directory: Path, clock, batches: int, records: int = 1) -> list[tuple[int, bytes]]:
    """A log of ``batches`` batches left as a crash leaves it (no clean shutdown)."""
    partition_log = PartitionLog.open(directory, config=TINY, clock=clock)
    for i in range(batches):
        partition_log.append(value_batch(i, size=40, records=records))
    contents = read_all(partition_log)
    partition_log.abandon()
    return contents


def active_log_path(directory: Path) -> Path:
    return max(directory.glob("*.log"))


def reopen(directory: Path, clock, config: LogConfig = TINY) -> PartitionLog:
    return PartitionLog.open(directory, config=config, clock=clock)


def test_recovery_after_a_cut_at_every_byte_inside_the_last_batch(tmp_path, clock, caplog):
    original = tmp_path / "original"
    contents = build(original, clock, batches=5, records=3)
    log_path = active_log_path(original)
    data = log_path.read_bytes()
    last = list(iter_headers(data))[-1]
    survivors = [(o, v) for o, v in contents if o < last.base_offset]
    caplog.set_level(logging.WARNING, logger=RECOVERY_LOGGER)
    for cut in range(last.position + 1, last.end_position):
        caplog.clear()
        directory = tmp_path / f"cut-{cut}"
        shutil.copytree(original, directory)
        os.truncate(directory / log_path.name, cut)
        partition_log = reopen(directory, clock)
        assert partition_log.log_end_offset == last.base_offset, cut
        assert read_all(partition_log) == survivors, cut
        assert os.path.getsize(directory / log_path.name) == last.position
        torn = cut - last.position
        assert any(f"recovery cut {torn} bytes" in r.getMessage() for r in caplog.records), cut
        partition_log.close()
        shutil.rmtree(directory)


def test_recovery_after_garbage_is_appended_to_the_tail(tmp_path, clock, caplog):
    contents = build(tmp_path, clock, batches=30)
    log_path = active_log_path(tmp_path)
    size = log_path.stat().st_size
    with open(log_path, "ab") as file:
        file.write(os.urandom(77))
    caplog.set_level(logging.WARNING, logger=RECOVERY_LOGGER)
    partition_log = reopen(tmp_path, clock)
    assert read_all(partition_log) == contents
    assert log_path.stat().st_size == size
    assert any("recovery cut 77 bytes" in r.getMessage() for r in caplog.records)
    assert partition_log.append(value_batch(99)).base_offset == len(contents)


def test_recovery_after_zeros_are_appended_to_the_tail(tmp_path, clock):
    contents = build(tmp_path, clock, batches=3)
    with open(active_log_path(tmp_path), "ab") as file:
        file.write(bytes(4096))
    assert read_all(reopen(tmp_path, clock)) == contents


def test_the_cut_is_reported_by_open_segments(tmp_path, clock):
    build(tmp_path, clock, batches=3)
    log_path = active_log_path(tmp_path)
    size = log_path.stat().st_size
    last = list(iter_headers(log_path.read_bytes()))[-1]
    os.truncate(log_path, size - 5)
    opened = open_segments(
        tmp_path, config=TINY, clean=False, log_start_offset=0, recovery_point=0,
        now_ms=clock.now_ms(), name="t/0",
    )
    [cut] = opened.cuts
    base = int(log_path.name.split(".")[0])
    assert (cut.base_offset, cut.truncated_bytes) == (base, size - 5 - last.position)
    assert "cut short" in cut.reason or "runs past" in cut.reason
    assert opened.recovery_point == 2


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_recovery_after_a_cut_anywhere_in_the_active_segment(tmp_path_factory, data):
    from logstore.storage import ManualClock

    directory = tmp_path_factory.mktemp("cut")
    clock = ManualClock()
    contents = build(directory, clock, batches=data.draw(st.integers(1, 40)))
    log_path = active_log_path(directory)
    base = int(log_path.name.split(".")[0])
    raw = log_path.read_bytes()
    cut = data.draw(st.integers(0, len(raw)))
    os.truncate(log_path, cut)
    whole = [h.next_offset for h in iter_headers(raw) if h.end_position <= cut]
    end = whole[-1] if whole else base
    partition_log = reopen(directory, clock)
    assert partition_log.log_end_offset == end
    assert read_all(partition_log) == [(o, v) for o, v in contents if o < end]
    partition_log.close()


def test_a_corrupt_sealed_segment_is_cut_and_later_segments_go(tmp_path, clock):
    contents = build(tmp_path, clock, batches=100)
    logs = sorted(tmp_path.glob("*.log"))
    assert len(logs) >= 3
    second = logs[1]
    raw = bytearray(second.read_bytes())
    headers = list(iter_headers(raw))
    raw[headers[2].position + 70] ^= 0xFF  # a record byte of its third batch: the crc fails
    second.write_bytes(raw)
    partition_log = reopen(tmp_path, clock)
    end = headers[2].base_offset
    assert partition_log.log_end_offset == end
    assert read_all(partition_log) == contents[:end]
    assert sorted(tmp_path.glob("*.log")) == logs[:2]
    assert partition_log.append(value_batch(1)).base_offset == end


def test_a_log_cut_after_a_clean_shutdown_is_still_recovered(tmp_path, clock):
    partition_log = reopen(tmp_path, clock)
    for i in range(10):
        partition_log.append(value_batch(i, size=40))
    contents = read_all(partition_log)
    partition_log.close()
    log_path = active_log_path(tmp_path)
    os.truncate(log_path, log_path.stat().st_size - 3)
    assert read_all(reopen(tmp_path, clock)) == contents[:9]


def test_log_start_past_the_recovered_end_starts_an_empty_log_there(tmp_path, clock):
    partition_log = reopen(tmp_path, clock)
    for i in range(10):
        partition_log.append(value_batch(i, size=40))
    partition_log.delete_records_before(8)
    partition_log.abandon()
    os.truncate(active_log_path(tmp_path), 50)  # inside the first batch
    reopened = reopen(tmp_path, clock)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (8, 8)
    assert reopened.append(value_batch(0)).base_offset == 8


def test_an_overlapping_segment_is_removed(tmp_path, clock):
    contents = build(tmp_path, clock, batches=70)
    logs = sorted(tmp_path.glob("*.log"))
    last_base = int(logs[-1].name.split(".")[0])
    overlapping = last_base - 3
    for suffix in (".log", ".index", ".timeindex"):
        os.replace(tmp_path / file_name(last_base, suffix), tmp_path / file_name(overlapping, suffix))
    partition_log = reopen(tmp_path, clock)
    assert partition_log.log_end_offset == last_base
    assert read_all(partition_log) == contents[:last_base]
    assert not (tmp_path / file_name(overlapping, ".log")).exists()


def test_leftovers_of_interrupted_work_are_removed(tmp_path, clock):
    contents = build(tmp_path, clock, batches=5)
    names = ["00000000000000000000.log.deleted", "00000000000000000000.log.cleaned",
             "checkpoint.json.tmp", "00000000000000000999.index", "00000000000000000999.timeindex"]
    for name in names:
        (tmp_path / name).write_bytes(b"junk")
    partition_log = reopen(tmp_path, clock)
    assert read_all(partition_log) == contents
    for name in names:
        assert not (tmp_path / name).exists(), name


def test_an_unreadable_checkpoint_is_ignored(tmp_path, clock):
    contents = build(tmp_path, clock, batches=5)
    (tmp_path / CHECKPOINT_FILE).write_text("{not json")
    partition_log = reopen(tmp_path, clock)
    assert read_all(partition_log) == contents
    assert partition_log.log_start_offset == 0


def test_a_missing_checkpoint_recovers_everything(tmp_path, clock):
    contents = build(tmp_path, clock, batches=40)
    os.unlink(tmp_path / CHECKPOINT_FILE)
    assert read_all(reopen(tmp_path, clock)) == contents


def test_an_empty_directory_opens_as_an_empty_log(tmp_path, clock):
    partition_log = reopen(tmp_path / "new", clock)
    assert (partition_log.log_start_offset, partition_log.log_end_offset) == (0, 0)
    assert (tmp_path / "new" / file_name(0, ".log")).exists()


def test_recovery_makes_the_recovered_log_durable(tmp_path, clock):
    contents = build(tmp_path, clock, batches=5)
    partition_log = reopen(tmp_path, clock)
    assert partition_log.recovery_point == len(contents)


def test_a_batch_claiming_offsets_below_its_predecessor_is_cut(tmp_path, clock):
    contents = build(tmp_path, clock, batches=3)
    log_path = active_log_path(tmp_path)
    with open(log_path, "ab") as file:
        file.write(encode_batch([b"replayed"], timestamps=T0, base_offset=1))
    partition_log = reopen(tmp_path, clock)
    assert read_all(partition_log) == contents


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_batches_survive_recovery(tmp_path, clock, codec):
    partition_log = reopen(tmp_path, clock)
    for i in range(5):
        partition_log.append(encode_batch([b"v%d" % i] * 3, timestamps=T0, codec=codec))
    contents = read_all(partition_log)
    partition_log.abandon()
    assert read_all(reopen(tmp_path, clock)) == contents


# -- indexes are derived data: after a clean close too, never trusted past the log ---------------


def one_record_batches(partition_log: PartitionLog, first_ms: int, count: int) -> list[int]:
    """Append ``count`` one-record batches at first_ms, first_ms + 1, ...; the .log size after each."""
    sizes = []
    for i in range(count):
        partition_log.append(encode_batch([b"v%d" % i], timestamps=first_ms + i))
        sizes.append(partition_log.active_segment.size)
    return sizes


def test_a_time_index_naming_batches_a_clean_log_lost_is_rebuilt(tmp_path, clock):
    """Ten batches at T..T+9, closed cleanly, the .log cut after offset 4 (a batch boundary): the
    .timeindex still names offset 9. Reopened, it must not be trusted: offset 5 is the first
    record at T+50 once ten records at T+105.. are appended, before and after more reopens."""
    config = LogConfig()  # no offset-index entry for small batches: only the time index is stale
    partition_log = reopen(tmp_path, clock, config)
    sizes = one_record_batches(partition_log, T0, 10)
    partition_log.close()
    os.truncate(tmp_path / file_name(0, ".log"), sizes[4])
    partition_log = reopen(tmp_path, clock, config)
    assert partition_log.log_end_offset == 5
    assert partition_log.active_segment.max_timestamp == T0 + 4  # from the log, not the index
    assert partition_log.offset_for_timestamp(T0 + 5) is None
    one_record_batches(partition_log, T0 + 105, 10)
    assert partition_log.offset_for_timestamp(T0 + 50) == 5
    for _ in range(2):
        partition_log.close()
        partition_log = reopen(tmp_path, clock, config)
        assert partition_log.offset_for_timestamp(T0 + 50) == 5
        assert partition_log.offset_for_timestamp(T0 + 4) == 4
    partition_log.close()


def test_an_offset_index_naming_batches_a_clean_log_lost_is_rebuilt(tmp_path, clock):
    partition_log = reopen(tmp_path, clock)  # TINY: an offset-index entry per batch
    sizes = one_record_batches(partition_log, T0, 5)
    partition_log.close()
    os.truncate(tmp_path / file_name(0, ".log"), sizes[2])
    partition_log = reopen(tmp_path, clock)
    assert partition_log.log_end_offset == 3
    assert partition_log.active_segment.index.last_entry[0] <= 2
    assert partition_log.append(encode_batch([b"new"], timestamps=T0 + 9)).base_offset == 3
    assert [offset for offset, _ in read_all(partition_log)] == [0, 1, 2, 3]
    assert partition_log.offset_for_timestamp(T0 + 3) == 3
    partition_log.close()


#: An offset-index entry per batch, and none at all (the time index then has only its seal entry).
INDEX_DENSITIES = [TINY, LogConfig(segment_bytes=4096)]


@pytest.mark.parametrize("config", INDEX_DENSITIES, ids=["dense", "sparse"])
def test_a_sealed_segment_cut_at_a_batch_boundary_answers_from_what_it_holds(tmp_path, clock, config):
    partition_log = reopen(tmp_path, clock, config)
    one_record_batches(partition_log, T0, 60)
    first = partition_log.segments[0]
    assert len(partition_log.segments) >= 2 and first.next_offset >= 3
    cut_at = first.next_offset - 2  # its last two batches are lost
    position = first.translate(cut_at)
    partition_log.close()
    os.truncate(tmp_path / file_name(0, ".log"), position)
    partition_log = reopen(tmp_path, clock, config)
    assert partition_log.segments[0].next_offset == cut_at
    assert partition_log.segments[0].max_timestamp == T0 + cut_at - 1
    assert partition_log.offset_for_timestamp(T0 + cut_at - 1) == cut_at - 1
    assert partition_log.offset_for_timestamp(T0 + cut_at) == cut_at + 2  # the lost ones skipped
    partition_log.close()


@pytest.mark.parametrize("config", INDEX_DENSITIES, ids=["dense", "sparse"])
def test_indexes_of_an_emptied_clean_log_are_rebuilt(tmp_path, clock, config):
    partition_log = reopen(tmp_path, clock, config)
    one_record_batches(partition_log, T0, 3)
    partition_log.close()
    os.truncate(tmp_path / file_name(0, ".log"), 0)
    partition_log = reopen(tmp_path, clock, config)
    segment = partition_log.active_segment
    assert (partition_log.log_end_offset, segment.max_timestamp) == (0, -1)
    assert (segment.index.entries, segment.time_index.entries) == (0, 0)
    partition_log.append(encode_batch([b"again"], timestamps=T0 + 7))
    assert partition_log.offset_for_timestamp(T0) == 0
    partition_log.close()


def test_a_time_index_entry_below_its_batch_timestamp_is_rebuilt(tmp_path, clock):
    """The last entry names batch 9 but claims T+3: a lookup for T+5 would start at 9."""
    config = LogConfig()
    partition_log = reopen(tmp_path, clock, config)
    one_record_batches(partition_log, T0, 10)
    partition_log.close()
    (tmp_path / file_name(0, ".timeindex")).write_bytes(
        np.array([(T0 + 3, 9)], dtype=TIME_ENTRY_DTYPE).tobytes()
    )
    partition_log = reopen(tmp_path, clock, config)
    assert partition_log.offset_for_timestamp(T0 + 5) == 5
    assert partition_log.active_segment.max_timestamp == T0 + 9
    partition_log.close()
