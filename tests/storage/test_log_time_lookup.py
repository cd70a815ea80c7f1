"""log.py: offset_for_timestamp — the first offset at or past log start whose timestamp is >= t,
searched (never clamped), the same before and after a reopen."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from logstore.records import encode_batch
from logstore.storage import LogConfig, ManualClock, PartitionLog

from .helpers import T0, fill


def test_offset_for_timestamp_finds_the_first_record_at_or_after_it(open_log):
    partition_log = open_log()
    fill(partition_log, 60, step_ms=10)  # offset i has timestamp T0 + 10 i, over several segments
    assert len(partition_log.segments) >= 3
    assert partition_log.offset_for_timestamp(0) == 0
    assert partition_log.offset_for_timestamp(T0) == 0
    for offset in (1, 17, 25, 44, 59):
        assert partition_log.offset_for_timestamp(T0 + 10 * offset) == offset
        assert partition_log.offset_for_timestamp(T0 + 10 * offset - 5) == offset
    assert partition_log.offset_for_timestamp(T0 + 591) is None


def test_offset_for_timestamp_never_answers_below_log_start(open_log):
    partition_log = open_log()
    fill(partition_log, 10)
    partition_log.delete_records_before(5)
    assert partition_log.offset_for_timestamp(T0) == 5
    assert partition_log.offset_for_timestamp(T0 + 70) == 7


def test_offset_for_timestamp_after_reopen(open_log):
    partition_log = open_log()
    fill(partition_log, 60)
    partition_log.close()
    reopened = open_log()
    assert reopened.offset_for_timestamp(T0 + 333) == 34


def test_offset_for_timestamp_searches_past_a_log_start_inside_a_batch(open_log):
    """Log start at 2 inside the batch 0..3 (timestamps 100, 900, 200, 300): t=250 is offset 3,
    the first offset >= log start with a timestamp >= 250 — not log start itself."""
    partition_log = open_log()
    partition_log.append(encode_batch([b"a"] * 4, timestamps=[T0 + 100, T0 + 900, T0 + 200, T0 + 300]))
    partition_log.append(encode_batch([b"b"], timestamps=[T0 + 1000]))
    partition_log.delete_records_before(2)
    answers = {t: partition_log.offset_for_timestamp(T0 + t) for t in (0, 150, 250, 300, 301, 900, 1000, 1001)}
    assert answers == {0: 2, 150: 2, 250: 3, 300: 3, 301: 4, 900: 4, 1000: 4, 1001: None}
    partition_log.close()
    reopened = open_log()
    assert {t: reopened.offset_for_timestamp(T0 + t) for t in answers} == answers


def test_offset_for_timestamp_skips_a_segment_whose_only_match_is_below_log_start(open_log):
    """The segment holding log start has a match only below it: the answer is in the next one."""
    partition_log = open_log(LogConfig(segment_bytes=4096, index_interval_bytes=0))
    partition_log.append(encode_batch([b"a"] * 3, timestamps=[T0 + 500, T0, T0]))
    partition_log.roll()
    partition_log.append(encode_batch([b"b"], timestamps=[T0 + 600]))
    partition_log.delete_records_before(1)
    assert partition_log.offset_for_timestamp(T0 + 400) == 3


@settings(max_examples=40, deadline=None)
@example(  # a full time index, then the segment's newest record, then more offset-index entries
    appends=[[[0], [1], [2], [3], [4], [5], [50], [6], [7]], [[0]]], reopen=True, lookups=[20],
    start_fraction=0.0,
)
@example(appends=[[[-40, 40, -20, -10]], [[50]]], reopen=False, lookups=[-15], start_fraction=0.4)
@given(
    appends=st.lists(
        st.lists(st.lists(st.integers(-50, 50), min_size=1, max_size=3), min_size=1, max_size=12),
        min_size=1, max_size=25,
    ),
    reopen=st.booleans(),
    lookups=st.lists(st.integers(-60, 60), min_size=1, max_size=20),
    start_fraction=st.floats(0, 1),
)
def test_offset_for_timestamp_matches_a_brute_force_oracle(
    tmp_path_factory, appends, reopen, lookups, start_fraction
):
    """Timestamps out of order, several batches per append, indexes small enough to fill, and
    log start anywhere (inside a batch too)."""
    config = LogConfig(segment_bytes=4096, index_interval_bytes=0, segment_index_bytes=64)
    directory = tmp_path_factory.mktemp("times")
    partition_log = PartitionLog.open(directory, config=config, clock=ManualClock())
    stamps: list[int] = []
    for payload in appends:
        data = b"".join(encode_batch([b"v" * 40] * len(ts), timestamps=[T0 + t for t in ts]) for ts in payload)
        partition_log.append(data)
        stamps += [T0 + t for ts in payload for t in ts]
    start = int(start_fraction * len(stamps))
    partition_log.delete_records_before(start)
    if reopen:
        partition_log.close()
        partition_log = PartitionLog.open(directory, config=config, clock=ManualClock())
    try:
        for t in lookups:
            want = next((o for o, s in enumerate(stamps) if o >= start and s >= T0 + t), None)
            assert partition_log.offset_for_timestamp(T0 + t) == want, t
    finally:
        partition_log.close()
