"""offset_index.py: floor lookups checked against a sorted-list oracle; corrupt files are detected."""

from __future__ import annotations

import tempfile
from bisect import bisect_right
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.storage.index_file import CorruptIndexError
from logstore.storage.offset_index import ENTRY_DTYPE, ENTRY_SIZE, OffsetIndex

BASE = 1000


def open_index(path: Path, *, max_bytes: int = 8 * 64, writable: bool = True) -> OffsetIndex:
    return OffsetIndex(path, BASE, max_bytes, writable=writable)


def floor(model: list[tuple[int, int]], offset: int) -> tuple[int, int]:
    slot = bisect_right([o for o, _ in model], offset) - 1
    return model[slot] if slot >= 0 else (BASE, 0)


def floor_by_position(model: list[tuple[int, int]], position: int) -> tuple[int, int]:
    slot = bisect_right([p for _, p in model], position) - 1
    return model[slot] if slot >= 0 else (BASE, 0)


entries = st.lists(st.tuples(st.integers(1, 50), st.integers(1, 5000)), max_size=40).map(
    lambda steps: [
        (BASE + sum(s[0] for s in steps[: i + 1]), sum(s[1] for s in steps[: i + 1]))
        for i in range(len(steps))
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    entries=entries,
    lookups=st.lists(st.integers(BASE - 10, BASE + 2200), max_size=30),
    positions=st.lists(st.integers(0, 210_000), max_size=10),
    cut=st.integers(BASE - 5, BASE + 2200),
)
def test_lookups_match_a_sorted_list_oracle(entries, lookups, positions, cut):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "00000000000000001000.index"
        index = open_index(path, max_bytes=8 * 24)  # full after 24 entries
        model: list[tuple[int, int]] = []
        for offset, position in entries:
            index.append(offset, position)
            if len(model) < index.max_entries:
                model.append((offset, position))
            if model:  # an offset not past the last entry is ignored
                index.append(model[-1][0], model[-1][1] + 1)
        assert index.entries == len(model)
        for offset in lookups:
            assert index.lookup(offset) == floor(model, offset)
        for position in positions:
            assert index.lookup_position(position) == floor_by_position(model, position)
        assert index.last_entry == (model[-1] if model else (BASE, 0))

        # the file, trimmed and reopened read-only, gives the same answers
        index.close()
        assert path.stat().st_size == len(model) * ENTRY_SIZE
        reopened = open_index(path, writable=False)
        reopened.sanity_check(log_size=model[-1][1] + 1 if model else 0)
        for offset in lookups:
            assert reopened.lookup(offset) == floor(model, offset)

        writable = open_index(path)
        writable.truncate_to_offset(cut)
        kept = [entry for entry in model if entry[0] < cut]
        assert writable.entries == len(kept)
        for offset in lookups:
            assert writable.lookup(offset) == floor(kept, offset)
        writable.close()


def test_empty_index_points_at_the_segment_start(tmp_path):
    index = open_index(tmp_path / "a.index")
    assert index.lookup(BASE + 500) == (BASE, 0)
    assert index.lookup(0) == (BASE, 0)
    assert index.last_entry == (BASE, 0)


def test_entries_are_stored_relative_to_the_base_offset(tmp_path):
    path = tmp_path / "a.index"
    index = open_index(path)
    index.append(BASE + 5, 4096)
    index.close()
    stored = np.fromfile(path, dtype=ENTRY_DTYPE)
    assert stored.tolist() == [(5, 4096)]


def test_a_writable_index_is_preallocated_and_trimmed_on_close(tmp_path):
    path = tmp_path / "a.index"
    index = open_index(path, max_bytes=800)
    assert path.stat().st_size == 800
    index.append(BASE + 1, 10)
    index.close()
    assert path.stat().st_size == ENTRY_SIZE


def test_a_full_index_ignores_further_entries(tmp_path):
    index = open_index(tmp_path / "a.index", max_bytes=4 * ENTRY_SIZE)
    for i in range(1, 10):
        index.append(BASE + i, i * 100)
    assert index.is_full and index.entries == 4
    assert index.lookup(BASE + 9) == (BASE + 4, 400)


def test_sanity_check_detects_offsets_that_do_not_increase(tmp_path):
    path = tmp_path / "a.index"
    np.array([(5, 100), (5, 200)], dtype=ENTRY_DTYPE).tofile(path)
    with pytest.raises(CorruptIndexError, match="not increasing"):
        open_index(path, writable=False).sanity_check(log_size=1000)


def test_sanity_check_detects_positions_that_do_not_increase(tmp_path):
    path = tmp_path / "a.index"
    np.array([(5, 200), (6, 100)], dtype=ENTRY_DTYPE).tofile(path)
    with pytest.raises(CorruptIndexError, match="not increasing"):
        open_index(path, writable=False).sanity_check(log_size=1000)


def test_sanity_check_detects_a_position_past_the_log(tmp_path):
    path = tmp_path / "a.index"
    np.array([(5, 100), (6, 1000)], dtype=ENTRY_DTYPE).tofile(path)
    with pytest.raises(CorruptIndexError, match="past the log") as caught:
        open_index(path, writable=False).sanity_check(log_size=1000)
    assert caught.value.path == str(path)


def test_sanity_check_detects_random_nonsense(tmp_path):
    path = tmp_path / "a.index"
    path.write_bytes(np.random.default_rng(7).bytes(8 * ENTRY_SIZE))
    with pytest.raises(CorruptIndexError):
        open_index(path, writable=False).sanity_check(log_size=1 << 20)


def test_sanity_check_accepts_a_good_index(tmp_path):
    path = tmp_path / "a.index"
    np.array([(5, 100), (6, 200)], dtype=ENTRY_DTYPE).tofile(path)
    index = open_index(path, writable=False)
    index.sanity_check(log_size=201)
    assert index.entries == 2


def test_a_read_only_index_refuses_writes(tmp_path):
    path = tmp_path / "a.index"
    np.array([(5, 100)], dtype=ENTRY_DTYPE).tofile(path)
    with pytest.raises(CorruptIndexError, match="read-only"):
        open_index(path, writable=False).append(BASE + 9, 300)


def test_reset_drops_every_entry(tmp_path):
    index = open_index(tmp_path / "a.index")
    index.append(BASE + 1, 10)
    index.reset()
    assert index.entries == 0
    assert index.lookup(BASE + 1) == (BASE, 0)
