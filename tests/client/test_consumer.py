"""Consumer against a real broker: poll, columns, seeks, auto_offset_reset, iteration."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from logstore.client import Consumer, ConsumerRecord, Producer, TopicPartition
from logstore.errors import InvalidRequestError, OffsetOutOfRangeError

Topic = Callable[..., str]


def fill(server: str, topic: str, count: int, *, partition: int = 0, start_ms: int = 1_000_000,
         step_ms: int = 10) -> None:
    """``count`` records v0, v1, ... with timestamps start_ms, start_ms + step_ms, ..."""
    with Producer(server) as producer:
        producer.send_batch(topic, [b"v%d" % i for i in range(count)], partition=partition,
                            keys=[b"k%d" % i for i in range(count)],
                            timestamps=np.arange(count) * step_ms + start_ms).result(20)


FETCH_MODE = "subscribe"


@pytest.fixture(autouse=True, params=["subscribe", "fetch"])
def fetch_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs over Subscribe streams and over long-poll Fetch."""
    global FETCH_MODE
    FETCH_MODE = request.param
    yield request.param
    FETCH_MODE = "subscribe"


def consumer_on(server: str, topic: str, **options: object) -> Consumer:
    options.setdefault("fetch_max_wait_ms", 100)
    options.setdefault("fetch_mode", FETCH_MODE)
    consumer = Consumer(server, **options)
    consumer.assign([TopicPartition(topic, 0)])
    return consumer


def drain(consumer: Consumer, count: int, timeout: float = 10.0) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        records += consumer.poll(timeout=0.5)
    return records


def test_poll_returns_consumer_records(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 3)
    with consumer_on(server, topic, auto_offset_reset="earliest") as consumer:
        records = drain(consumer, 3)
    assert records[0] == ConsumerRecord(topic, 0, 0, 1_000_000, b"k0", b"v0", ())
    assert [r.offset for r in records] == [0, 1, 2]


def test_poll_returns_at_most_max_records(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 10)
    with consumer_on(server, topic, auto_offset_reset="earliest") as consumer:
        first = consumer.poll(max_records=4, timeout=5)
        assert [r.offset for r in first] == [0, 1, 2, 3]
        assert consumer.position((topic, 0)) == 4
        rest = drain(consumer, 6)
    assert [r.offset for r in rest] == list(range(4, 10))


def test_poll_columns_gives_numpy_offsets_and_views_of_values(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 1000)
    with consumer_on(server, topic, auto_offset_reset="earliest") as consumer:
        got: dict[int, bytes] = {}
        deadline = time.monotonic() + 10
        while len(got) < 1000 and time.monotonic() < deadline:
            for tp, columns in consumer.poll_columns(timeout=0.5).items():
                assert tp == TopicPartition(topic, 0)
                assert columns.offsets.dtype == np.int64 and columns.timestamps.dtype == np.int64
                values = columns.values()
                assert all(isinstance(v, memoryview) for v in values)
                assert (columns.timestamps == columns.offsets * 10 + 1_000_000).all()
                got.update(zip(columns.offsets.tolist(), map(bytes, values), strict=True))
    assert got == {i: b"v%d" % i for i in range(1000)}


def test_seek_to_an_offset(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 20)
    with consumer_on(server, topic, auto_offset_reset="earliest") as consumer:
        consumer.seek(TopicPartition(topic, 0), 15)
        assert [r.offset for r in drain(consumer, 5)] == [15, 16, 17, 18, 19]
        consumer.seek(0, 3)  # a bare partition number: one topic is assigned
        assert consumer.poll(max_records=1, timeout=5)[0].offset == 3


def test_seek_while_a_fetch_is_in_flight(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 50)
    with consumer_on(server, topic, auto_offset_reset="earliest") as consumer:
        assert consumer.poll(max_records=1, timeout=5)[0].offset == 0  # the next fetch goes out
        consumer.seek((topic, 0), 40)
        assert [r.offset for r in drain(consumer, 10)] == list(range(40, 50))


def test_seek_to_beginning_and_end(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 5)
    with consumer_on(server, topic, auto_offset_reset="latest") as consumer:
        consumer.seek_to_beginning()
        assert consumer.position((topic, 0)) == 0
        assert len(drain(consumer, 5)) == 5
        consumer.seek_to_end()
        assert consumer.position((topic, 0)) == 5
        assert consumer.poll(timeout=0.3) == []
        with Producer(server) as producer:
            producer.send(topic, b"new", partition=0)
        assert [r.value for r in drain(consumer, 1)] == [b"new"]


