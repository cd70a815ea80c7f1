"""Several producers and consumers at once (threads, one channel each) keep per-partition order."""

from __future__ import annotations

import threading
import time
from collections import Counter

from logstore.api.v1 import records_pb2
from logstore.records import Record, decode_records
from tests.server.helpers import (
    TIMEOUT_S,
    connect,
    create_topic,
    fetch_partition,
    produce,
    read_all,
)

PRODUCERS = 4
BATCHES_PER_PRODUCER = 40
RECORDS_PER_BATCH = 3
PARTITIONS = 3
ACKS = (records_pb2.ACKS_ALL, records_pb2.ACKS_LEADER)


def _plan(producer: int, sequence: int) -> tuple[int, list[bytes]]:
    partition = (producer + sequence) % PARTITIONS
    return partition, [f"{producer}:{sequence}:{i}".encode() for i in range(RECORDS_PER_BATCH)]


def _expected_counts() -> Counter[int]:
    counts: Counter[int] = Counter()
    for producer in range(PRODUCERS):
        for sequence in range(BATCHES_PER_PRODUCER):
            counts[_plan(producer, sequence)[0]] += RECORDS_PER_BATCH
    return counts


def _producer(address, topic, producer, errors):
    try:
        with connect(address) as stub:
            for sequence in range(BATCHES_PER_PRODUCER):
                partition, batch_values = _plan(producer, sequence)
                produce(stub, topic, batch_values, partition, keys=[str(producer).encode()] * RECORDS_PER_BATCH,
                        acks=ACKS[sequence % 2])
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _fetch_consumer(address, topic, partition, count, out, errors):
    deadline = time.monotonic() + 3 * TIMEOUT_S
    offset = 0
    try:
        with connect(address) as stub:
            while offset < count and time.monotonic() < deadline:
                fetched = fetch_partition(stub, topic, partition, offset, max_wait_ms=500)
                assert not fetched.HasField("error"), fetched.error
                out += [r for r in decode_records(fetched.records) if r.offset >= offset]
                offset = fetched.next_offset
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _subscribe_consumer(address, topic, partition, count, out, errors):
    try:
        with connect(address) as stub:
            call = stub.Subscribe(
                records_pb2.SubscribeRequest(topic=topic, partition=partition), timeout=3 * TIMEOUT_S
            )
            try:
                for response in call:
                    out += decode_records(response.records)
                    if response.next_offset >= count:
                        break
            finally:
                call.cancel()
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _per_producer_sequences(records: list[Record]) -> dict[bytes, list[tuple[int, int]]]:
    sequences: dict[bytes, list[tuple[int, int]]] = {}
    for record in records:
        _, sequence, index = record.value.decode().split(":")
        sequences.setdefault(record.key, []).append((int(sequence), int(index)))
    return sequences


def test_concurrent_producers_and_consumers_keep_per_partition_order(stub, module_broker, topic):
    create_topic(stub, topic, partitions=PARTITIONS)
    counts = _expected_counts()
    errors: list[Exception] = []
    fetched = {p: [] for p in range(PARTITIONS)}
    subscribed = {p: [] for p in range(PARTITIONS)}
    threads = [
        threading.Thread(target=_fetch_consumer, args=(module_broker.address, topic, p, counts[p], fetched[p], errors))
        for p in range(PARTITIONS)
    ] + [
        threading.Thread(
            target=_subscribe_consumer, args=(module_broker.address, topic, p, counts[p], subscribed[p], errors)
        )
        for p in range(PARTITIONS)
    ] + [
        threading.Thread(target=_producer, args=(module_broker.address, topic, producer, errors))
        for producer in range(PRODUCERS)
    ]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(4 * TIMEOUT_S)

    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    for partition in range(PARTITIONS):
        stored = read_all(stub, topic, partition)
        assert [r.offset for r in stored] == list(range(counts[partition]))
        assert fetched[partition] == stored
        assert subscribed[partition] == stored
        for key, sequence in _per_producer_sequences(stored).items():
            assert sequence == sorted(sequence), f"producer {key!r} reordered in partition {partition}"
    all_values = sorted(r.value for p in range(PARTITIONS) for r in fetched[p])
    assert all_values == sorted(
        v for producer in range(PRODUCERS) for s in range(BATCHES_PER_PRODUCER) for v in _plan(producer, s)[1]
    )
