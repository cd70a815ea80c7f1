"""Consumer groups: joining, server-side assignment, rebalances that move only the partitions
that must move (watched through ``on_assign``/``on_revoke`` of consumers polling in threads),
static members, and eviction (``on_lost``)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest

from logstore.client import Admin, Consumer, Producer, TopicPartition
from logstore.errors import InvalidRequestError

Topic = Callable[..., str]
Event = tuple[float, str, str, tuple[TopicPartition, ...]]


def group_name() -> str:
    return f"group-{uuid.uuid4().hex[:8]}"


class Member:
    """A consumer polling in its own thread, logging its rebalance callbacks."""

    def __init__(self, server: str, group: str, topic: str, name: str, log: list[Event],
                 lock: threading.Lock, **options: object) -> None:
        self.name = name
        self.log = log
        self.lock = lock
        self.consumer = Consumer(server, group_id=group, fetch_max_wait_ms=50, **options)
        self.consumer.subscribe(
            [topic],
            on_assign=lambda parts: self._note("assign", parts),
            on_revoke=lambda parts: self._note("revoke", parts),
            on_lost=lambda parts: self._note("lost", parts),
        )
        self.owned: set[TopicPartition] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _note(self, kind: str, parts: list[TopicPartition]) -> None:
        with self.lock:
            self.log.append((time.monotonic(), self.name, kind, tuple(parts)))
            if kind == "assign":
                self.owned |= set(parts)
            else:
                self.owned -= set(parts)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.consumer.poll(timeout=0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def never_shared(log: list[Event]) -> None:
    """Replaying the callbacks in order, no partition is ever held by two members."""
    holder: dict[TopicPartition, str] = {}
    for _, name, kind, parts in sorted(log):
        for tp in parts:
            if kind == "assign":
                assert tp not in holder, f"{tp} given to {name} while {holder.get(tp)} holds it"
                holder[tp] = name
            else:
                assert holder.pop(tp, None) == name


def test_a_lone_member_gets_every_partition(server: str, new_topic: Topic) -> None:
    topic = new_topic(4)
    assigned: list[list[TopicPartition]] = []
    with Consumer(server, group_id=group_name()) as consumer:
        consumer.subscribe(topic, on_assign=assigned.append)
        deadline = time.monotonic() + 10
        while len(consumer.assignment()) < 4 and time.monotonic() < deadline:
            consumer.poll(timeout=0.2)
        assert sorted(consumer.assignment()) == [TopicPartition(topic, p) for p in range(4)]
    assert assigned == [[TopicPartition(topic, p) for p in range(4)]]


def test_joining_and_leaving_members_move_only_the_partitions_that_must_move(
    server: str, new_topic: Topic
) -> None:
    topic = new_topic(6)
    group = group_name()
    log: list[Event] = []
    lock = threading.Lock()

    def revokes_since(mark: int, *names: str) -> int:
        with lock:
            return sum(len(parts) for _, name, kind, parts in log[mark:]
                       if name in names and kind == "revoke")

    a = Member(server, group, topic, "a", log, lock)
    wait_until(lambda: len(a.owned) == 6)
    a1 = set(a.owned)
    mark = len(log)
    b = Member(server, group, topic, "b", log, lock)
    wait_until(lambda: len(a.owned) == 3 and len(b.owned) == 3)
    a2, b2 = set(a.owned), set(b.owned)
    assert a2 <= a1 and revokes_since(mark, "a") == 3  # a gave up exactly what b got
    mark = len(log)
    c = Member(server, group, topic, "c", log, lock)
    wait_until(lambda: (len(a.owned), len(b.owned), len(c.owned)) == (2, 2, 2))
    a3, c3 = set(a.owned), set(c.owned)
    assert a3 <= a2 and set(b.owned) <= b2  # c got one from each, nothing else moved
    assert revokes_since(mark, "a", "b") == 2
    mark = len(log)
    b.close()
    wait_until(lambda: len(a.owned) == len(c.owned) == 3)
    assert a3 <= a.owned and c3 <= c.owned  # only b's partitions moved
    assert revokes_since(mark, "a", "c") == 0
    a.close()
    c.close()
    never_shared(log)


def test_describe_group_shows_members_and_their_assignment(server: str, admin: Admin,
                                                           new_topic: Topic) -> None:
    topic = new_topic(2)
    group = group_name()
    with Consumer(server, group_id=group) as consumer:
        consumer.subscribe([topic])
        wait_until(lambda: len(consumer.poll(timeout=0.1)) >= 0 and len(consumer.assignment()) == 2)
        description = admin.describe_group(group)
        (member,) = description.members
        assert member.member_id == consumer.group_metadata().member_id
        assert sorted(member.assignment) == [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        assert member.topics == [topic]
        assert description.state == "stable"
    assert admin.describe_group(group).members == []  # close() left the group at once


def test_a_static_member_that_comes_back_keeps_its_partitions(server: str, admin: Admin,
                                                              new_topic: Topic) -> None:
    topic = new_topic(2)
    group = group_name()
    first = Consumer(server, group_id=group, group_instance_id="pod-1")
    first.subscribe([topic])
    wait_until(lambda: len(first.poll(timeout=0.1)) >= 0 and len(first.assignment()) == 2)
    first.close()  # a static member leaves "for now": its partitions stay reserved
    assert len(admin.describe_group(group).members) == 1
    assigned: list[list[TopicPartition]] = []
    with Consumer(server, group_id=group, group_instance_id="pod-1") as second:
        second.subscribe([topic], on_assign=assigned.append)
        second.poll(timeout=1.0)
        assert sorted(second.assignment()) == [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    assert assigned == [[TopicPartition(topic, 0), TopicPartition(topic, 1)]]


def test_a_member_that_stops_polling_is_evicted_and_told_it_lost_its_partitions(
    server: str, new_topic: Topic
) -> None:
    topic = new_topic(1)
    group = group_name()
    events: list[tuple[str, list[TopicPartition]]] = []
    with Producer(server) as producer:
        producer.send(topic, b"one", partition=0).result(10)
    with Consumer(server, group_id=group, auto_offset_reset="earliest",
                  max_poll_interval_ms=400, enable_auto_commit=True,
                  auto_commit_interval_ms=0) as consumer:
        consumer.subscribe([topic], on_assign=lambda p: events.append(("assign", p)),
                           on_revoke=lambda p: events.append(("revoke", p)),
                           on_lost=lambda p: events.append(("lost", p)))
        deadline = time.monotonic() + 10
        records = []
        while not records and time.monotonic() < deadline:
            records = consumer.poll(timeout=0.2)
        assert [r.value for r in records] == [b"one"]
        time.sleep(1.5)  # no poll for longer than max_poll_interval_ms: the broker evicts it
        deadline = time.monotonic() + 10
        while ("lost", [TopicPartition(topic, 0)]) not in events and time.monotonic() < deadline:
            consumer.poll(timeout=0.2)
        while len(events) < 3 and time.monotonic() < deadline:  # it rejoins and gets it back
            consumer.poll(timeout=0.2)
        assert consumer.committed([TopicPartition(topic, 0)]) == {TopicPartition(topic, 0): None}
    tp = [TopicPartition(topic, 0)]
    assert events == [("assign", tp), ("lost", tp), ("assign", tp), ("revoke", tp)]  # + close


def test_subscribe_needs_a_group_and_does_not_mix_with_assign(server: str,
                                                              new_topic: Topic) -> None:
    topic = new_topic(1)
    with Consumer(server) as consumer, pytest.raises(InvalidRequestError):
        consumer.subscribe([topic])
    with Consumer(server, group_id=group_name()) as consumer:
        consumer.assign(topic)
        with pytest.raises(InvalidRequestError):
            consumer.subscribe([topic])
    with Consumer(server, group_id=group_name()) as consumer:
        consumer.subscribe([topic])
        with pytest.raises(InvalidRequestError):
            consumer.assign(topic)


def test_a_subscription_to_a_topic_created_later_is_picked_up(server: str, admin: Admin) -> None:
    topic = f"later-{uuid.uuid4().hex[:6]}"
    with Consumer(server, group_id=group_name()) as consumer:
        consumer.subscribe([topic])
        assert consumer.poll(timeout=0.3) == []
        admin.create_topic(topic, 2)
        deadline = time.monotonic() + 10
        while len(consumer.assignment()) < 2 and time.monotonic() < deadline:
            consumer.poll(timeout=0.2)
        assert len(consumer.assignment()) == 2
