"""``TaskQueue``: retries with backoff, the dead-letter topic and its headers, commits only
after success (a contiguous watermark), metrics, and a graceful stop on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from logstore.client import Admin, Consumer, ConsumerRecord, Producer, TaskQueue, TopicPartition
from tests.broker_fixture import ROOT
from tests.client.helpers import read_all

Topic = Callable[..., str]


def group_name() -> str:
    return f"tasks-{uuid.uuid4().hex[:8]}"


def fill(server: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    with Producer(server) as producer:
        producer.send_batch(topic, values, partition=partition).result(10)


@contextmanager
def running(queue: TaskQueue) -> Iterator[TaskQueue]:
    thread = threading.Thread(target=queue.run, daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        queue.stop()
        thread.join(30)
        assert not thread.is_alive()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def committed(server: str, group: str, topic: str) -> dict[int, int]:
    with Admin(server) as admin:
        return {c.partition: c.offset for c in admin.fetch_committed(group)
                if c.topic == topic}


def test_a_failing_record_is_retried_until_it_succeeds(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, [b"flaky", b"fine"])
    attempts: dict[bytes, int] = {}
    order: list[bytes] = []

    def handle(record: ConsumerRecord) -> None:
        assert record.value is not None
        attempts[record.value] = attempts.get(record.value, 0) + 1
        if record.value == b"flaky" and attempts[record.value] < 3:
            raise RuntimeError("not yet")
        order.append(record.value)

    queue = TaskQueue(server, group_name(), topic, handle, max_attempts=5, backoff_ms=10)
    with running(queue):
        wait_until(lambda: queue.metrics()["processed"] == 2)
    assert attempts == {b"flaky": 3, b"fine": 1}
    assert order == [b"flaky", b"fine"]  # the partition's order is kept through retries
    metrics = queue.metrics()
    assert (metrics["failed"], metrics["retried"], metrics["dead_lettered"]) == (2, 2, 0)


def test_a_record_that_keeps_failing_goes_to_the_dead_letter_topic(server: str,
                                                                   new_topic: Topic) -> None:
    topic = new_topic(1)
    with Producer(server) as producer:
        producer.send(topic, b"poison", key=b"k1", headers=[("trace", b"abc")], partition=0)
        producer.send(topic, b"good", partition=0)
    handled: list[bytes | None] = []

    def handle(record: ConsumerRecord) -> None:
        if record.value == b"poison":
            raise ValueError("cannot parse poison")
        handled.append(record.value)

    group = group_name()
    queue = TaskQueue(server, group, topic, handle, max_attempts=3, backoff_ms=5)
    with running(queue):
        wait_until(lambda: queue.metrics()["processed"] == 1)
        wait_until(lambda: committed(server, group, topic) == {0: 2})
    (dead,) = read_all(server, f"{topic}.dlq", 1)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (b"k1", b"poison")
    assert headers["error"] == b"ValueError: cannot parse poison"
    assert headers["attempts"] == b"3"
    assert headers["trace"] == b"abc" and headers["offset"] == b"0"
    assert handled == [b"good"]
    assert queue.metrics()["dead_lettered"] == 1 and queue.metrics()["failed"] == 3


def test_only_records_done_in_order_are_committed(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, [b"0", b"1", b"slow", b"3"])
    release = threading.Event()

    def handle(record: ConsumerRecord) -> None:
        if record.value == b"slow":
            release.wait(20)

    group = group_name()
    queue = TaskQueue(server, group, topic, handle, commit_interval_ms=50)
    with running(queue):
        wait_until(lambda: committed(server, group, topic) == {0: 2})
        time.sleep(0.3)
        assert committed(server, group, topic) == {0: 2}  # not past the record still running
        release.set()
        wait_until(lambda: committed(server, group, topic) == {0: 4})


def test_workers_process_partitions_in_parallel_and_report_lag(server: str,
                                                               new_topic: Topic) -> None:
    topic = new_topic(4)
    for partition in range(4):
        fill(server, topic, [b"%d" % i for i in range(5)], partition=partition)
    active = 0
    most = 0
    lock = threading.Lock()

    def handle(record: ConsumerRecord) -> None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.02)
        with lock:
            active -= 1

    queue = TaskQueue(server, group_name(), topic, handle, workers=4, commit_interval_ms=50)
    with running(queue):
        wait_until(lambda: queue.metrics()["processed"] == 20)
        wait_until(lambda: queue.metrics()["lag"] == 0)
    assert most > 1
    text = queue.prometheus()
    assert "logstore_tasks_processed_total" in text and " 20\n" in text


def test_sigterm_finishes_in_flight_work_commits_and_leaves(server: str, admin: Admin,
                                                            new_topic: Topic,
                                                            tmp_path: Path) -> None:
    topic = new_topic(2)
    for partition in range(2):
        fill(server, topic, [b"%d" % i for i in range(40)], partition=partition)
    group = group_name()
    done_file = tmp_path / "done.txt"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.client.programs.worker", server, group, topic,
         str(done_file), "--workers", "2", "--work-ms", "100"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: done_file.exists() and len(done_file.read_text().splitlines()) >= 4)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert stdout.startswith("stopped")
    done: dict[int, list[int]] = {0: [], 1: []}
    for line in done_file.read_text().splitlines():
        partition, offset = map(int, line.split())
        done[partition].append(offset)
    for offsets in done.values():  # in order, none skipped, none twice
        assert offsets == list(range(len(offsets)))
    assert committed(server, group, topic) == {p: len(o) for p, o in done.items() if o}
    assert sum(len(o) for o in done.values()) < 80  # it stopped early ...
    assert admin.describe_group(group).members == []  # ... and left the group at once
    with Consumer(server, group_id=group) as consumer:
        consumer.assign([TopicPartition(topic, 0)])
        assert consumer.position(TopicPartition(topic, 0)) == len(done[0])
