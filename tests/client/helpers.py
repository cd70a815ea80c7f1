"""Test helpers: reading a topic back (every record from the start, with a bounded wait), and
waiting for a condition (``wait_until``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from logstore.client import Consumer, ConsumerRecord, TopicPartition


def read_all(server: str, topic: str, expected: int, *, timeout: float = 20.0,
             partitions: list[TopicPartition] | None = None) -> list[ConsumerRecord]:
    """``expected`` records of ``topic`` (all partitions) from the beginning, in poll order."""
    records: list[ConsumerRecord] = []
    with Consumer(server, auto_offset_reset="earliest", fetch_max_wait_ms=100) as consumer:
        consumer.assign(partitions or topic)
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            records += consumer.poll(timeout=0.5)
        records += consumer.poll(timeout=0.2)  # nothing more should come
    return records


def by_partition(records: list[ConsumerRecord]) -> dict[int, list[ConsumerRecord]]:
    out: dict[int, list[ConsumerRecord]] = {}
    for record in records:
        out.setdefault(record.partition, []).append(record)
    return out


def wait_until(condition: Callable[[], object], timeout: float = 5.0, interval: float = 0.005) -> None:
    """Poll ``condition`` until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