def test_seek_to_timestamp(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 10, start_ms=1_000_000, step_ms=1000)  # 1000 s, 1001 s, ...
    with consumer_on(server, topic, auto_offset_reset="earliest") as consumer:
        consumer.seek_to_timestamp(1_004_500)
        assert consumer.position((topic, 0)) == 5
        consumer.seek_to_timestamp(datetime.datetime.fromtimestamp(1003, tz=datetime.UTC))
        assert consumer.poll(max_records=1, timeout=5)[0].offset == 3
        consumer.seek_to_timestamp(2_000_000_000)  # newer than every record: the end
        assert consumer.position((topic, 0)) == 10


def test_auto_offset_reset_earliest_starts_at_the_log_start(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 3)
    with consumer_on(server, topic, auto_offset_reset="earliest") as consumer:
        assert consumer.position((topic, 0)) == 0


def test_auto_offset_reset_latest_starts_at_the_end(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 3)
    with consumer_on(server, topic, auto_offset_reset="latest") as consumer:
        assert consumer.position((topic, 0)) == 3
        assert consumer.poll(timeout=0.3) == []


def test_auto_offset_reset_error_needs_a_seek(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 3)
    with consumer_on(server, topic, auto_offset_reset="error") as consumer:
        with pytest.raises(InvalidRequestError, match="seek"):
            consumer.poll(timeout=1)
        consumer.seek((topic, 0), 1)
        assert [r.offset for r in drain(consumer, 2)] == [1, 2]


@pytest.mark.parametrize(("reset", "expected"), [("earliest", [0, 1, 2]), ("latest", [])])
def test_an_out_of_range_position_is_reset(server: str, new_topic: Topic, reset: str,
                                           expected: list[int]) -> None:
    topic = new_topic()
    fill(server, topic, 3)
    with consumer_on(server, topic, auto_offset_reset=reset) as consumer:
        consumer.seek((topic, 0), 100)
        records = consumer.poll(timeout=1) + consumer.poll(timeout=1)
        assert [r.offset for r in records] == expected
        assert consumer.position((topic, 0)) == 3


def test_an_out_of_range_position_raises_with_reset_error(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 3)
    with consumer_on(server, topic, auto_offset_reset="error") as consumer:
        consumer.seek((topic, 0), 100)
        with pytest.raises(OffsetOutOfRangeError) as caught:
            for _ in range(10):
                consumer.poll(timeout=1)
        assert (caught.value.offset, caught.value.log_end_offset) == (100, 3)
        consumer.seek((topic, 0), 2)  # a seek clears it
        assert [r.offset for r in drain(consumer, 1)] == [2]


def test_assign_a_topic_takes_every_partition(server: str, new_topic: Topic) -> None:
    topic = new_topic(3)
    with Consumer(server) as consumer:
        consumer.assign(topic)
        assert consumer.assignment() == [TopicPartition(topic, p) for p in range(3)]
        consumer.assign([TopicPartition(topic, 1)])
        assert consumer.assignment() == [TopicPartition(topic, 1)]


def test_polling_without_an_assignment_fails(server: str) -> None:
    with Consumer(server) as consumer, pytest.raises(InvalidRequestError):
        consumer.poll(timeout=0.1)


def test_iteration_stops_after_consumer_timeout(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    fill(server, topic, 25)
    with consumer_on(server, topic, auto_offset_reset="earliest",
                     consumer_timeout_ms=500) as consumer:
        started = time.monotonic()
        records = list(consumer)
    assert [r.offset for r in records] == list(range(25))
    assert time.monotonic() - started < 10


def test_a_long_poll_returns_as_soon_as_a_record_arrives(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    with consumer_on(server, topic, auto_offset_reset="latest", fetch_max_wait_ms=5000) as consumer:
        consumer.position((topic, 0))
        timer = threading.Timer(0.3, _send_one, (server, topic))
        timer.start()
        started = time.monotonic()
        records = consumer.poll(timeout=10)
        elapsed = time.monotonic() - started
        timer.join()
    assert [r.value for r in records] == [b"wake"]
    assert elapsed < 4


def _send_one(server: str, topic: str) -> None:
    with Producer(server) as producer:
        producer.send(topic, b"wake", partition=0)


def test_group_calls_need_a_group_id(server: str) -> None:
    with Consumer(server) as consumer:
        with pytest.raises(InvalidRequestError):
            consumer.subscribe(["t"])
        with pytest.raises(InvalidRequestError):
            consumer.commit()
        with pytest.raises(InvalidRequestError):
            consumer.group_metadata()
