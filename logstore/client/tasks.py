"""``TaskQueue``: run a handler over a share group's records with N workers, retries with
backoff, a dead-letter topic, and a graceful stop.

::

    def handle(record):                 # raise to fail; it is retried with backoff
        send_email(record.value)

    queue = TaskQueue("127.0.0.1:7070", "mailer", ["emails"], handle, workers=8,
                      max_attempts=5, backoff_ms=200)
    queue.run()                         # until SIGTERM / SIGINT / queue.stop()

How it works. The queue is a share group (queue mode, see ``share.py``): each of the ``workers``
threads is its own ``ShareConsumer`` and acquires records from any partition, so workers may
outnumber partitions and a slow record holds up nobody else. Records are processed in no
guaranteed order. A record the handler finishes is accepted. One that raises is released with a
delay of ``backoff_ms`` doubling per delivery up to ``backoff_max_ms`` (the broker holds it back;
any worker may take it next); on its ``max_attempts``-th delivery it is rejected instead, and the
broker writes it to the group's dead-letter topic (``<first topic>.dlq`` by default, created on
start with the source's partition count) with its key, value and headers plus ``topic``,
``partition``, ``offset``, ``delivery_count`` and ``last_error`` (the exception). A worker that
dies leaves its records locked for ``lock_ms``; then they come back to the others (a record
whose lock expired ``max_attempts`` times is dead-lettered with ``last_error`` = ``lock
expired``). On start the queue sets the group's ``dead_letter_topic``, ``max_deliveries`` (=
``max_attempts``) and ``lock_ms``.

Stopping (``stop()``, or SIGTERM/SIGINT while ``run`` runs in the main thread): no new record is
started, handlers already running finish and are acknowledged, and every worker leaves the group:
records it held and did not start are available to other members at once.

Metrics (``metrics()``, ``prometheus()``): ``processed`` (records handled successfully),
``failed`` (handler calls that raised), ``retried`` (handler calls on a record delivered before),
``dead_lettered`` (records rejected to the dead-letter topic), ``lag`` (records of the group not
done yet: available, delayed or being worked on; refreshed every ``commit_interval_ms``).

Changes from the consumer-group TaskQueue: no per-partition order; the dead-letter headers are
``delivery_count`` and ``last_error`` (were ``attempts`` and ``error``); one dead-letter topic
per group (a callable ``dead_letter_topic`` is called with the first topic); progress is the
share group's (``Admin.describe_share_group``), not committed offsets. ``max_pending`` bounds
the records all workers hold at once; ``producer_options`` is accepted and unused.

Thread-safety: ``stop`` and ``metrics`` may be called from any thread.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from logstore.client.admin import Admin
from logstore.client.share import ShareConsumer, ShareRecord
from logstore.errors import LogstoreError, TopicExistsError

log = logging.getLogger("logstore.client.tasks")

Handler = Callable[[ShareRecord], object]
METRICS = ("processed", "failed", "retried", "dead_lettered", "lag")


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
        lock_ms: int = 30_000,
        consumer_options: dict[str, Any] | None = None,
        producer_options: dict[str, Any] | None = None,
        **credentials: Any,
    ) -> None:
        """``credentials`` (``tls_ca``, ``tls_cert``, ``tls_key``, ``token``) go to the share
        consumers and the admin client alike; ``consumer_options`` to the share consumers."""
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
        self.lock_ms = lock_ms
        if dead_letter_topic is None:
            self.dead_letter_topic = f"{self.topics[0]}.dlq"
        elif isinstance(dead_letter_topic, str):
            self.dead_letter_topic = dead_letter_topic
        else:
            self.dead_letter_topic = dead_letter_topic(self.topics[0])
        self._credentials = dict(credentials)
        self._consumer_options = {**credentials, **(consumer_options or {})}
        del producer_options  # the broker writes the dead letters
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(METRICS, 0)
        self._stopping = threading.Event()
        self._running = threading.Event()

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish what is running, acknowledge it, leave the group; ``run`` then returns."""
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
        """Process until ``stop()`` (or SIGTERM/SIGINT when signal handlers are installed: by
        default when called from the main thread)."""
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

    def _run(self) -> None:
        admin = Admin(self.server, **self._credentials)
        try:
            self._configure(admin)
            threads = [threading.Thread(target=self._work, name=f"logstore-task-{i}", daemon=True)
                       for i in range(self.workers)]
            self._running.set()
            for thread in threads:
                thread.start()
            while not self._stopping.wait(self.commit_interval_ms / 1000.0):
                self._update_lag(admin)
            log.info("task queue %s: stopping: finishing in-flight work", self.group_id)
            for thread in threads:
                thread.join()
            self._update_lag(admin)
        finally:
            self._running.clear()
            admin.close()

    def _configure(self, admin: Admin) -> None:
        try:
            partitions = admin.describe_topic(self.topics[0]).partition_count
            admin.create_topic(self.dead_letter_topic, partitions)
        except TopicExistsError:
            pass
        admin.alter_share_group_config(self.group_id, {
            "dead_letter_topic": self.dead_letter_topic, "max_deliveries": self.max_attempts,
            "lock_ms": self.lock_ms,
        })

    def _update_lag(self, admin: Admin) -> None:
        try:
            states = admin.describe_share_group(self.group_id).partitions
        except LogstoreError as exc:
            log.warning("task queue %s: describing the group failed: %s", self.group_id, exc.message)
            return
        with self._lock:
            self._counters["lag"] = sum(s.available + s.acquired for s in states)

    # -- the workers ----------------------------------------------------------------------------

    def _work(self) -> None:
        """One worker: its own share-group member, until stopping (a worker thread)."""
        prefetch = max(1, min(16, self.max_pending // self.workers))
        consumer = ShareConsumer(self.server, self.group_id, self.topics, max_records=prefetch,
                                 **self._consumer_options)
        last_commit = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    records = consumer.poll(timeout=0.2)
                except LogstoreError as exc:
                    log.warning("task queue %s: poll failed: %s", self.group_id, exc.message)
                    self._stopping.wait(0.2)
                    continue
                for record in records:
                    if self._stopping.is_set():
                        break  # not started: leaving gives it back at once
                    self._process(record)
                if time.monotonic() - last_commit >= self.commit_interval_ms / 1000.0:
                    self._commit(consumer)
                    last_commit = time.monotonic()
        finally:
            try:
                consumer.close()
            except LogstoreError as exc:
                log.warning("task queue %s: leaving failed: %s", self.group_id, exc.message)

    def _commit(self, consumer: ShareConsumer) -> None:
        try:
            consumer.commit()
        except LogstoreError as exc:
            log.warning("task queue %s: an acknowledgement was refused: %s", self.group_id, exc.message)

    def _process(self, record: ShareRecord) -> None:
        if record.delivery_count > 1:
            self._count("retried")
        try:
            self.handler(record)
        except Exception as exc:
            self._count("failed")
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            if record.delivery_count >= self.max_attempts:
                log.warning("task %s/%d@%d dead-lettered after %d attempts: %s", record.topic,
                            record.partition, record.offset, record.delivery_count, error)
                record.reject(error=error)
                self._count("dead_lettered")
                return
            delay = min(self.backoff_max_ms, self.backoff_ms * 2 ** (record.delivery_count - 1))
            log.info("task %s/%d@%d failed (attempt %d): %s; retrying in %.0f ms", record.topic,
                     record.partition, record.offset, record.delivery_count, error, delay)
            record.release(delay_ms=int(delay), error=error)
            return
        record.ack()
        self._count("processed")

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1
