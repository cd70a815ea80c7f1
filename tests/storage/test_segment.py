"""segment.py: one .log with its indexes — append, translate, read, find_timestamp, seal, load,
recover, truncate, delete, and a write that fails part way."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from logstore.errors import DiskFullError, StorageError
from logstore.records import decode_records, iter_headers
from logstore.storage import segment as segment_module
from logstore.storage.segment import LogSegment, file_name, parse_base_offset

from .helpers import T0, pending, value_batch

BASE = 100


def new_segment(directory: Path, *, interval: int = 0, index_bytes: int = 1024,
                writable: bool = True) -> LogSegment:
    return LogSegment(directory, BASE, index_bytes=index_bytes, index_interval_bytes=interval,
                      writable=writable, created_ms=0)


def fill(segment: LogSegment, count: int, records: int = 2, size: int = 50) -> list[bytes]:
    """Append ``count`` batches of ``records`` records each, one append per batch; returns them."""
    batches = []
    offset = segment.next_offset
    for i in range(count):
        data = value_batch(i, size=size, records=records, timestamp=T0 + 10 * i)
        segment.append([pending(data, offset)])
        offset += records
        batches.append(data)
    return batches


def batch_ends(segment: LogSegment) -> list[int]:
    return [h.end_position for h in iter_headers(segment.view(0, segment.size))]


def test_file_names_carry_the_base_offset_in_20_digits(tmp_path):
    segment = new_segment(tmp_path)
    assert segment.log_path.name == "00000000000000000100.log"
    assert [p.name for p in segment.paths()] == [
        "00000000000000000100.log", "00000000000000000100.index", "00000000000000000100.timeindex",
    ]
    assert parse_base_offset(file_name(BASE, ".timeindex")) == BASE
    assert parse_base_offset("checkpoint.json") is None


def test_append_assigns_offsets_and_publishes_size(tmp_path):
    segment = new_segment(tmp_path)
    batches = fill(segment, 3)
    assert segment.size == sum(len(b) for b in batches) == os.path.getsize(segment.log_path)
    assert segment.next_offset == BASE + 6
    records = decode_records(segment.view(0, segment.size))
    assert [r.offset for r in records] == list(range(BASE, BASE + 6))


def test_several_batches_in_one_append(tmp_path):
    segment = new_segment(tmp_path)
    first, second = value_batch(0, records=3), value_batch(1, records=2)
    segment.append([pending(first, BASE), pending(second, BASE + 3)])
    assert segment.next_offset == BASE + 5
    assert [h.base_offset for h in iter_headers(segment.view(0, segment.size))] == [BASE, BASE + 3]


def test_translate_an_offset_inside_a_batch_gives_that_batch(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 5, records=3)
    ends = batch_ends(segment)
    assert segment.translate(BASE + 7) == ends[1]  # offsets 106..108 are the third batch
    assert segment.translate(BASE + 6) == ends[1]
    assert segment.translate(BASE + 8) == ends[1]
    assert segment.translate(BASE) == 0


def test_translate_before_the_first_offset_gives_the_first_batch(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 2)
    assert segment.translate(0) == 0


def test_translate_past_the_last_offset_gives_none(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 2)
    assert segment.translate(BASE + 4) is None


def test_translate_in_an_empty_segment_gives_none(tmp_path):
    assert new_segment(tmp_path).translate(BASE) is None


@pytest.mark.parametrize("interval", [0, 150, 1 << 20])
def test_read_with_max_bytes_returns_the_whole_batches_that_fit_and_at_least_one(tmp_path, interval):
    segment = new_segment(tmp_path, interval=interval)
    fill(segment, 8)
    ends = batch_ends(segment)
    for start_batch in range(3):
        start = 0 if start_batch == 0 else ends[start_batch - 1]
        for max_bytes in range(0, segment.size - start + 2, 7):
            data = segment.read(start, max_bytes)
            fitting = [end for end in ends if start < end <= start + max_bytes]
            expected_end = fitting[-1] if fitting else ends[start_batch]
            assert len(data) == expected_end - start, (start, max_bytes)
            view, next_offset = segment.read_batches(start, max_bytes)
            assert len(view) == len(data)
            assert next_offset == decode_records(view)[-1].offset + 1


def test_read_past_the_end_is_empty(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 2)
    assert len(segment.read(segment.size, 1000)) == 0


def test_read_stops_at_an_end_position(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 4)
    ends = batch_ends(segment)
    assert len(segment.read(0, 1 << 20, end=ends[1])) == ends[1]


def test_read_is_a_view_of_the_mapping(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 1)
    assert isinstance(segment.read(0, 1 << 20), memoryview)


def test_an_index_entry_is_added_once_the_interval_has_passed(tmp_path):
    segment = new_segment(tmp_path, interval=400)
    batches = fill(segment, 10, records=1, size=100)
    length = len(batches[0])
    ends = batch_ends(segment)
    positions = list(segment.index._positions)
    # an entry for a batch once more than 400 bytes were written since the last one: every third
    assert length * 2 <= 400 < length * 3
    assert positions == ends[2::3][: len(positions)]
    assert len(positions) == 3


def test_find_timestamp_gives_the_first_offset_at_or_after_it(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 6, records=2)  # batch i has timestamp T0 + 10 * i on both records
    assert segment.find_timestamp(T0) == BASE
    assert segment.find_timestamp(T0 + 1) == BASE + 2
    assert segment.find_timestamp(T0 + 30) == BASE + 6
    assert segment.find_timestamp(T0 + 50) == BASE + 10
    assert segment.find_timestamp(T0 + 51) is None
    assert segment.find_timestamp(0) == BASE


def test_find_timestamp_with_timestamps_out_of_order(tmp_path):
    segment = new_segment(tmp_path)
    stamps = [T0 + 50, T0 + 10, T0 + 70, T0 + 20]
    for i, stamp in enumerate(stamps):
        segment.append([pending(value_batch(i, timestamp=stamp), BASE + i)])
    assert segment.find_timestamp(T0 + 15) == BASE
    assert segment.find_timestamp(T0 + 60) == BASE + 2
    assert segment.find_timestamp(T0 + 71) is None


def test_seal_trims_the_indexes_and_adds_a_last_time_entry(tmp_path):
    segment = new_segment(tmp_path, interval=1 << 20)
    fill(segment, 3)
    assert segment.time_index.entries == 0
    segment.seal()
    assert segment.time_index.entries == 1
    assert segment.time_index.last_timestamp == T0 + 20
    assert os.path.getsize(segment.index.path) == 0
    assert os.path.getsize(segment.time_index.path) == 12
    assert not segment.writable


def test_load_after_close_finds_the_same_end(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 5)
    next_offset, size, max_timestamp = segment.next_offset, segment.size, segment.max_timestamp
    position = segment.translate(BASE + 5)
    segment.close()
    loaded = new_segment(tmp_path, writable=False)
    loaded.load()
    assert (loaded.next_offset, loaded.size, loaded.max_timestamp) == (next_offset, size, max_timestamp)
    assert loaded.translate(BASE + 5) == position


def test_recover_rebuilds_the_indexes_and_cuts_a_torn_tail(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 4)
    ends = batch_ends(segment)
    entries = list(segment.index._positions)
    segment.close()
    with open(tmp_path / file_name(BASE, ".log"), "ab") as file:
        file.write(b"\x01" * 30)
    recovered = new_segment(tmp_path)
    outcome = recovered.recover()
    assert (outcome.valid_bytes, outcome.truncated_bytes, outcome.batches) == (ends[-1], 30, 4)
    assert outcome.reason is not None
    assert list(recovered.index._positions) == entries
    assert recovered.next_offset == BASE + 8
    assert os.path.getsize(recovered.log_path) == ends[-1]


def test_recover_stops_at_a_batch_whose_offsets_go_back(tmp_path):
    segment = new_segment(tmp_path)
    data = value_batch(0)
    segment.append([pending(data, BASE + 5)])
    segment.append([pending(value_batch(1), BASE + 2)])  # a lie the recovery must catch
    segment.close()
    outcome = new_segment(tmp_path).recover()
    assert outcome.batches == 1 and outcome.valid_bytes == len(data)
    assert "below the expected" in outcome.reason


def test_truncate_to_cuts_the_batch_holding_the_offset_and_everything_after(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 5, records=2)
    ends = batch_ends(segment)
    assert segment.truncate_to(BASE + 5) == BASE + 4  # offset 105 is in the third batch (104..105)
    assert segment.size == ends[1] == os.path.getsize(segment.log_path)
    assert segment.next_offset == BASE + 4
    assert segment.max_timestamp == T0 + 10
    assert segment.translate(BASE + 4) is None
    fill(segment, 1)
    assert [r.offset for r in decode_records(segment.view(0, segment.size))] == list(range(BASE, BASE + 6))


def test_truncate_to_past_the_end_changes_nothing(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 2)
    size = segment.size
    assert segment.truncate_to(BASE + 10) == BASE + 4
    assert segment.size == size


def test_truncated_segment_loads_cleanly_after_close(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 6)
    segment.truncate_to(BASE + 5)
    segment.close()
    loaded = new_segment(tmp_path, writable=False)
    loaded.load()  # the index must not point past the cut
    assert loaded.next_offset == BASE + 4


def test_can_hold_refuses_a_batch_past_segment_bytes_unless_empty(tmp_path):
    segment = new_segment(tmp_path)
    assert segment.can_hold(BASE + 1, 10_000, segment_bytes=4096)  # empty: any batch fits
    fill(segment, 1)
    assert not segment.can_hold(BASE + 3, 4096, segment_bytes=4096)
    assert segment.can_hold(BASE + 3, 100, segment_bytes=4096)


def test_can_hold_refuses_once_the_index_is_full(tmp_path):
    segment = new_segment(tmp_path, index_bytes=8 * 2)
    fill(segment, 4)
    assert segment.index.is_full
    assert not segment.can_hold(segment.next_offset + 1, 10, segment_bytes=1 << 20)


def test_can_hold_refuses_offsets_beyond_32_bits_relative(tmp_path):
    segment = new_segment(tmp_path)
    assert not segment.can_hold(BASE + (1 << 32) + 1, 10, segment_bytes=1 << 20)


def test_delete_removes_every_file(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 2)
    segment.delete()
    assert os.listdir(tmp_path) == []


# -- a write that fails part way ----------------------------------------------------------------


def failing_pwritev(monkeypatch, *, after: int, error: int = errno.ENOSPC) -> list[int]:
    """Make ``os.pwritev`` in the segment module write ``after`` bytes, then fail with ``error``."""
    real = os.pwritev
    calls: list[int] = []

    def pwritev(fd, buffers, position):
        calls.append(position)
        if len(calls) == 1:  # a short write: part of the data goes out
            data = b"".join(bytes(b) for b in buffers)[:after]
            return real(fd, [data], position)
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(segment_module.os, "pwritev", pwritev)
    return calls


def test_a_write_that_fails_part_way_leaves_no_half_batch(tmp_path, monkeypatch):
    segment = new_segment(tmp_path)
    fill(segment, 2)
    size, next_offset = segment.size, segment.next_offset
    calls = failing_pwritev(monkeypatch, after=70)
    with pytest.raises(DiskFullError) as caught:
        segment.append([pending(value_batch(9), next_offset)])
    assert len(calls) == 2  # the short write was retried before the error
    assert caught.value.errno == errno.ENOSPC and caught.value.path == str(segment.log_path)
    assert (segment.size, segment.next_offset) == (size, next_offset)
    assert os.path.getsize(segment.log_path) == size
    monkeypatch.undo()
    fill(segment, 1)
    assert [r.offset for r in decode_records(segment.view(0, segment.size))] == list(
        range(BASE, BASE + 6)
    )


def test_an_io_error_is_a_storage_error_not_disk_full(tmp_path, monkeypatch):
    segment = new_segment(tmp_path)
    failing_pwritev(monkeypatch, after=10, error=errno.EIO)
    with pytest.raises(StorageError) as caught:
        segment.append([pending(value_batch(0), BASE)])
    assert not isinstance(caught.value, DiskFullError)
    assert segment.size == 0 == os.path.getsize(segment.log_path)


def test_short_writes_are_retried_until_everything_is_written(tmp_path, monkeypatch):
    real = os.pwritev

    def dribble(fd, buffers, position):  # at most 7 bytes per call
        return real(fd, [b"".join(bytes(b) for b in buffers)[:7]], position)

    monkeypatch.setattr(segment_module.os, "pwritev", dribble)
    segment = new_segment(tmp_path)
    data = value_batch(0, records=3)
    segment.append([pending(data, BASE)])
    monkeypatch.undo()
    assert bytes(segment.view(16, segment.size)) == data[16:]
    assert [r.offset for r in decode_records(segment.view(0, segment.size))] == [BASE, BASE + 1, BASE + 2]
