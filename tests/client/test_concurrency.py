"""Several producers and consumers at once: every record arrives once, in order per partition."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from logstore.client import Consumer, ConsumerRecord, Producer, TopicPartition
from logstore.client.partitioner import partition_for_key

PRODUCERS = 3
KEYS_PER_PRODUCER = 4
PER_KEY = 500
PARTITIONS = 4


def test_producers_and_consumers_at_once_keep_per_partition_order(
    server: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(PARTITIONS)
    total = PRODUCERS * KEYS_PER_PRODUCER * PER_KEY
    errors: list[BaseException] = []
    received: dict[int, list[ConsumerRecord]] = {p: [] for p in range(PARTITIONS)}

    def produce(number: int) -> None:
        try:
            with Producer(server, linger_ms=2, batch_bytes=4096, max_in_flight=3) as producer:
                for sequence in range(PER_KEY):
                    for key_index in range(KEYS_PER_PRODUCER):
                        key = b"p%d-k%d" % (number, key_index)
                        if sequence % 50 == 0:
                            producer.send_batch(topic, [b"%d" % sequence], keys=[key])
                        else:
                            producer.send(topic, b"%d" % sequence, key=key)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    def consume(partitions: list[int]) -> None:
        try:
            with Consumer(server, auto_offset_reset="earliest", fetch_max_wait_ms=100) as consumer:
                consumer.assign([TopicPartition(topic, p) for p in partitions])
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    for record in consumer.poll(max_records=500, timeout=0.5):
                        received[record.partition].append(record)
                    if sum(len(received[p]) for p in partitions) >= expected_of(partitions):
                        return
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    keys = [b"p%d-k%d" % (n, k) for n in range(PRODUCERS) for k in range(KEYS_PER_PRODUCER)]

    def expected_of(partitions: list[int]) -> int:
        return sum(PER_KEY for key in keys if partition_for_key(key, PARTITIONS) in partitions)

    threads = [threading.Thread(target=consume, args=([0, 1],)),
               threading.Thread(target=consume, args=([2, 3],))]
    threads += [threading.Thread(target=produce, args=(n,)) for n in range(PRODUCERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors, errors
    assert sum(len(records) for records in received.values()) == total
    for partition, records in received.items():
        assert [r.offset for r in records] == list(range(len(records)))  # each once, in order
        for key in keys:
            sequence = [int(r.value or b"") for r in records if r.key == key]
            if partition_for_key(key, PARTITIONS) == partition:
                assert sequence == list(range(PER_KEY)), key
            else:
                assert sequence == []


def test_one_producer_shared_by_threads(server: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(2)
    threads_count, per_thread = 4, 2000
    with Producer(server, batch_bytes=8192) as producer:

        def send(number: int) -> None:
            for sequence in range(per_thread):
                producer.send(topic, b"%d" % sequence, key=b"t%d" % number)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        producer.flush()
    records: list[ConsumerRecord] = []
    with Consumer(server, auto_offset_reset="earliest", fetch_max_wait_ms=100) as consumer:
        consumer.assign(topic)
        deadline = time.monotonic() + 30
        while len(records) < threads_count * per_thread and time.monotonic() < deadline:
            records += consumer.poll(timeout=0.5)
    for number in range(threads_count):
        sequence = [int(r.value or b"") for r in records if r.key == b"t%d" % number]
        assert sequence == list(range(per_thread))
