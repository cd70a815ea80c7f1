"""``ShareConsumer`` (queue mode) against a real broker: poll and acknowledge, locks, release
with delay, dead letters, refusals, leaving, iteration, the asyncio twin and the share admin."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from logstore.client import Admin, AsyncShareConsumer, Producer, ShareConsumer
from logstore.errors import RecordNotAcquiredError, UnavailableError
from tests.broker_fixture import free_port
from tests.client.helpers import read_all

Topic = Callable[..., str]


def group_name() -> str:
    return f"share-{uuid.uuid4().hex[:8]}"


def fill(server: str, topic: str, count: int, partition: int = 0, size: int = 1) -> None:
    """``count`` records in batches of ``size``."""
    with Producer(server) as producer:
        for start in range(0, count, size):
            values = [b"task-%d" % i for i in range(start, min(count, start + size))]
            producer.send_batch(topic, values, partition=partition).result(10)


def test_accepted_records_are_not_delivered_again(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 5, size=5)
    with ShareConsumer(server, group, topic) as consumer:
        records = consumer.poll(timeout=5)
        assert [r.value for r in records] == [b"task-%d" % i for i in range(5)]
        assert {r.delivery_count for r in records} == {1}
        for record in records:
            record.ack()
        consumer.commit()
    with ShareConsumer(server, group, topic) as other:
        assert other.poll(timeout=0.2) == []


def test_connect_acquires_nothing_and_opens_the_stream(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 2, size=2)
    with ShareConsumer(server, group, topic) as consumer, ShareConsumer(server, group, topic) as other:
        consumer.connect(timeout=5)
        assert consumer._stream is not None and not consumer._stream.broken
        assert len(other.poll(timeout=5)) == 2  # nothing was held by the connected consumer
        other.commit()


def test_connect_leaves_no_thread_running(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    with ShareConsumer(server, group, topic) as consumer:
        before = set(threading.enumerate())
        consumer.connect(timeout=5)
        # (grpc.channel_ready_future left a connectivity-polling thread running for up to 0.2 s)
        assert set(threading.enumerate()) - before == set()


def test_connect_to_no_broker_is_unavailable() -> None:
    consumer = ShareConsumer(f"127.0.0.1:{free_port()}", group_name(), "t")
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="no connection within 0.2 s"):
        consumer.connect(timeout=0.2)
    assert time.monotonic() - started < 2
    with pytest.raises(UnavailableError):  # (close sends the leave, which cannot go either)
        consumer.close()


def test_unary_polls_work_like_the_stream(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 3, size=3)
    with ShareConsumer(server, group, topic, stream=False) as consumer:
        records = consumer.poll(timeout=5)
        consumer.acknowledge(records)
        assert consumer.poll(timeout=0) == [] and consumer.pending == 0
    with ShareConsumer(server, group, topic) as other:
        assert other.poll(timeout=0.2) == []


def test_more_consumers_than_partitions_all_get_work(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 6)
    consumers = [ShareConsumer(server, group, topic, max_records=2) for _ in range(3)]
    try:
        got = [c.poll(timeout=5) for c in consumers]
        assert [len(g) for g in got] == [2, 2, 2]
        assert sorted(r.offset for g in got for r in g) == list(range(6))
    finally:
        for c in consumers:
            c.close()


def test_an_expired_lock_redelivers_to_another_consumer(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 1)
    first = ShareConsumer(server, group, topic, lock_ms=300)
    (record,) = first.poll(timeout=5)
    with ShareConsumer(server, group, topic) as second:
        started = time.monotonic()
        (again,) = second.poll(timeout=5)  # the long poll wakes when the lock expires
        assert time.monotonic() - started < 2.0
        assert (again.offset, again.delivery_count) == (record.offset, 2)
        again.ack()
        second.commit()
    record.ack()
    with pytest.raises(RecordNotAcquiredError) as info:
        first.commit()
    assert info.value.offset == record.offset
    first.close()


def test_release_with_delay_comes_back_after_it(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 1)
    with ShareConsumer(server, group, topic) as consumer:
        (record,) = consumer.poll(timeout=5)
        record.release(delay_ms=400)
        released = time.monotonic()
        assert consumer.poll(timeout=0.1) == []
        (again,) = consumer.poll(timeout=5)
        assert time.monotonic() - released >= 0.35
        assert again.delivery_count == 2
        again.ack()


def test_reject_goes_to_the_dead_letter_topic(server: str, admin: Admin, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    admin.alter_share_group_config(group, {"dead_letter_topic": f"{topic}.dlq"})
    with Producer(server) as producer:
        producer.send(topic, b"poison", key=b"k", headers=[("trace", b"t1")], partition=0).result(10)
    with ShareConsumer(server, group, topic) as consumer:
        (record,) = consumer.poll(timeout=5)
        record.reject(error="cannot parse")
        consumer.commit()
    (dead,) = read_all(server, f"{topic}.dlq", 1)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (b"k", b"poison")
    assert headers["trace"] == b"t1" and headers["last_error"] == b"cannot parse"
    assert (headers["topic"], headers["offset"], headers["delivery_count"]) == (topic.encode(), b"0", b"1")


def test_close_returns_held_records_at_once(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 3, size=3)
    with ShareConsumer(server, group, topic) as consumer:
        records = consumer.poll(timeout=5)
        records[0].ack()
    with ShareConsumer(server, group, topic) as other:
        assert [r.offset for r in other.poll(timeout=5)] == [1, 2]


def test_prefetch_keeps_the_next_batch_acquired_while_acks_ride_the_polls(
        server: str, admin: Admin, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 6)
    with ShareConsumer(server, group, topic, max_records=2, prefetch=1) as consumer:
        seen = []
        while len(seen) < 6:
            records = consumer.poll(timeout=5)
            assert records and len(records) <= 2
            for record in records:
                record.ack()
            seen += [r.offset for r in records]
            if len(seen) == 2:  # this batch in hand, the next one acquired ahead
                assert admin.describe_share_group(group).partitions[0].acquired == 4
        assert seen == list(range(6))
        consumer.commit()
        state = admin.describe_share_group(group).partitions[0]
        assert (state.start_offset, state.acquired) == (6, 0)  # all accepted


def test_close_returns_prefetched_records_at_once(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 4)
    with ShareConsumer(server, group, topic, max_records=2, prefetch=1, lock_ms=60_000) as consumer:
        assert [r.offset for r in consumer.poll(timeout=5)] == [0, 1]
    with ShareConsumer(server, group, topic) as other:
        assert sorted(r.offset for r in other.poll(timeout=5)) == [0, 1, 2, 3]


def test_prefetch_needs_the_stream() -> None:
    with pytest.raises(ValueError, match="prefetch needs stream=True"):
        ShareConsumer("127.0.0.1:1", "g", "t", prefetch=1, stream=False)
    with pytest.raises(ValueError, match="prefetch must be within 0..16"):
        ShareConsumer("127.0.0.1:1", "g", "t", prefetch=17)


def test_acks_appended_while_taken_are_never_lost() -> None:
    from logstore.client.share import Accepted

    accepted = Accepted(None)  # type: ignore[arg-type]
    stop = threading.Event()
    appended = 0

    def ack_all() -> None:
        nonlocal appended
        while not stop.is_set():
            for _ in range(100):
                accepted.offsets.append(appended)  # what record.ack() does
                appended += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        thread = threading.Thread(target=ack_all)
        thread.start()
        taken: list[int] = []
        for _ in range(300):  # takes while the other thread appends (however it is scheduled)
            taken += accepted.taken()
            time.sleep(0)
        stop.set()
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    taken += accepted.taken()
    assert appended > 0 and taken == list(range(appended))


def test_acknowledge_many_with_one_kind(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(2), group_name()
    fill(server, topic, 4, partition=0, size=4)
    fill(server, topic, 4, partition=1, size=4)
    with ShareConsumer(server, group, topic) as consumer:
        records = consumer.poll(timeout=5)
        for _ in range(5):  # both partitions usually come in one poll; never wait on an empty one
            if len(records) >= 8:
                break
            records += consumer.poll(timeout=5)
        assert len(records) == 8
        consumer.acknowledge(records, "accept")
        assert consumer.pending == 8
        consumer.commit()
        assert consumer.pending == 0
    with Admin(server) as admin:
        states = admin.describe_share_group(group).partitions
        assert [(s.start_offset, s.acquired) for s in states] == [(4, 0), (4, 0)]


def test_iteration_yields_records_as_they_come(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 3)
    seen = []
    with ShareConsumer(server, group, topic) as consumer:
        for record in consumer:
            seen.append(record.offset)
            record.ack()
            if len(seen) == 3:
                break
    assert seen == [0, 1, 2]


def test_async_share_consumer(server: str, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 2, size=2)

    async def body() -> list[int]:
        async with AsyncShareConsumer(server, group, topic) as consumer:
            await consumer.connect(timeout=5)
            records = await consumer.poll(timeout=5)
            for record in records:
                record.ack()
            await consumer.commit()
            return [r.offset for r in records]

    assert asyncio.run(body()) == [0, 1]


def test_admin_lists_describes_and_resets(server: str, admin: Admin, new_topic: Topic) -> None:
    topic, group = new_topic(1), group_name()
    fill(server, topic, 5, size=5)
    with ShareConsumer(server, group, topic, max_records=2) as consumer:
        consumer.poll(timeout=5)
        description = admin.describe_share_group(group)
        (state,) = description.partitions
        assert (state.acquired, state.available, state.log_end_offset) == (2, 3, 5)
        assert group in {g.group_id for g in admin.list_share_groups()}
    (state,) = admin.reset_share_group(group, topic, to=3)
    assert state.start_offset == 3
