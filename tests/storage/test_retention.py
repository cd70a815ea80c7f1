"""retention.py: whole sealed segments go by age and by size, oldest first, never the active one,
and log start is raised (and checkpointed) before any file goes."""

from __future__ import annotations

import json
import os

from logstore.storage import LogConfig, apply_retention
from logstore.storage.log import CHECKPOINT_FILE
from logstore.storage.retention import segments_to_delete
from logstore.storage.segment import file_name

from .helpers import read_all, value_batch

HOUR = 3600 * 1000


def config(**overrides) -> LogConfig:
    values = dict(segment_bytes=4096, index_interval_bytes=0, segment_index_bytes=1024)
    values.update(overrides)
    return LogConfig(**values)


def fill_segments(partition_log, clock, segments: int, step_ms: int = HOUR) -> None:
    """Append until there are ``segments`` segments, one batch per ``step_ms`` of the clock."""
    i = 0
    while len(partition_log.segments) < segments:
        partition_log.append(value_batch(i, timestamp=clock.now_ms()))
        clock.advance(step_ms)
        i += 1


def test_segments_older_than_retention_ms_are_deleted(open_log, clock):
    partition_log = open_log(config(retention_ms=30 * HOUR))
    fill_segments(partition_log, clock, 4)  # 22 batches per segment, one per hour
    sealed = partition_log.segments[:-1]
    newest = [s.max_timestamp for s in sealed]
    now = newest[1] + 30 * HOUR + 1  # the first two sealed segments are past retention
    result = apply_retention(partition_log, now)
    assert result.deleted_segments == 2
    assert result.deleted_bytes == sealed[0].size + sealed[1].size
    assert partition_log.segments[0] is sealed[2]
    assert result.log_start_offset == partition_log.log_start_offset == sealed[2].base_offset


def test_a_segment_whose_newest_record_is_young_enough_stays(open_log, clock):
    partition_log = open_log(config(retention_ms=30 * HOUR))
    fill_segments(partition_log, clock, 3)
    first = partition_log.segments[0]
    assert apply_retention(partition_log, first.max_timestamp + 30 * HOUR).deleted_segments == 0
    assert apply_retention(partition_log, first.max_timestamp + 30 * HOUR + 1).deleted_segments == 1


def test_the_active_segment_is_never_deleted_by_age(open_log, clock):
    partition_log = open_log(config(retention_ms=HOUR))
    partition_log.append(value_batch(0, timestamp=clock.now_ms()))
    clock.advance(1000 * HOUR)
    result = apply_retention(partition_log, clock.now_ms())
    assert result.deleted_segments == 0
    assert read_all(partition_log)[0][0] == 0


def test_segments_are_deleted_oldest_first_while_over_retention_bytes(open_log, clock):
    partition_log = open_log(config(retention_bytes=5000, retention_ms=-1))
    fill_segments(partition_log, clock, 5)
    sizes = [s.size for s in partition_log.segments]
    total = sum(sizes)
    expected = 0
    while total - sizes[expected] >= 5000:
        total -= sizes[expected]
        expected += 1
    assert expected >= 2
    result = apply_retention(partition_log, clock.now_ms())
    assert result.deleted_segments == expected
    assert partition_log.size_bytes == total >= 5000


def test_the_active_segment_is_never_deleted_by_size(open_log, clock):
    partition_log = open_log(config(retention_bytes=0, retention_ms=-1))
    fill_segments(partition_log, clock, 3)
    result = apply_retention(partition_log, clock.now_ms())
    assert result.deleted_segments == 2
    assert len(partition_log.segments) == 1 and partition_log.active_segment.size > 0


def test_retention_ms_minus_one_keeps_everything(open_log, clock):
    partition_log = open_log(config(retention_ms=-1))
    fill_segments(partition_log, clock, 3)
    assert apply_retention(partition_log, clock.now_ms() + 10_000 * HOUR).deleted_segments == 0


def test_a_compact_only_topic_is_not_deleted_by_age_or_size(open_log, clock):
    partition_log = open_log(config(retention_ms=HOUR, retention_bytes=0, cleanup_policy="compact"))
    fill_segments(partition_log, clock, 3)
    assert apply_retention(partition_log, clock.now_ms() + 100 * HOUR).deleted_segments == 0


def test_segments_wholly_below_log_start_are_deleted(open_log, clock):
    partition_log = open_log(config(retention_ms=-1))
    fill_segments(partition_log, clock, 3)
    second = partition_log.segments[1].base_offset
    partition_log.log_start_offset = second  # as if raised without deleting (e.g. by a replica)
    assert segments_to_delete(partition_log, clock.now_ms()) == 1
    assert apply_retention(partition_log, clock.now_ms()).deleted_segments == 1
    assert partition_log.segments[0].base_offset == second


def test_deleted_segments_leave_no_files(open_log, clock, log_dir):
    partition_log = open_log(config(retention_bytes=0, retention_ms=-1))
    fill_segments(partition_log, clock, 3)
    doomed = [s.base_offset for s in partition_log.segments[:-1]]
    apply_retention(partition_log, clock.now_ms())
    names = os.listdir(log_dir)
    for base in doomed:
        for suffix in (".log", ".index", ".timeindex"):
            assert file_name(base, suffix) not in names
    assert not [n for n in names if n.endswith(".deleted")]


def test_log_start_is_raised_and_checkpointed_before_files_go(open_log, clock, log_dir, monkeypatch):
    partition_log = open_log(config(retention_bytes=0, retention_ms=-1))
    fill_segments(partition_log, clock, 3)
    new_start = partition_log.segments[-1].base_offset
    seen: list[tuple[int, int]] = []
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        if str(target).endswith(".deleted"):  # a segment file is about to go
            checkpoint = json.loads((log_dir / CHECKPOINT_FILE).read_text())
            seen.append((partition_log.log_start_offset, checkpoint["log_start_offset"]))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    apply_retention(partition_log, clock.now_ms())
    monkeypatch.undo()
    assert seen and all(pair == (new_start, new_start) for pair in seen)


def test_retention_survives_reopen(open_log, clock):
    partition_log = open_log(config(retention_bytes=0, retention_ms=-1))
    fill_segments(partition_log, clock, 3)
    apply_retention(partition_log, clock.now_ms())
    start = partition_log.log_start_offset
    contents = read_all(partition_log)
    partition_log.abandon()
    reopened = open_log(config(retention_bytes=0, retention_ms=-1))
    assert reopened.log_start_offset == start
    assert read_all(reopened) == contents
