"""compaction.py: the latest value per key survives at its offset, tombstones go after
delete_retention_ms, the active segment is never touched, and a crash at any step of the swap
leaves a log that reads the same after reopening."""

from __future__ import annotations

import os

import pytest

from logstore.records import decode_records, encode_batch
from logstore.storage import LogConfig, PartitionLog, compact

from .helpers import T0, read_all

DAY = 24 * 3600 * 1000
COMPACT = LogConfig(
    segment_bytes=4096, index_interval_bytes=0, segment_index_bytes=1024,
    cleanup_policy="compact", delete_retention_ms=DAY,
)
KEYS = [b"key-%d" % k for k in range(7)]


class Crash(Exception):
    pass


def keyed_fill(partition_log: PartitionLog, batches: int, codec: str = "none",
               start: int = 0, keys_from: list[bytes] = KEYS) -> dict[int, tuple[bytes | None, bytes | None]]:
    """Append ``batches`` batches of three keyed records; returns offset -> (key, value)."""
    written = {}
    for j in range(start, start + batches):
        keys = [keys_from[(3 * j + r) % len(keys_from)] for r in range(3)]
        values = [b"value-%d-%d" % (j, r) + b"." * 60 for r in range(3)]
        result = partition_log.append(encode_batch(values, keys, T0 + j, codec=codec))
        for r in range(3):
            written[result.base_offset + r] = (keys[r], values[r])
    return written


def latest(records: dict[int, tuple[bytes | None, bytes | None]], below: int | None = None):
    """key -> (offset, value) of its last record (below offset ``below``)."""
    out = {}
    for offset in sorted(records):
        if below is None or offset < below:
            key, value = records[offset]
            out[key] = (offset, value)
    return out


def record_at(partition_log: PartitionLog, offset: int):
    records = decode_records(partition_log.read(offset, max_bytes=1).data, min_offset=offset)
    return records[0] if records else None


def assert_latest_values_readable(partition_log, written) -> None:
    for key, (offset, value) in latest(written).items():
        record = record_at(partition_log, offset)
        assert record is not None and record.offset == offset, key
        assert (record.key, record.value) == (key, value)


def test_compaction_keeps_the_latest_value_per_key_at_its_offset(open_log):
    partition_log = open_log(COMPACT)
    written = keyed_fill(partition_log, 60)
    assert len(partition_log.segments) >= 4
    sealed_end = partition_log.active_segment.base_offset
    result = compact(partition_log, T0 + 60)
    assert result.records_removed > 0
    assert result.bytes_after < result.bytes_before
    assert_latest_values_readable(partition_log, written)
    survivors = read_all(partition_log)
    in_sealed = {o: v for o, v in survivors if o < sealed_end}
    expected = {o: v for _, (o, v) in latest(written, below=sealed_end).items()}
    assert in_sealed == expected
    assert [o for o, _ in survivors if o >= sealed_end] == list(range(sealed_end, 180))
    for offset, value in survivors:
        assert written[offset][1] == value  # every survivor kept its offset


def test_compaction_never_touches_the_active_segment(open_log):
    partition_log = open_log(COMPACT)
    keyed_fill(partition_log, 60)
    active = partition_log.active_segment
    before = active.log_path.read_bytes()
    compact(partition_log, T0 + 60)
    assert partition_log.active_segment is active
    assert active.log_path.read_bytes() == before


def test_compaction_of_a_log_with_only_an_active_segment_does_nothing(open_log):
    partition_log = open_log(COMPACT)
    keyed_fill(partition_log, 5)
    assert compact(partition_log, T0).records_removed == 0
    assert len(read_all(partition_log)) == 15


def test_tombstones_stay_until_delete_retention_ms_passes(open_log):
    partition_log = open_log(COMPACT)
    first = partition_log.append(encode_batch([b"old"], [b"gone"], T0)).base_offset
    keyed_fill(partition_log, 30)
    stamp = T0 + 1000
    tombstone = partition_log.append(encode_batch([None], [b"gone"], stamp)).base_offset
    keyed_fill(partition_log, 30, start=30)
    partition_log.roll()

    compact(partition_log, stamp + DAY - 1)
    assert record_at(partition_log, first).offset != first  # the old value went
    kept = record_at(partition_log, tombstone)
    assert (kept.offset, kept.key, kept.value) == (tombstone, b"gone", None)

    compact(partition_log, stamp + DAY + 1)
    after = record_at(partition_log, tombstone)
    assert after is None or after.offset > tombstone
    assert all(offset != tombstone for offset, _ in read_all(partition_log))


