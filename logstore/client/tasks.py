"""``TaskQueue``: run a handler over a consumer group's records with N workers, retries, a
dead-letter topic, commits only after success, and a graceful stop.

::

    def handle(record):                 # raise to fail; it is retried with backoff
        send_email(record.value)

    queue = TaskQueue("127.0.0.1:7070", "mailer", ["emails"], handle, workers=8,
                      max_attempts=5, backoff_ms=200)
    queue.run()                         # until SIGTERM / SIGINT / queue.stop()

How it works. The thread calling ``run`` owns the ``Consumer`` (group ``group_id``, auto-commit
off): it polls, hands each partition's records to a pool of ``workers`` threads, and commits.
A partition's records are processed one at a time, in offset order (a partition is the unit of
ordering and of parallelism, so use at least as many partitions as workers). A record that
raises is retried after ``backoff_ms``, doubling up to ``backoff_max_ms``; after
``max_attempts`` it is written to the dead-letter topic (``<topic>.dlq`` by default, created on
start with the source's partition count) with its key, value and headers plus the headers
``error`` (the exception), ``attempts``, ``topic``, ``partition`` and ``offset``; that write is
acknowledged before the record counts as done.

Commits. Per partition a *watermark* is the offset after the longest run of done records from
where the partition started; only it is committed (every ``commit_interval_ms``, before a
partition is revoked, and on stop), so a record is never committed before it succeeded or was
dead-lettered: at-least-once. Records are fetched only while fewer than ``max_pending`` wait.

Stopping (``stop()``, or SIGTERM/SIGINT while ``run`` runs in the main thread): no new record is
started, handlers already running finish (a record waiting to be retried is not retried: it will be
delivered again), the watermarks are committed, and the consumer leaves the group at once.

Metrics (``metrics()``, ``prometheus()``): ``processed`` (records handled successfully),
``failed`` (handler calls that raised), ``retried`` (calls after the first of a record),
``dead_lettered`` (records sent to the dead-letter topic), ``lag`` (records not done behind the
newest fetched high watermarks of the partitions held).

Thread-safety: ``stop`` and ``metrics`` may be called from any thread; ``_lock`` guards the
per-partition state shared between the polling thread and the workers.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from logstore.client.admin import Admin
from logstore.client.consumer import Consumer
from logstore.client.models import ConsumerRecord, TopicPartition
from logstore.client.producer import Producer
from logstore.errors import LogstoreError, TopicExistsError

log = logging.getLogger("logstore.client.tasks")

Handler = Callable[[ConsumerRecord], object]
METRICS = ("processed", "failed", "retried", "dead_lettered", "lag")


class _Partition:
    """One partition held: records waiting, whether a worker is on it, and the watermark."""

    __slots__ = ("queue", "busy", "watermark", "committed", "revoked", "idle")

    def __init__(self) -> None:
        self.queue: deque[ConsumerRecord] = deque()
        self.busy = False
        #: Offset after the last record done in order (None until the first is done).
        self.watermark: int | None = None
        self.committed: int | None = None
        #: Set when the partition is revoked or lost: workers stop taking its records.
        self.revoked = False
        self.idle = threading.Event()
        self.idle.set()


class TaskQueue:
    def __init__(
        self,
        server: str | None,
        group_id: str,
        topics: str | Iterable[str],
        handler: Handler,
        *,
        workers: int = 4,
        max_attempts: int = 3,
        backoff_ms: float = 100.0,
        backoff_max_ms: float = 10_000.0,
        dead_letter_topic: str | Callable[[str], str] | None = None,
        commit_interval_ms: float = 1_000.0,
        max_pending: int = 1_000,
        consumer_options: dict[str, Any] | None = None,
        producer_options: dict[str, Any] | None = None,
        **credentials: Any,
    ) -> None:
        """``credentials`` (``tls_ca``, ``tls_cert``, ``tls_key``, ``token``) go to the consumer,
        the dead-letter producer and the admin client alike."""
        if workers < 1 or max_attempts < 1 or max_pending < 1:
            raise ValueError("workers, max_attempts and max_pending must be at least 1")
        self.server = server
        self.group_id = group_id
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.handler = handler
        self.workers = workers
        self.max_attempts = max_attempts
        self.backoff_ms = backoff_ms
        self.backoff_max_ms = backoff_max_ms
        self.commit_interval_ms = commit_interval_ms
        self.max_pending = max_pending
        if dead_letter_topic is None:
            self._dead_letter: Callable[[str], str] = lambda topic: f"{topic}.dlq"
        elif isinstance(dead_letter_topic, str):
            name = dead_letter_topic
            self._dead_letter = lambda _topic: name
        else:
            self._dead_letter = dead_letter_topic
        self._credentials = dict(credentials)
        self._consumer_options = {**credentials, **(consumer_options or {})}
        self._producer_options = {**credentials, **(producer_options or {})}
        self._lock = threading.Lock()
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._counters = dict.fromkeys(METRICS, 0)
        self._stopping = threading.Event()
        self._running = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish what is running, commit, leave the group; ``run`` then returns."""
        self._stopping.set()

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def metrics(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def prometheus(self) -> str:
        """The metrics in Prometheus' text format, labelled with the group."""
        lines = []
        for name, value in self.metrics().items():
            kind = "gauge" if name == "lag" else "counter"
            metric = f"logstore_tasks_{name}" + ("" if kind == "gauge" else "_total")
            lines += [f"# TYPE {metric} {kind}", f'{metric}{{group="{self.group_id}"}} {value}']
        return "\n".join(lines) + "\n"

    def run(self, install_signal_handlers: bool | None = None) -> None:
        """Consume and process until ``stop()`` (or SIGTERM/SIGINT when signal handlers are
        installed: by default when called from the main thread)."""
        if install_signal_handlers is None:
            install_signal_handlers = threading.current_thread() is threading.main_thread()
        previous: dict[int, Any] = {}
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda *_: self.stop())
        try:
            self._run()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    # -- the polling thread ---------------------------------------------------------------------

    def _run(self) -> None:
        self._ensure_dead_letter_topics()
        options = {"auto_offset_reset": "earliest", "fetch_max_wait_ms": 200,
                   **self._consumer_options, "group_id": self.group_id,
                   "enable_auto_commit": False}
        consumer = Consumer(self.server, **options)
        producer = Producer(self.server, **self._producer_options)
        self._consumer, self._producer = consumer, producer
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="logstore-task")
        self._running.set()
        try:
            consumer.subscribe(self.topics, on_revoke=self._on_revoke, on_lost=self._on_lost)
            last_commit = time.monotonic()
            while not self._stopping.is_set():
                if self._pending() < self.max_pending:
                    records = consumer.poll(max_records=self.max_pending, timeout=0.2)
                    self._dispatch(records, pool)
                else:
                    self._stopping.wait(0.05)
                if time.monotonic() - last_commit >= self.commit_interval_ms / 1000.0:
                    self._commit()
                    self._update_lag()
                    last_commit = time.monotonic()
            log.info("task queue %s: stopping: finishing in-flight work", self.group_id)
            with self._lock:
                for state in self._partitions.values():
                    state.queue.clear()  # not started: delivered again to the next owner
            pool.shutdown(wait=True)
            self._commit()
        finally:
            self._running.clear()
            pool.shutdown(wait=True)
            try:
                consumer.close()  # auto-commit is off: leaving commits nothing more
            finally:
                producer.close()
            self._consumer = self._producer = None

    def _pending(self) -> int:
        with self._lock:
            return sum(len(state.queue) + state.busy for state in self._partitions.values())

    def _dispatch(self, records: list[ConsumerRecord], pool: ThreadPoolExecutor) -> None:
        start: list[TopicPartition] = []
        with self._lock:
            for record in records:
                tp = TopicPartition(record.topic, record.partition)
                state = self._partitions.get(tp)
                if state is None:
                    state = self._partitions[tp] = _Partition()
                state.queue.append(record)
            for tp, state in self._partitions.items():
                if state.queue and not state.busy:
                    state.busy = True
                    state.idle.clear()
                    start.append(tp)
        for tp in start:
            pool.submit(self._work, tp)

    def _commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        with self._lock:
            chosen = self._partitions if partitions is None else {
                tp: self._partitions[tp] for tp in partitions if tp in self._partitions
            }
            offsets = {tp: s.watermark for tp, s in chosen.items()
                       if s.watermark is not None and s.watermark != s.committed}
        if not offsets:
            return
        try:
            consumer.commit(offsets)  # type: ignore[arg-type]
        except LogstoreError as exc:
            log.warning("task queue %s: commit failed: %s", self.group_id, exc.message)
            return
        with self._lock:
            for tp, offset in offsets.items():
                state = self._partitions.get(tp)
                if state is not None:
                    state.committed = offset

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        lag = 0
        with self._lock:
            partitions = list(self._partitions.items())
        for tp, state in partitions:
            try:
                high = consumer.highwater(tp)
            except ValueError:  # revoked meanwhile
                continue
            done = state.watermark
            if done is None:
                done = state.queue[0].offset if state.queue else high
            lag += max(0, high - done)
        with self._lock:
            self._counters["lag"] = lag

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Let running records of the revoked partitions finish, commit them, forget them."""
        states = self._release(partitions)
        for state in states:
            state.idle.wait()
        self._commit(partitions)
        with self._lock:
            for tp in partitions:
                self._partitions.pop(tp, None)

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        """The partitions may be someone else's already: stop, commit nothing."""
        self._release(partitions)
        with self._lock:
            for tp in partitions:
                self._partitions.pop(tp, None)

    def _release(self, partitions: list[TopicPartition]) -> list[_Partition]:
        with self._lock:
            states = [self._partitions[tp] for tp in partitions if tp in self._partitions]
            for state in states:
                state.revoked = True
                state.queue.clear()
        return states

    # -- the workers ----------------------------------------------------------------------------

    def _work(self, tp: TopicPartition) -> None:
        """Process ``tp``'s queued records in order until none are left (a worker thread)."""
        while True:
            with self._lock:
                state = self._partitions.get(tp)
                if state is None:
                    return
                if state.revoked or self._stopping.is_set() or not state.queue:
                    state.busy = False
                    state.idle.set()
                    return
                record = state.queue.popleft()
            done = self._process(record)
            with self._lock:
                if done and not state.revoked:
                    state.watermark = record.offset + 1
                elif not done:
                    state.queue.clear()  # stopping mid-retry: this and later records come again

    def _process(self, record: ConsumerRecord) -> bool:
        """Run the handler with retries; dead-letter the record after ``max_attempts``. True
        when the record is done (succeeded or dead-lettered)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                self.handler(record)
            except Exception as exc:
                with self._lock:
                    self._counters["failed"] += 1
                if attempt >= self.max_attempts:
                    return self._dead_letter_record(record, exc, attempt)
                delay = min(self.backoff_max_ms, self.backoff_ms * 2 ** (attempt - 1)) / 1000.0
                log.info("task %s/%d@%d failed (attempt %d): %s; retrying in %.2fs",
                         record.topic, record.partition, record.offset, attempt, exc, delay)
                if self._stopping.wait(delay):
                    return False
                with self._lock:
                    self._counters["retried"] += 1
                continue
            with self._lock:
                self._counters["processed"] += 1
            return True

    def _dead_letter_record(self, record: ConsumerRecord, error: BaseException,
                            attempts: int) -> bool:
        producer = self._producer
        assert producer is not None
        headers = list(record.headers) + [
            ("error", "".join(traceback.format_exception_only(type(error), error)).strip()),
            ("attempts", str(attempts)),
            ("topic", record.topic),
            ("partition", str(record.partition)),
            ("offset", str(record.offset)),
        ]
        target = self._dead_letter(record.topic)
        failures = 0
        while True:  # the record is done only once the dead-letter topic has it
            try:
                producer.send(target, record.value, key=record.key, headers=headers).result()
                break
            except LogstoreError as exc:
                failures += 1
                delay = min(self.backoff_max_ms, self.backoff_ms * 2 ** (failures - 1)) / 1000
                log.error("task %s/%d@%d: writing it to %s failed: %s; retrying in %.2fs",
                          record.topic, record.partition, record.offset, target, exc.message,
                          delay)
                if self._stopping.wait(delay):
                    return False
        log.warning("task %s/%d@%d dead-lettered to %s after %d attempts: %s", record.topic,
                    record.partition, record.offset, target, attempts, error)
        with self._lock:
            self._counters["dead_lettered"] += 1
        return True

    def _ensure_dead_letter_topics(self) -> None:
        with Admin(self.server, **self._credentials) as admin:
            for topic in self.topics:
                target = self._dead_letter(topic)
                try:
                    partitions = admin.describe_topic(topic).partition_count
                    admin.create_topic(target, partitions)
                except TopicExistsError:
                    pass
