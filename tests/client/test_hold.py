"""Nagle's hold: a late answer lets the open batches through as a second request."""

from __future__ import annotations

from logstore.client.hold import (
    FIRST_ROUND_TRIP_S,
    LATE_FACTOR,
    LATE_MAX_REQUEST_BYTES,
    LATE_MIN_S,
    Hold,
)


def test_nothing_in_flight_sends_at_once() -> None:
    assert Hold().send_now(0.0)


def test_one_request_on_time_holds_until_it_is_late() -> None:
    hold = Hold()
    hold.sent(10.0)
    late = 10.0 + LATE_FACTOR * FIRST_ROUND_TRIP_S
    assert hold.late_at() == late
    assert not hold.send_now(late - 1e-6)
    assert hold.send_now(late)


def test_two_in_flight_never_count_as_late() -> None:
    hold = Hold()
    hold.sent(0.0)
    hold.sent(0.0)
    assert hold.late_at() is None
    assert not hold.send_now(100.0)


def test_a_large_request_is_never_late() -> None:
    hold = Hold()
    hold.sent(0.0, LATE_MAX_REQUEST_BYTES + 1)
    assert hold.late_at() is None
    assert not hold.send_now(100.0)
    hold.answered(1.0)
    hold.sent(2.0, LATE_MAX_REQUEST_BYTES)
    assert hold.late_at() is not None


def test_answers_move_the_round_trip_and_the_late_point_follows() -> None:
    hold = Hold()
    for start in range(100):  # round trips of 10 ms
        hold.sent(float(start))
        hold.answered(start + 0.010)
    assert abs(hold.round_trip_s - 0.010) < 1e-4
    hold.sent(200.0)
    assert abs(hold.late_at() - (200.0 + LATE_FACTOR * 0.010)) < 1e-3  # type: ignore[operator]


def test_the_late_point_is_never_below_the_minimum() -> None:
    hold = Hold()
    for start in range(100):  # round trips of 10 µs
        hold.sent(float(start))
        hold.answered(start + 0.00001)
    hold.sent(0.0)
    assert hold.late_at() == LATE_MIN_S


def test_an_answer_with_nothing_in_flight_is_ignored() -> None:
    hold = Hold()
    hold.answered(1.0)  # a failure reported after the stream was reset, say
    assert hold.in_flight == 0 and hold.round_trip_s == FIRST_ROUND_TRIP_S
