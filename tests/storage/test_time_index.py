"""time_index.py: timestamp lookups checked against a sorted-list oracle; corrupt files detected."""

from __future__ import annotations

import tempfile
from bisect import bisect_left
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.storage.index_file import CorruptIndexError
from logstore.storage.time_index import ENTRY_DTYPE, ENTRY_SIZE, TimeIndex

BASE = 500
T0 = 1_700_000_000_000


def open_index(path: Path, *, max_bytes: int = 12 * 30, writable: bool = True) -> TimeIndex:
    return TimeIndex(path, BASE, max_bytes, writable=writable)


def model_lookup(model: list[tuple[int, int]], timestamp: int) -> int:
    """The offset of the last entry whose timestamp is < ``timestamp``, else the base."""
    slot = bisect_left([t for t, _ in model], timestamp) - 1
    return model[slot][1] if slot >= 0 else BASE


@settings(max_examples=60, deadline=None)
@given(
    appends=st.lists(st.tuples(st.integers(T0 - 100, T0 + 100), st.integers(BASE, BASE + 200)), max_size=60),
    lookups=st.lists(st.integers(T0 - 110, T0 + 110), max_size=30),
    cut=st.integers(BASE - 1, BASE + 201),
)
def test_lookups_match_a_sorted_list_oracle(appends, lookups, cut):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "x.timeindex"
        index = open_index(path, max_bytes=12 * 8)  # full after 8 entries
        model: list[tuple[int, int]] = []
        for timestamp, offset in appends:
            index.maybe_append(timestamp, offset)
            grows = not model or (timestamp > model[-1][0] and offset >= model[-1][1])
            if grows and len(model) == index.max_entries:
                model[-1] = (timestamp, offset)  # a full index keeps its last entry current
            elif grows:
                model.append((timestamp, offset))
        assert index.entries == len(model)
        assert index.last_timestamp == (model[-1][0] if model else -1)
        for timestamp in lookups:
            assert index.lookup(timestamp) == model_lookup(model, timestamp)

        index.close()
        assert path.stat().st_size == len(model) * ENTRY_SIZE
        reopened = open_index(path, writable=False)
        reopened.sanity_check(log_size=0)
        for timestamp in lookups:
            assert reopened.lookup(timestamp) == model_lookup(model, timestamp)

        writable = open_index(path)
        writable.truncate_to_offset(cut)
        kept = [entry for entry in model if entry[1] < cut]
        assert writable.entries == len(kept)
        for timestamp in lookups:
            assert writable.lookup(timestamp) == model_lookup(kept, timestamp)
        writable.close()


def test_empty_index_scans_from_the_segment_start(tmp_path):
    index = open_index(tmp_path / "x.timeindex")
    assert index.lookup(T0) == BASE
    assert index.last_timestamp == -1


def test_an_older_timestamp_adds_no_entry(tmp_path):
    index = open_index(tmp_path / "x.timeindex")
    index.maybe_append(T0, BASE + 1)
    index.maybe_append(T0 - 1, BASE + 2)
    index.maybe_append(T0, BASE + 3)
    assert index.entries == 1


def test_entries_are_stored_as_timestamp_and_relative_offset(tmp_path):
    path = tmp_path / "x.timeindex"
    index = open_index(path)
    index.maybe_append(T0, BASE + 7)
    index.close()
    assert np.fromfile(path, dtype=ENTRY_DTYPE).tolist() == [(T0, 7)]


def test_a_full_index_overwrites_its_last_entry_with_the_larger_timestamp(tmp_path):
    index = open_index(tmp_path / "x.timeindex", max_bytes=2 * ENTRY_SIZE)
    for i in range(5):
        index.maybe_append(T0 + i, BASE + i)
    assert index.is_full and index.entries == 2
    assert index.last_timestamp == T0 + 4
    assert index.lookup(T0 + 4) == BASE  # scans from the entry before: still correct
    assert index.lookup(T0 + 5) == BASE + 4
    index.close()
    assert np.fromfile(tmp_path / "x.timeindex", dtype=ENTRY_DTYPE).tolist() == [(T0, 0), (T0 + 4, 4)]


def test_sanity_check_detects_timestamps_that_do_not_increase(tmp_path):
    path = tmp_path / "x.timeindex"
    np.array([(T0, 1), (T0, 2)], dtype=ENTRY_DTYPE).tofile(path)
    with pytest.raises(CorruptIndexError, match="not increasing"):
        open_index(path, writable=False).sanity_check(log_size=100)


def test_sanity_check_detects_offsets_that_go_back(tmp_path):
    path = tmp_path / "x.timeindex"
    np.array([(T0, 5), (T0 + 1, 2)], dtype=ENTRY_DTYPE).tofile(path)
    with pytest.raises(CorruptIndexError, match="not increasing"):
        open_index(path, writable=False).sanity_check(log_size=100)


def test_sanity_check_detects_random_nonsense(tmp_path):
    path = tmp_path / "x.timeindex"
    path.write_bytes(np.random.default_rng(3).bytes(10 * ENTRY_SIZE))
    with pytest.raises(CorruptIndexError):
        open_index(path, writable=False).sanity_check(log_size=100)
