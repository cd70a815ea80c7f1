"""The queue crash test's checker on hand-written histories: each anomaly is found."""

from __future__ import annotations

from typing import Any

from bench.queue_crash.checker import check


def ev(event: str, t: float, o: int = 0, w: str = "w0", **fields: Any) -> dict[str, Any]:
    return {"ev": event, "t": t, "p": 0, "o": o, "w": w, **fields}


TASKS = {(0, 0): 1}


def test_a_clean_history_has_no_anomaly() -> None:
    events = [ev("deliver", 0.0, dc=1), ev("sent", 0.1, kind="accept"), ev("ok", 0.2, kind="accept")]
    report = check(TASKS, events, set(), [], lock_ms=1000, remaining=0)
    assert not any(report.anomalies.values()) and report.figures["accepted"] == 1


def test_a_task_never_acknowledged_nor_dead_lettered_is_lost() -> None:
    report = check(TASKS, [ev("deliver", 0.0, dc=1)], set(), [], lock_ms=1000, remaining=0)
    assert report.anomalies["lost"] == 1


def test_a_dead_lettered_task_is_not_lost() -> None:
    report = check(TASKS, [], {(0, 0)}, [], lock_ms=1000, remaining=0)
    assert report.anomalies["lost"] == 0


def test_two_applied_accepts_are_flagged() -> None:
    events = [ev("sent", 0.1, kind="accept"), ev("ok", 0.2, kind="accept"), ev("ok", 3.0, kind="accept", w="w1")]
    assert check(TASKS, events, set(), [], lock_ms=1000, remaining=0).anomalies["accepted_twice"] == 1


def test_redelivery_within_the_lock_without_release_or_crash_is_flagged() -> None:
    events = [ev("deliver", 0.0, dc=1), ev("deliver", 0.5, w="w1", dc=2), ev("sent", 0.6, kind="accept")]
    report = check(TASKS, events, set(), [], lock_ms=1000, remaining=0)
    assert report.anomalies["unjustified_redelivery"] == 1
    assert check(TASKS, events, set(), [0.3], lock_ms=1000, remaining=0).anomalies["unjustified_redelivery"] == 0


def test_redelivery_after_the_lock_or_a_release_is_fine() -> None:
    late = [ev("deliver", 0.0, dc=1), ev("deliver", 1.0, dc=2), ev("sent", 1.1, kind="accept")]
    released = [ev("deliver", 0.0, dc=1), ev("sent", 0.1, kind="release"), ev("deliver", 0.2, dc=2),
                ev("sent", 0.3, kind="accept")]
    for events in (late, released):
        assert check(TASKS, events, set(), [], lock_ms=1000, remaining=0).anomalies["unjustified_redelivery"] == 0


def test_a_delivery_count_going_back_is_flagged() -> None:
    events = [ev("deliver", 0.0, dc=2), ev("deliver", 2.0, dc=2), ev("sent", 2.1, kind="accept")]
    assert check(TASKS, events, set(), [], lock_ms=1000, remaining=0).anomalies["count_not_increasing"] == 1


def test_a_long_poll_asked_early_and_answered_late_is_no_anomaly() -> None:
    # w1's long poll was asked at 0.0 and answered at 0.4, after w0's delivery asked and
    # answered at 0.1 and its release: counts 1 then 2 in the order the broker handed them out
    events = [ev("deliver", 0.0, w="w1", dc=2, got=0.4), ev("deliver", 0.1, dc=1, got=0.1),
              ev("sent", 0.2, kind="release"), ev("sent", 0.5, w="w1", kind="accept")]
    report = check(TASKS, events, set(), [], lock_ms=1000, remaining=0)
    assert report.anomalies["count_not_increasing"] == 0 and report.anomalies["unjustified_redelivery"] == 0


def test_a_lower_count_asked_after_a_higher_one_was_answered_is_flagged() -> None:
    events = [ev("deliver", 0.0, dc=2, got=0.1), ev("deliver", 2.0, w="w1", dc=1, got=2.1),
              ev("sent", 2.2, w="w1", kind="accept")]
    assert check(TASKS, events, set(), [], lock_ms=1000, remaining=0).anomalies["count_not_increasing"] == 1


def test_an_answer_prefetched_before_a_crash_and_polled_after_it_is_fine() -> None:
    # w1 prefetched the task (count 1) at 0.0, the broker was killed at 0.2; the restarted
    # broker handed it to w0 (count 2) at 0.5; w1's poll returned the old answer only at 0.8
    events = [ev("deliver", 0.0, w="w1", dc=1, got=0.8), ev("deliver", 0.5, dc=2, got=0.5),
              ev("sent", 0.6, kind="accept"), ev("ok", 0.7, kind="accept")]
    report = check(TASKS, events, set(), [0.2], lock_ms=1000, remaining=0)
    assert not any(report.anomalies.values())
    assert check(TASKS, events, set(), [], lock_ms=1000, remaining=0).anomalies["unjustified_redelivery"] == 1


def test_records_left_at_the_end_are_flagged() -> None:
    assert check({}, [], set(), [], lock_ms=1000, remaining=3).anomalies["not_done"] == 1
