"""The torture checker on hand-written histories: each anomaly is detected, a clean history has
none, and what the definitions exclude (transaction markers, aborted records skipped by
read_committed, a new assignment, records a simulated power loss removed) is not counted."""

from __future__ import annotations

from typing import Any

from bench.torture.checker import ANOMALIES, check

T = "topic"


class History:
    """Events with increasing times."""

    def __init__(self, flush: str = "always") -> None:
        self.events: list[dict[str, Any]] = [{"t": 0.0, "type": "meta", "flush": flush}]
        self.t = 0.0

    def _add(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.t += 1.0
        event = {"t": self.t, "type": kind, **fields}
        self.events.append(event)
        return event

    def ack(self, value: str, offset: int, partition: int = 0, **fields: Any) -> None:
        self._add("send", process=value.rsplit("-", 1)[0], topic=T, partition=partition,
                  value=value, offset=offset, **fields)

    def fail(self, value: str, partition: int = 0, **fields: Any) -> None:
        self._add("send", process=value.rsplit("-", 1)[0], topic=T, partition=partition,
                  value=value, error="UNAVAILABLE: down", **fields)

    def txn(self, process: str, txn: int, outcome: str) -> None:
        self._add("txn", process=process, txn=txn, outcome=outcome)

    def poll(self, member: str, records: list[tuple[int, str]], *, tenure: int = 1,
             partition: int = 0, isolation: str = "read_uncommitted", group: str = "g",
             since: float | None = None) -> None:
        fields: dict[str, Any] = {"since": since} if since is not None else {}
        self._add("poll", process=member, member=member, group=group, isolation=isolation,
                  tenure=tenure, topic=T, partition=partition,
                  offsets=[o for o, _ in records], values=[v for _, v in records], **fields)

    def cut(self, offset: int, partition: int = 0) -> float:
        return self._add("cut", topic=T, partition=partition, offset=offset,
                         action="truncate")["t"]

    def counts(self) -> dict[str, int]:
        return check(self.events).counts

    def anomalies(self) -> dict[str, int]:
        counts = self.counts()
        return {name: counts[name] for name in ANOMALIES if counts[name]}


def test_a_clean_history_has_no_anomaly() -> None:
    history = History()
    for offset in range(4):
        history.ack(f"p0-{offset}", offset)
    history.poll("c0", [(0, "p0-0"), (1, "p0-1")])
    history.poll("c0", [(2, "p0-2"), (3, "p0-3")])
    assert history.anomalies() == {}
    counts = history.counts()
    assert (counts["acknowledged"], counts["read"], counts["unread"]) == (4, 4, 0)


def test_lost_write_acknowledged_never_read_though_a_later_offset_was() -> None:
    history = History()
    for offset in range(3):
        history.ack(f"p0-{offset}", offset)
    history.poll("c0", [(0, "p0-0")])
    history.poll("c1", [(2, "p0-2")], tenure=7)  # another member: not a skip, but 1 is lost
    assert history.anomalies() == {"lost_writes": 1}


def test_unread_at_the_end_is_a_figure_not_an_anomaly() -> None:
    history = History()
    history.ack("p0-0", 0)
    history.ack("p0-1", 1)
    history.poll("c0", [(0, "p0-0")])
    assert history.anomalies() == {}
    assert history.counts()["unread"] == 1


def test_a_higher_offset_read_before_the_acknowledgement_does_not_make_a_lost_write() -> None:
    history = History()
    history.ack("p0-0", 0)
    history.poll("c0", [(0, "p0-0"), (1, "p1-0")])
    history.ack("p1-0", 1)
    history.ack("p2-0", 2)  # acknowledged late, below nothing read afterwards
    history.ack("p2-1", 3)
    history.poll("c1", [(3, "p2-1")], tenure=2)
    assert history.anomalies() == {"lost_writes": 1}  # 2 was acknowledged before 3 was read


def test_duplicate_one_value_at_two_offsets() -> None:
    history = History()
    history.ack("p0-0", 0)
    history.ack("p0-1", 1)
    history.poll("c0", [(0, "p0-0"), (1, "p0-1"), (2, "p0-0")])
    assert history.anomalies() == {"duplicates": 1}


def test_inconsistent_offset_one_offset_with_two_values() -> None:
    history = History()
    history.ack("p0-0", 0)
    history.fail("p0-1")
    history.poll("c0", [(0, "p0-1")])
    assert history.anomalies() == {"inconsistent_offsets": 1}


def test_non_monotonic_within_one_poll() -> None:
    history = History()
    history.ack("p0-0", 0)
    history.ack("p0-1", 1)
    history.poll("c0", [(1, "p0-1"), (0, "p0-0")])
    assert history.anomalies() == {"non_monotonic_polls": 1}


def test_non_monotonic_a_poll_starting_below_the_previous_end() -> None:
    history = History()
    for offset in range(3):
        history.ack(f"p0-{offset}", offset)
    history.poll("c0", [(0, "p0-0"), (1, "p0-1")])
    history.poll("c0", [(1, "p0-1"), (2, "p0-2")])
    assert history.anomalies() == {"non_monotonic_polls": 1}


def test_re_delivery_after_a_new_assignment_is_not_non_monotonic() -> None:
    history = History()
    for offset in range(3):
        history.ack(f"p0-{offset}", offset)
    history.poll("c0", [(0, "p0-0"), (1, "p0-1")], tenure=1)
    history.poll("c0", [(1, "p0-1"), (2, "p0-2")], tenure=2)  # at-least-once after a rebalance
    assert history.anomalies() == {}


def test_skipped_offsets_between_polls_and_inside_one() -> None:
    history = History()
    for offset in range(6):
        history.ack(f"p0-{offset}", offset)
    history.poll("c0", [(0, "p0-0"), (1, "p0-1")])
    history.poll("c0", [(3, "p0-3"), (5, "p0-5")])  # skips 2, then 4
    assert history.anomalies() == {"skipped_offsets": 2, "lost_writes": 2}
    history.poll("c1", [(2, "p0-2"), (3, "p0-3"), (4, "p0-4")], tenure=2)  # the group has them
    assert history.anomalies() == {"skipped_offsets": 2}


def test_offsets_nobody_saw_are_not_skips() -> None:
    history = History()
    history.ack("p0-0", 0)
    history.ack("p0-1", 2)  # 1 is a transaction marker, say
    history.poll("c0", [(0, "p0-0")])
    history.poll("c0", [(2, "p0-1")])
    history.poll("c1", [(0, "p0-0"), (2, "p0-1")], tenure=2)
    assert history.anomalies() == {}


def test_aborted_read_by_read_committed() -> None:
    history = History()
    history.ack("t0-0", 0, txn=1)
    history.txn("t0", 1, "abort")
    history.poll("r0", [(0, "t0-0")], isolation="read_committed", group="rc")
    assert history.anomalies() == {"aborted_reads": 1}


def test_read_committed_skips_aborted_records_and_markers() -> None:
    history = History()
    history.ack("t0-0", 0, txn=1)
    history.txn("t0", 1, "commit")  # marker at 1
    history.ack("t0-1", 2, txn=2)
    history.txn("t0", 2, "abort")  # marker at 3
    history.ack("t0-2", 4, txn=3)
    history.txn("t0", 3, "commit")
    history.poll("c0", [(0, "t0-0"), (2, "t0-1"), (4, "t0-2")])
    history.poll("r0", [(0, "t0-0")], isolation="read_committed", group="rc")
    history.poll("r0", [(4, "t0-2")], isolation="read_committed", group="rc")
    assert history.anomalies() == {}
    assert history.counts()["transactions_aborted"] == 1


def test_read_committed_skipping_a_committed_record_is_caught() -> None:
    history = History()
    for index in range(3):
        history.ack(f"t0-{index}", 2 * index, txn=index)
        history.txn("t0", index, "commit")
    history.poll("r0", [(0, "t0-0")], isolation="read_committed", group="rc")
    history.poll("r0", [(4, "t0-2")], isolation="read_committed", group="rc")
    assert history.anomalies() == {"skipped_offsets": 1, "lost_writes": 1}


def test_read_committed_skips_a_record_whose_answer_was_lost_with_its_transaction() -> None:
    # appended, then the broker died before answering; the retry was fenced and the
    # transaction ended unknown to the producer (the restarted broker aborted it)
    history = History()
    history.ack("t0-0", 0, txn=1)
    history.txn("t0", 1, "commit")
    history.fail("t0-1", txn=2)
    history.txn("t0", 2, "unknown")
    history.ack("t0-2", 3, txn=3)
    history.txn("t0", 3, "commit")
    history.poll("c0", [(0, "t0-0"), (1, "t0-1"), (3, "t0-2")])
    history.poll("r0", [(0, "t0-0")], isolation="read_committed", group="rc")
    history.poll("r0", [(3, "t0-2")], isolation="read_committed", group="rc")
    assert history.anomalies() == {}


def test_phantom_a_value_nobody_sent() -> None:
    history = History()
    history.ack("p0-0", 0)
    history.poll("c0", [(0, "p0-0"), (1, "p0-7")])
    assert history.anomalies() == {"phantom_reads": 1}


def test_a_cut_makes_new_slots_not_inconsistencies() -> None:
    history = History()
    history.ack("p0-0", 0)
    history.fail("p0-1")
    history.poll("c0", [(0, "p0-0"), (1, "p0-1")])  # read, never acknowledged ...
    history.cut(1)  # ... and lost with the page cache
    history.ack("p1-0", 1)
    history.ack("p0-1", 2)  # the retry lands elsewhere
    history.poll("c1", [(1, "p1-0"), (2, "p0-1")], tenure=2)
    assert history.anomalies() == {}
    assert history.counts()["reads_cut"] == 1


def test_acknowledged_records_a_cut_removed_are_lost_with_flush_always_only() -> None:
    for flush, expected in (("always", {"lost_writes": 1}), ("never", {})):
        history = History(flush)
        history.ack("p0-0", 0)
        history.ack("p0-1", 1)
        history.cut(1)
        history.ack("p1-0", 1)
        history.poll("c0", [(0, "p0-0"), (1, "p1-0")])
        assert history.anomalies() == expected, flush
        assert history.counts()["cut_acknowledged"] == 1


def test_records_fetched_before_a_cut_and_returned_after_it_keep_their_generation() -> None:
    history = History()
    history.ack("p0-0", 0)
    history.poll("c0", [(0, "p0-0")])
    before_kill = history.t
    history.fail("p0-1")
    history.cut(1)
    history.ack("p1-0", 1)
    # c0 had fetched offset 1 (p0-1) before the kill; its next poll returns it after the restart
    history.poll("c0", [(1, "p0-1")], since=before_kill)
    history.poll("c1", [(1, "p1-0")], tenure=2)
    assert history.anomalies() == {}
    # without the fetch window the same read contradicts the acknowledgement
    history.events[-2].pop("since")
    assert history.anomalies() == {"inconsistent_offsets": 1}
