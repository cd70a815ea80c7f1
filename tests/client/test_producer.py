"""Producer against a real broker: send, send_batch, partitioning, codecs, acks, errors."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from logstore.client import Admin, BatchMetadata, Producer, RecordMetadata, TopicPartition
from logstore.client.partitioner import partition_for_key
from logstore.errors import (
    BatchTooLargeError,
    UnavailableError,
    UnknownPartitionError,
    UnknownTopicError,
)
from tests.client.helpers import by_partition, read_all

Topic = Callable[..., str]


def test_send_round_trips_value_key_headers_and_timestamp(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    with Producer(server) as producer:
        metadata = producer.send(topic, b"value", key=b"key", headers=[("h", b"1"), ("n", None)],
                                 timestamp=1_700_000_000_000).result(10)
    assert metadata == RecordMetadata(0, 0)
    record, = read_all(server, topic, 1)
    assert (record.topic, record.partition, record.offset) == (topic, 0, 0)
    assert (record.key, record.value, record.timestamp) == (b"key", b"value", 1_700_000_000_000)
    assert record.headers == (("h", b"1"), ("n", None))


def test_send_null_value_and_str_values(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    with Producer(server) as producer:
        producer.send(topic, None, key=b"tombstone")
        producer.send(topic, "text", key="k")
    records = read_all(server, topic, 2)
    assert [(r.key, r.value) for r in records] == [(b"tombstone", None), (b"k", b"text")]


def test_default_timestamps_are_the_send_time(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    before = time.time() * 1000
    with Producer(server, linger_ms=0) as producer:
        producer.send(topic, b"v").result(10)
    after = time.time() * 1000
    record, = read_all(server, topic, 1)
    assert before - 5 <= record.timestamp <= after + 5


def test_futures_of_one_partition_get_consecutive_offsets(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    with Producer(server) as producer:
        futures = [producer.send(topic, b"%d" % i, partition=0) for i in range(2000)]
        producer.flush()
        assert all(future.done() for future in futures)
    assert [f.result().offset for f in futures] == list(range(2000))


def test_keyed_records_go_to_the_murmur2_partition_in_order(server: str, new_topic: Topic) -> None:
    topic = new_topic(4)
    keys = [b"user-%d" % (i % 10) for i in range(300)]
    with Producer(server) as producer:
        futures = [producer.send(topic, b"%d" % i, key=key) for i, key in enumerate(keys)]
        producer.flush()
    for key, future in zip(keys, futures, strict=True):
        assert future.result().partition == partition_for_key(key, 4)
    records = read_all(server, topic, 300)
    for key in set(keys):
        sequence = [int(r.value or b"") for r in records if r.key == key]
        assert sequence == sorted(sequence) and len(sequence) == 30


def test_keyless_records_spread_over_partitions_batch_by_batch(server: str, new_topic: Topic) -> None:
    topic = new_topic(3)
    with Producer(server, batch_bytes=2000) as producer:
        futures = [producer.send(topic, b"x" * 100) for _ in range(300)]
        producer.flush()
    partitions = [f.result().partition for f in futures]
    runs = sum(1 for a, b in zip(partitions, partitions[1:], strict=False) if a != b) + 1
    assert len(set(partitions)) > 1
    assert runs < 60  # whole batches stick to one partition, not every record


def test_send_batch_of_a_list(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    values = [b"value-%d" % i for i in range(10_000)]
    with Producer(server, batch_bytes=64 << 10) as producer:
        batches = producer.send_batch(topic, values, partition=0).result(20)
    assert len(batches) > 1
    assert batches[0] == BatchMetadata(0, 0, batches[0].last_offset)
    assert batches[-1].last_offset == 9999
    assert all(b.base_offset == a.last_offset + 1 for a, b in zip(batches, batches[1:], strict=False))
    assert [r.value for r in read_all(server, topic, 10_000)] == values


def test_send_batch_of_lengths_and_a_blob_with_keys(server: str, new_topic: Topic) -> None:
    topic = new_topic(3)
    values = [b"v" * (i % 17) for i in range(500)]
    keys = [b"k%d" % (i % 5) for i in range(500)]
    lengths = np.array([len(v) for v in values], dtype=np.int32)
    key_lengths = np.array([len(k) for k in keys], dtype=np.int32)
    with Producer(server) as producer:
        batches = producer.send_batch(topic, (lengths, b"".join(values)),
                                      keys=(key_lengths, b"".join(keys))).result(20)
    assert sum(b.last_offset - b.base_offset + 1 for b in batches) == 500
    records = read_all(server, topic, 500)
    for partition, got in by_partition(records).items():
        expected = [(k, v) for k, v in zip(keys, values, strict=True)
                    if partition_for_key(k, 3) == partition]
        assert [(r.key, r.value) for r in got] == expected


def test_send_batch_of_a_2d_array(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    array = np.arange(100 * 100, dtype=np.uint32).astype(np.uint8).reshape(100, 100)
    with Producer(server) as producer:
        producer.send_batch(topic, array, partition=0, timestamps=5000).result(20)
    records = read_all(server, topic, 100)
    assert [r.value for r in records] == [row.tobytes() for row in array]
    assert {r.timestamp for r in records} == {5000}


def test_send_batch_with_nulls_and_headers(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    with Producer(server) as producer:
        producer.send_batch(topic, [b"a", None, b"c"], keys=[None, b"k", None],
                            headers=[None, [("x", b"1")], {"y": "2"}], partition=0).result(10)
    records = read_all(server, topic, 3)
    assert [(r.key, r.value, r.headers) for r in records] == [
        (None, b"a", ()), (b"k", None, (("x", b"1"),)), (None, b"c", (("y", b"2"),))]


def test_send_and_send_batch_keep_partition_order(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    with Producer(server, linger_ms=1000) as producer:
        producer.send(topic, b"1", partition=0)
        producer.send_batch(topic, [b"2", b"3"], partition=0)
        producer.send(topic, b"4", partition=0)
    assert [r.value for r in read_all(server, topic, 4)] == [b"1", b"2", b"3", b"4"]


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_round_trip(server: str, new_topic: Topic, codec: str) -> None:
    topic = new_topic()
    values = [b"compressible %d " % i * 5 for i in range(3000)]
    with Producer(server, codec=codec) as producer:
        for value in values[:1000]:
            producer.send(topic, value, key=b"k", partition=0)
        producer.send_batch(topic, values[1000:], partition=0)
    records = read_all(server, topic, 3000)
    assert [r.value for r in records] == values
    assert records[0].key == b"k"


@pytest.mark.parametrize(("acks", "offsets"), [(0, False), (1, True), ("all", True)])
def test_acks(server: str, new_topic: Topic, acks: object, offsets: bool) -> None:
    topic = new_topic()
    with Producer(server, acks=acks) as producer:
        metadata = producer.send(topic, b"v", partition=0).result(10)
        producer.flush()
    assert metadata.offset == (0 if offsets else -1)
    assert [r.value for r in read_all(server, topic, 1)] == [b"v"]


def test_linger_sends_without_flush(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    with Producer(server, linger_ms=20) as producer:
        assert producer.send(topic, b"v").result(5).offset == 0


def test_an_unknown_topic_fails_at_send(server: str) -> None:
    with Producer(server) as producer, pytest.raises(UnknownTopicError):
        producer.send("no-such-topic-anywhere", b"v")


def test_an_unknown_partition_fails_at_send(server: str, new_topic: Topic) -> None:
    topic = new_topic(2)
    with Producer(server) as producer, pytest.raises(UnknownPartitionError) as caught:
        producer.send(topic, b"v", partition=2)
    assert caught.value.partitions == 2


def test_new_partitions_are_found(server: str, admin: Admin, new_topic: Topic) -> None:
    topic = new_topic(1)
    with Producer(server) as producer:
        producer.send(topic, b"v").result(10)
        admin.add_partitions(topic, 3)
        assert producer.send(topic, b"v", partition=2).result(10) == RecordMetadata(2, 0)
        assert producer.partitions_for(topic) == [0, 1, 2]


def test_a_partition_error_fails_the_batch_not_the_producer(server: str, new_topic: Topic) -> None:
    small = new_topic(1, max_batch_bytes=1024)
    with Producer(server) as producer:
        too_big = producer.send(small, b"x" * 4000)
        producer.flush()
        with pytest.raises(BatchTooLargeError) as caught:
            too_big.result(10)
        assert caught.value.reason in ("BATCH_TOO_LARGE", "RECORD_TOO_LARGE")
        assert producer.send(small, b"y").result(10) == RecordMetadata(0, 0)


def test_send_after_close_fails(server: str, new_topic: Topic) -> None:
    topic = new_topic()
    producer = Producer(server)
    producer.close()
    producer.close()  # idempotent
    with pytest.raises(UnavailableError):
        producer.send(topic, b"v")
    with pytest.raises(UnavailableError):
        producer.send_batch(topic, [b"v"])


def test_many_partitions_in_one_request(server: str, new_topic: Topic) -> None:
    topic = new_topic(8)
    with Producer(server, linger_ms=50) as producer:
        futures = [producer.send(topic, b"p%d" % p, partition=p) for p in range(8) for _ in range(5)]
        producer.flush()
    assert sorted(f.result().partition for f in futures) == sorted(list(range(8)) * 5)
    records = read_all(server, topic, 40)
    assert {tp: len(rs) for tp, rs in by_partition(records).items()} == {p: 5 for p in range(8)}
    assert TopicPartition(topic, 0) == (topic, 0)


def test_a_topic_deleted_under_the_producer_fails_its_records(server: str, admin: Admin,
                                                              new_topic: Topic) -> None:
    topic = new_topic()
    with Producer(server) as producer:
        producer.send(topic, b"first").result(10)
        admin.delete_topic(topic)
        with pytest.raises(UnknownTopicError) as caught:
            producer.send(topic, b"second").result(10)
        assert caught.value.topic == topic


def test_an_idle_producer_has_sent_the_record_when_send_returns(server: str,
                                                                new_topic: Topic) -> None:
    topic = new_topic()
    with Producer(server, acks=1, linger_ms=5) as producer:
        producer.send(topic, b"warm-up", partition=0).result(timeout=10)
        deadline = time.monotonic() + 5
        while producer._accumulator.hold.in_flight and time.monotonic() < deadline:
            time.sleep(0.001)
        accumulator = producer._accumulator
        future = producer.send(topic, b"v", partition=0)
        with accumulator.lock:  # already on the stream: nothing open, nothing queued
            assert not accumulator.opened and not accumulator.ready
        assert future.result(timeout=10).offset == 1