def test_records_without_a_key_are_kept(open_log):
    partition_log = open_log(COMPACT)
    keyless = partition_log.append(encode_batch([b"a", b"b"], None, T0)).base_offset
    keyed_fill(partition_log, 60)
    compact(partition_log, T0)
    assert read_all(partition_log)[:2] == [(keyless, b"a"), (keyless + 1, b"b")]


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_batches_are_compacted_with_their_codec(open_log, codec):
    from logstore.records import read_header

    partition_log = open_log(COMPACT)
    written = keyed_fill(partition_log, 150, codec=codec)
    assert len(partition_log.segments) >= 3
    assert compact(partition_log, T0).records_removed > 0
    assert_latest_values_readable(partition_log, written)
    assert read_header(partition_log.read(0, max_bytes=1).data).codec == read_header(
        encode_batch([b"x"], codec=codec)
    ).codec


def test_headers_and_timestamps_survive_compaction(open_log):
    partition_log = open_log(COMPACT)
    partition_log.append(encode_batch([b"1", b"2"], [b"a", b"b"], [T0 + 5, T0 + 9],
                                      [[("h", b"x")], [("g", None)]]))
    keyed_fill(partition_log, 60)
    partition_log.append(encode_batch([b"3"], [b"a"], T0))
    partition_log.roll()
    compact(partition_log, T0)
    [record] = decode_records(partition_log.read(1, max_bytes=1).data, min_offset=1)[:1]
    assert (record.offset, record.key, record.value) == (1, b"b", b"2")
    assert (record.timestamp, record.headers) == (T0 + 9, (("g", None),))


def test_a_second_compaction_removes_nothing(open_log):
    partition_log = open_log(COMPACT)
    keyed_fill(partition_log, 60)
    compact(partition_log, T0)
    assert compact(partition_log, T0).records_removed == 0


def test_compaction_merges_segments_that_fit_in_one(open_log):
    partition_log = open_log(COMPACT)
    keyed_fill(partition_log, 60)
    compact(partition_log, T0)  # each full segment shrinks to a few records
    first_end = partition_log.active_segment.base_offset
    assert len([s for s in partition_log.segments if s.base_offset < first_end]) >= 3
    written = keyed_fill(partition_log, 60, start=60)  # every key again
    result = compact(partition_log, T0)
    assert result.segments_after < result.segments_before
    assert len([s for s in partition_log.segments if s.base_offset < first_end]) == 1
    assert_latest_values_readable(partition_log, written)


def test_a_compacted_log_reads_the_same_after_reopen(open_log):
    partition_log = open_log(COMPACT)
    written = keyed_fill(partition_log, 60)
    compact(partition_log, T0)
    contents = read_all(partition_log)
    partition_log.close()
    reopened = open_log(COMPACT)
    assert read_all(reopened) == contents
    assert_latest_values_readable(reopened, written)
    assert reopened.offset_for_timestamp(T0 + 59) is not None


def test_a_compacted_log_reads_the_same_after_a_crash(open_log):
    partition_log = open_log(COMPACT)
    keyed_fill(partition_log, 60)
    compact(partition_log, T0)
    contents = read_all(partition_log)
    partition_log.abandon()
    assert read_all(open_log(COMPACT)) == contents


SWAP_STEPS = ["cleaned-written", "swap-written", "originals-renamed", "swapped"]


@pytest.mark.parametrize("step", SWAP_STEPS)
def test_a_crash_at_each_step_of_the_swap_is_recovered(open_log, log_dir, step):
    partition_log = open_log(COMPACT)
    written = keyed_fill(partition_log, 60)
    original = read_all(partition_log)
    steps: list[str] = []

    def crash_point(name: str) -> None:
        steps.append(name)
        if name == step:
            raise Crash(name)

    with pytest.raises(Crash):
        compact(partition_log, T0, crash_point=crash_point)
    assert steps == SWAP_STEPS[: SWAP_STEPS.index(step) + 1]
    partition_log.abandon()

    reopened = open_log(COMPACT)
    assert_latest_values_readable(reopened, written)
    contents = read_all(reopened)
    assert [o for o, _ in contents] == sorted({o for o, _ in contents})
    assert set(contents) <= set(original)
    if step == "cleaned-written":
        assert contents == original  # the originals stand
    else:
        assert len(contents) < len(original)  # the compacted segment took their place
    leftovers = [n for n in os.listdir(log_dir) if n.endswith((".cleaned", ".swap", ".deleted", ".swap.json"))]
    assert leftovers == []
    reopened.append(encode_batch([b"after"], [b"k"], T0))
    assert read_all(reopened)[-1] == (max(written) + 1, b"after")
