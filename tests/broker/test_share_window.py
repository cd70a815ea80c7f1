"""The in-flight window's numpy state: extend, advance, runs round trip."""

from __future__ import annotations

import numpy as np

from logstore.broker.share.window import (
    ACKNOWLEDGED,
    ACQUIRED,
    ARCHIVED,
    AVAILABLE,
    InFlightWindow,
    ranges,
)


def test_extend_makes_records_available_and_undelivered() -> None:
    window = InFlightWindow(10)
    window.extend(15)
    assert (window.start_offset, window.end_offset) == (10, 15)
    assert window.state.tolist() == [AVAILABLE] * 5 and window.count.tolist() == [0] * 5


def test_advance_drops_leading_done_records_only() -> None:
    window = InFlightWindow(0)
    window.extend(5)
    window.set_state(np.array([0, 1, 3]), ACKNOWLEDGED)
    assert window.advance() == 2
    assert len(window) == 3 and window.state.tolist() == [AVAILABLE, ACKNOWLEDGED, AVAILABLE]


def test_advance_past_a_window_all_done_empties_it() -> None:
    window = InFlightWindow(0)
    window.extend(3)
    window.set_state(slice(0, 3), ARCHIVED)
    assert window.advance() == 3 and len(window) == 0
    assert window.advance() == 3  # (an empty window stays where it is)


def test_acquire_counts_deliveries_and_locks() -> None:
    window = InFlightWindow(0)
    window.extend(4)
    window.acquire(np.array([1, 2]), owner=7, now_ms=1000, lock_ms=500)
    assert window.state.tolist() == [AVAILABLE, ACQUIRED, ACQUIRED, AVAILABLE]
    assert window.count.tolist() == [0, 1, 1, 0] and window.owner[1] == 7
    assert window.expired(1499).tolist() == [] and window.expired(1500).tolist() == [1, 2]


def test_first_delivery_time_is_kept_on_redelivery_consecutive_or_not() -> None:
    window = InFlightWindow(0)
    window.extend(6)
    window.acquire(np.array([1, 2, 3]), owner=1, now_ms=100, lock_ms=50)  # consecutive: one slice
    window.set_state(np.array([1, 2, 3]), AVAILABLE)
    window.acquire(np.array([0, 2, 5]), owner=2, now_ms=200, lock_ms=50)  # scattered
    window.acquire(np.array([1, 3]), owner=3, now_ms=300, lock_ms=50)
    assert window.since_ms.tolist() == [200, 100, 100, 100, 0, 200]
    assert window.count.tolist() == [1, 2, 2, 2, 0, 1] and window.owner.tolist() == [2, 3, 2, 3, 0, 2]


def test_expiry_timer_finds_a_renewed_lock_at_its_new_deadline() -> None:
    window = InFlightWindow(0)
    window.extend(3)
    window.acquire(np.array([0, 1]), owner=1, now_ms=1000, lock_ms=500)
    window.acquire(np.array([2]), owner=2, now_ms=1200, lock_ms=500)
    assert window.next_expiry_ms == 1500
    window.deadline_ms[0:2] = 2000  # renewed (the timer stays early: one scan finds nothing due)
    assert window.expired(1600).tolist() == [] and window.next_expiry_ms == 1700
    assert window.expired(1700).tolist() == [2]
    window.set_state(np.array([2]), AVAILABLE)
    assert window.next_expiry_ms == 2000 and window.expired(1999).tolist() == []
    assert window.expired(2000).tolist() == [0, 1]


def test_handable_waits_for_available_after_time() -> None:
    window = InFlightWindow(0)
    window.extend(2)
    window.set_state(np.array([0]), AVAILABLE, 5000)
    assert window.handable(4999).tolist() == [1] and window.handable(5000).tolist() == [0, 1]


def test_runs_round_trip_into_a_fresh_window() -> None:
    window = InFlightWindow(100)
    window.extend(110)
    window.acquire(np.arange(0, 6), owner=1, now_ms=1, lock_ms=1)
    window.set_state(np.arange(0, 3), ACKNOWLEDGED)
    window.set_state(np.array([4]), ARCHIVED)
    window.set_state(np.array([5]), AVAILABLE, 777)
    runs = window.runs()
    assert len(runs) < 10
    fresh = InFlightWindow(100)
    fresh.apply_runs(runs)
    assert fresh.end_offset == 110
    assert fresh.state.tolist() == window.state.tolist()
    assert fresh.count.tolist() == window.count.tolist()
    assert fresh.after_ms.tolist() == window.after_ms.tolist()


def test_runs_of_scattered_indices_cover_only_those() -> None:
    window = InFlightWindow(0)
    window.extend(10)
    runs = window.runs(np.array([1, 2, 5]))
    assert [(int(r["first"]), int(r["last"])) for r in runs] == [(1, 2), (5, 5)]


def test_ranges_split_on_gaps_and_count_changes() -> None:
    firsts, lasts, counts = ranges(np.array([3, 4, 5, 8]), np.array([1, 1, 2, 2]))
    assert firsts.tolist() == [3, 5, 8] and lasts.tolist() == [4, 5, 8] and counts.tolist() == [1, 2, 2]


def test_growing_past_capacity_keeps_state() -> None:
    window = InFlightWindow(0)
    window.extend(50)
    window.set_state(np.array([49]), ARCHIVED)
    window.extend(5000)
    assert window.state[49] == ARCHIVED and len(window) == 5000


def test_next_deadline_is_the_next_lock_expiry_or_delay_end_after_now() -> None:
    window = InFlightWindow(0)
    window.extend(4)
    window.set_state(np.array([1]), AVAILABLE, after_ms=500)  # a delay that ended already
    window.set_state(np.array([2]), AVAILABLE, after_ms=3000)
    assert window.next_deadline_ms(now_ms=1000) == 3000  # not 0 (undelayed) nor 500 (past)
    window.acquire(np.array([3]), owner=1, now_ms=1000, lock_ms=1000)
    assert window.next_deadline_ms(now_ms=1000) == 2000


def test_changes_mark_records_dirty_for_the_next_delta() -> None:
    window = InFlightWindow(0)
    window.extend(4)
    window.acquire(np.array([1, 2]), owner=1, now_ms=0, lock_ms=10)
    window.set_state(slice(3, 4), ACKNOWLEDGED)
    assert window.dirty_indices().tolist() == [1, 2, 3]
    assert window.runs(window.dirty_indices())["first"].tolist() == [1, 3]
