"""``TaskQueue`` on a share group: retries with backoff, the dead-letter topic and its headers,
workers outnumbering partitions, a slow task holding up nobody, metrics, a graceful stop on
SIGTERM, and a killed worker's tasks coming back after their lock."""

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

from logstore.client import Admin, Producer, ShareRecord, TaskQueue
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


def start_offsets(server: str, group: str) -> dict[int, int]:
    with Admin(server) as admin:
        return {s.partition: s.start_offset for s in admin.describe_share_group(group).partitions}


def test_a_failing_record_is_retried_until_it_succeeds(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, [b"flaky", b"fine"])
    attempts: dict[bytes, int] = {}

    def handle(record: ShareRecord) -> None:
        assert record.value is not None
        attempts[record.value] = attempts.get(record.value, 0) + 1
        if record.value == b"flaky" and attempts[record.value] < 3:
            raise RuntimeError("not yet")

    queue = TaskQueue(server, group_name(), topic, handle, max_attempts=5, backoff_ms=10)
    with running(queue):
        wait_until(lambda: queue.metrics()["processed"] == 2)
    assert attempts == {b"flaky": 3, b"fine": 1}
    metrics = queue.metrics()
    assert (metrics["failed"], metrics["retried"], metrics["dead_lettered"]) == (2, 2, 0)


def test_a_record_that_keeps_failing_goes_to_the_dead_letter_topic(server: str,
                                                                   new_topic: Topic) -> None:
    topic = new_topic(1)
    with Producer(server) as producer:
        producer.send(topic, b"poison", key=b"k1", headers=[("trace", b"abc")], partition=0)
        producer.send(topic, b"good", partition=0)
    handled: list[bytes | None] = []

    def handle(record: ShareRecord) -> None:
        if record.value == b"poison":
            raise ValueError("cannot parse poison")
        handled.append(record.value)

    group = group_name()
    queue = TaskQueue(server, group, topic, handle, max_attempts=3, backoff_ms=5)
    with running(queue):
        wait_until(lambda: queue.metrics()["processed"] == 1)
        wait_until(lambda: start_offsets(server, group) == {0: 2})
    (dead,) = read_all(server, f"{topic}.dlq", 1)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (b"k1", b"poison")
    assert headers["last_error"] == b"ValueError: cannot parse poison"
    assert headers["delivery_count"] == b"3"
    assert headers["trace"] == b"abc" and headers["offset"] == b"0"
    assert handled == [b"good"]
    assert queue.metrics()["dead_lettered"] == 1 and queue.metrics()["failed"] == 3


def test_a_slow_record_holds_up_nobody(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, [b"0", b"slow", b"2", b"3"])
    release = threading.Event()
    done: list[bytes | None] = []

    def handle(record: ShareRecord) -> None:
        if record.value == b"slow":
            release.wait(20)
        done.append(record.value)

    group = group_name()
    queue = TaskQueue(server, group, topic, handle, workers=2, max_pending=2, commit_interval_ms=50)
    with running(queue):
        wait_until(lambda: sorted(done) == [b"0", b"2", b"3"])
        wait_until(lambda: start_offsets(server, group) == {0: 1})  # not past the running one
        release.set()
        wait_until(lambda: start_offsets(server, group) == {0: 4})


def test_workers_outnumbering_partitions_work_in_parallel_and_report_lag(server: str,
                                                                        new_topic: Topic) -> None:
    topic = new_topic(1)
    fill(server, topic, [b"%d" % i for i in range(20)])
    active = 0
    most = 0
    lock = threading.Lock()

    def handle(record: ShareRecord) -> None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.02)
        with lock:
            active -= 1

    queue = TaskQueue(server, group_name(), topic, handle, workers=4, max_pending=4,
                      commit_interval_ms=50)
    with running(queue):
        wait_until(lambda: queue.metrics()["processed"] == 20)
        wait_until(lambda: queue.metrics()["lag"] == 0)
    assert most > 1
    text = queue.prometheus()
    assert "logstore_tasks_processed_total" in text and " 20\n" in text


def _done(done_file: Path) -> list[tuple[int, int]]:
    if not done_file.exists():
        return []
    return [tuple(map(int, line.split())) for line in done_file.read_text().splitlines()]  # type: ignore[misc]


def _worker(server: str, group: str, topic: str, done_file: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.client.programs.worker", server, group, topic,
         str(done_file), *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_sigterm_finishes_in_flight_work_and_leaves(server: str, admin: Admin, new_topic: Topic,
                                                    tmp_path: Path) -> None:
    topic = new_topic(2)
    for partition in range(2):
        fill(server, topic, [b"%d" % i for i in range(40)], partition=partition)
    group = group_name()
    done_file = tmp_path / "done.txt"
    process = _worker(server, group, topic, done_file, "--workers", "2", "--work-ms", "100")
    try:
        wait_until(lambda: len(_done(done_file)) >= 4)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert stdout.startswith("stopped")
    done = _done(done_file)
    assert len(done) == len(set(done)) < 80  # none twice; it stopped early
    states = admin.describe_share_group(group).partitions
    assert sum(s.acquired for s in states) == 0  # it left: nothing stays locked
    assert sum(s.available for s in states) == 80 - len(done)


def test_a_killed_workers_tasks_come_back_after_their_lock(server: str, new_topic: Topic,
                                                           tmp_path: Path) -> None:
    topic = new_topic(1)
    fill(server, topic, [b"%d" % i for i in range(10)])
    group = group_name()
    done_file = tmp_path / "done.txt"
    process = _worker(server, group, topic, done_file, "--workers", "2", "--work-ms", "50",
                      "--lock-ms", "1000", "--hang-after", "1")
    try:  # after one task its handlers hang: the kill finds tasks it holds, unacknowledged
        wait_until(lambda: len(_done(done_file)) >= 1)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=20)
    finally:
        process.kill()
    seen: list[int] = []

    def handle(record: ShareRecord) -> None:
        seen.append(record.offset)

    queue = TaskQueue(server, group, topic, handle, workers=2, lock_ms=1000, commit_interval_ms=50)
    with running(queue):
        wait_until(lambda: start_offsets(server, group) == {0: 10})
    finished = {offset for _, offset in _done(done_file)} | set(seen)
    assert finished == set(range(10))
    assert queue.metrics()["retried"] >= 1  # the ones the killed worker held came back
