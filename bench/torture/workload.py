"""The torture run's clients: each a process of its own that writes its history as JSON lines.

``python -m bench.torture.workload ROLE --server HOST:PORT --name NAME --history FILE ...``:

- ``producer``: an idempotent ``Producer`` (``acks="all"``) sends unique values
  ``"<name>-<counter>"`` to random partitions of ``--topic``, at most ``--rate`` per second and
  ``--outstanding`` unanswered; every answer is a ``send`` event (the offset, or the error).
  Retries are the client's own.
- ``txn-producer``: a transactional producer; per transaction 1-10 values to random partitions,
  then commit (or, one time in four, flush and abort, so that aborted records are in the log);
  ``send`` events carry ``txn`` and are written as each record is answered (the nemesis must
  see acknowledged offsets before it damages unsynced tails), and a ``txn`` event says how it
  ended (``unknown`` when the commit's answer was lost; the producer then calls
  ``init_transactions()`` again, which finishes or aborts it broker-side).
- ``reader`` (the cluster run's default consumer): reads every partition of ``--topics`` by
  explicit assignment from offset 0, tracking its positions itself (no group, no committed
  offsets); ``poll`` events carry ``group`` = ``member`` = its name and tenure 1, and a
  ``positions`` event follows every poll that moved them.
- ``consumer``: a group member (``subscribe``), at-least-once: ``poll``, write one ``poll``
  event per partition, then ``commit()`` the positions. Rebalance callbacks write ``assign``,
  ``revoke`` and ``lost`` events; each assignment of a partition gets a new ``tenure`` number,
  which the poll events carry, with ``since``: when the previous poll started (the consumer
  keeps one fetch in flight, so a poll may return records the broker served that early). After 20 failed polls in a row, or an unexpected exception (a
  ``crash`` event with the traceback), the consumer is closed and a new one (a new ``member``
  name) joins.

SIGTERM asks a worker to finish: producers stop sending, wait for every answer and exit;
consumers leave the group and exit. Every line is flushed as it is written, so a reader of the
file (the nemesis, deciding what was acknowledged) sees every answer the worker has had.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from functools import partial
from typing import Any

from logstore.client import Consumer, Producer, TopicPartition
from logstore.errors import LogstoreError

#: Client retries: enough to ride out a broker restart (tens of seconds of backoff).
RETRIES = 30
#: Consecutive failed polls before a consumer is replaced.
POLL_FAILURES = 20
#: More than a fetch can hold: a poll returns everything buffered, so the records of poll k were
#: fetched by a request sent during poll k-1 or k (the checker relies on that, see ``since``).
MAX_POLL_RECORDS = 10_000_000


class History:
    """One worker's history file: a JSON object per line, flushed per line, thread-safe."""

    def __init__(self, path: str, process: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self.process = process

    def write(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"t": time.monotonic(), "type": kind, "process": self.process,
                           **fields}, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def describe(error: BaseException) -> str:
    if isinstance(error, LogstoreError):
        return f"{error.reason}: {error.message}"[:300]
    return f"{type(error).__name__}: {error}"[:300]


def _stop_event() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


# -- producers ------------------------------------------------------------------------------------


def run_producer(options: argparse.Namespace, history: History, stop: threading.Event) -> None:
    rng = random.Random(options.seed)
    slots = threading.BoundedSemaphore(options.outstanding)
    topic = options.topic
    interval = 1.0 / options.rate
    with Producer(options.server, acks="all", retries=RETRIES, linger_ms=2) as producer:
        partitions = len(producer.partitions_for(topic))
        counter = 0
        next_at = time.monotonic()
        while not stop.is_set():
            if not slots.acquire(timeout=0.2):
                continue
            value = f"{options.name}-{counter}"
            counter += 1
            partition = rng.randrange(partitions)
            try:
                future = producer.send(topic, value.encode(), partition=partition)
            except LogstoreError as exc:
                history.write("send", topic=topic, partition=partition, value=value,
                              error=describe(exc))
                slots.release()
                continue

            def done(future: Any, value: str = value, partition: int = partition) -> None:
                try:
                    metadata = future.result()
                    history.write("send", topic=topic, partition=metadata.partition,
                                  value=value, offset=metadata.offset)
                except Exception as exc:  # the record failed for good
                    history.write("send", topic=topic, partition=partition, value=value,
                                  error=describe(exc))
                finally:
                    slots.release()

            future.add_done_callback(done)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_at = time.monotonic()
        producer.flush(timeout=120)


def write_send(history: History, topic: str, txn: int, value: str, partition: int,
               future: Any) -> None:
    """The ``send`` event of one transactional record, once its batch was answered."""
    try:
        metadata = future.result()
        history.write("send", topic=topic, partition=metadata.partition, value=value,
                      offset=metadata.offset, txn=txn)
    except Exception as exc:
        history.write("send", topic=topic, partition=partition, value=value,
                      error=describe(exc), txn=txn)


def run_txn_producer(options: argparse.Namespace, history: History, stop: threading.Event) -> None:
    rng = random.Random(options.seed)
    topic = options.topic
    counter = 0
    txn = 0
    with Producer(options.server, transactional_id=f"torture-{options.name}", retries=RETRIES,
                  linger_ms=2, transaction_timeout_ms=10_000) as producer:
        partitions = len(producer.partitions_for(topic))
        need_init = True
        while not stop.is_set():
            if need_init:
                try:
                    producer.init_transactions()
                    need_init = False
                except LogstoreError as exc:
                    history.write("error", where="init_transactions", error=describe(exc))
                    stop.wait(0.5)
                    continue
            txn += 1
            futures = []
            outcome = "unknown"
            state = "begin"
            try:
                producer.begin_transaction()
                state = "send"
                for _ in range(rng.randint(1, 10)):
                    value = f"{options.name}-{counter}"
                    counter += 1
                    partition = rng.randrange(partitions)
                    future = producer.send(topic, value.encode(), partition=partition)
                    # written when the batch is answered, not when the transaction ends: the
                    # nemesis takes acknowledged offsets as fsynced and must see them in time
                    future.add_done_callback(partial(write_send, history, topic, txn, value, partition))
                    futures.append(future)
                if rng.random() < 0.25:
                    state = "abort"
                    producer.flush()  # the records reach the log: read_committed must skip them
                    producer.abort_transaction()
                    outcome = "abort"
                else:
                    state = "commit"
                    producer.commit_transaction()
                    outcome = "commit"
            except LogstoreError as exc:
                history.write("error", where=state, txn=txn, error=describe(exc))
                if state in ("send", "commit") and exc.reason == "TRANSACTION_ABORTED":
                    try:  # a record failed: the transaction can only be aborted
                        producer.abort_transaction()
                        outcome = "abort"
                    except LogstoreError as again:
                        history.write("error", where="abort", txn=txn, error=describe(again))
                        need_init = True
                else:
                    need_init = True
            for future in futures:  # every send event is written before the txn event
                try:
                    future.result(timeout=120)
                except Exception:  # noqa: S110 - write_send recorded the error
                    pass
            history.write("txn", txn=txn, outcome=outcome)
            stop.wait(rng.uniform(0.0, 0.05))


# -- consumers ------------------------------------------------------------------------------------


def by_partition(records: Sequence[Any]) -> dict[TopicPartition, tuple[list[int], list[str]]]:
    """A poll's records per partition: offsets and values (decoded), in order."""
    found: dict[TopicPartition, tuple[list[int], list[str]]] = {}
    for record in records:
        offsets, values = found.setdefault(TopicPartition(record.topic, record.partition), ([], []))
        offsets.append(record.offset)
        values.append(record.value.decode() if record.value is not None else "")
    return found


def write_reads(history: History, name: str, records: Sequence[Any],
                since: float) -> dict[TopicPartition, int]:
    """The ``poll`` events of a reader (``group`` = ``member`` = ``name``, tenure 1); returns
    the next offset of every partition read."""
    positions = {}
    for tp, (offsets, values) in by_partition(records).items():
        history.write("poll", member=name, group=name, isolation="read_uncommitted", tenure=1,
                      since=since, topic=tp.topic, partition=tp.partition, offsets=offsets,
                      values=values)
        positions[tp] = offsets[-1] + 1
    return positions


class Member:
    """One ``Consumer`` incarnation of a consumer worker and its assignment bookkeeping."""

    def __init__(self, options: argparse.Namespace, history: History, incarnation: int) -> None:
        self.history = history
        self.name = f"{options.name}#{incarnation}"
        self.group = options.group
        self.isolation = options.isolation
        self.tenure: dict[TopicPartition, int] = {}
        self._tenures = 0
        self.consumer = Consumer(
            options.server, group_id=options.group, isolation_level=options.isolation,
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=200,
            retries=RETRIES, max_poll_records=MAX_POLL_RECORDS,
        )
        self.consumer.subscribe(options.topics, on_assign=self._assigned,
                                on_revoke=self._revoked, on_lost=self._lost)
        self.committed: dict[TopicPartition, int] = {}
        #: When the previous poll started: the records of the next poll were served after it.
        self.since = time.monotonic()

    def _note(self, kind: str, partitions: list[TopicPartition]) -> None:
        self.history.write(kind, member=self.name, group=self.group,
                           partitions=[[tp.topic, tp.partition, self.tenure.get(tp)]
                                       for tp in partitions])

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._tenures += 1
            self.tenure[tp] = self._tenures
        self._note("assign", partitions)

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._note("revoke", partitions)
        for tp in partitions:
            self.tenure.pop(tp, None)
            self.committed.pop(tp, None)

    def _lost(self, partitions: list[TopicPartition]) -> None:
        self._note("lost", partitions)
        for tp in partitions:
            self.tenure.pop(tp, None)
            self.committed.pop(tp, None)

    def step(self) -> None:
        """One poll, its events, then a commit of the positions (at-least-once)."""
        started = time.monotonic()
        records = self.consumer.poll(timeout=0.5)
        since, self.since = self.since, started
        for tp, (offsets, values) in by_partition(records).items():
            self.history.write("poll", member=self.name, group=self.group,
                               isolation=self.isolation, tenure=self.tenure.get(tp, -1),
                               since=since,
                               topic=tp.topic, partition=tp.partition, offsets=offsets,
                               values=values)
        positions = self.consumer.position_offsets()
        changed = {tp: o for tp, o in positions.items() if self.committed.get(tp) != o}
        if changed:
            try:
                self.consumer.commit(changed)
                self.committed.update(changed)
            except LogstoreError as exc:
                self.history.write("error", member=self.name, where="commit",
                                   error=describe(exc))

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception as exc:
            self.history.write("error", member=self.name, where="close", error=describe(exc))


def run_consumer(options: argparse.Namespace, history: History, stop: threading.Event) -> None:
    incarnation = 0
    member: Member | None = None
    failures = 0
    try:
        while not stop.is_set():
            if member is None:
                incarnation += 1
                try:
                    member = Member(options, history, incarnation)
                except LogstoreError as exc:
                    history.write("error", where="subscribe", error=describe(exc))
                    stop.wait(0.5)
                    continue
                failures = 0
            try:
                member.step()
                failures = 0
            except LogstoreError as exc:
                failures += 1
                history.write("error", member=member.name, where="poll", error=describe(exc))
                if failures >= POLL_FAILURES:
                    member.close()
                    member = None
                else:
                    stop.wait(0.2)
            except Exception:  # a client bug: note it, start over with a new consumer
                history.write("crash", member=member.name, error=traceback.format_exc())
                member.close()
                member = None
                stop.wait(0.2)
    finally:
        if member is not None:
            member.close()


def run_reader(options: argparse.Namespace, history: History, stop: threading.Event) -> None:
    """Read every partition of ``--topics`` from the start by explicit assignment (no group),
    keeping the positions itself: a replacement ``Consumer`` (after 20 failed polls in a row)
    seeks to them, so one reader's polls of a partition are one tenure from start to end."""
    positions: dict[TopicPartition, int] = {}
    consumer: Consumer | None = None
    failures = 0
    since = time.monotonic()
    reported: dict[TopicPartition, int] = {}
    try:
        while not stop.is_set():
            if consumer is None:
                try:
                    consumer = Consumer(options.server, auto_offset_reset="earliest",
                                        fetch_max_wait_ms=200, retries=RETRIES,
                                        max_poll_records=MAX_POLL_RECORDS)
                    consumer.assign(options.topics)
                    for tp, offset in positions.items():
                        consumer.seek(tp, offset)
                except LogstoreError as exc:
                    history.write("error", where="assign", error=describe(exc))
                    consumer = None
                    stop.wait(0.5)
                    continue
                failures = 0
            started = time.monotonic()
            try:
                records = consumer.poll(timeout=0.5)
                failures = 0
            except LogstoreError as exc:
                failures += 1
                history.write("error", member=options.name, where="poll", error=describe(exc))
                if failures >= POLL_FAILURES:
                    consumer.close()
                    consumer = None
                stop.wait(0.2)
                continue
            positions.update(write_reads(history, options.name, records, since))
            since = started
            if positions != reported:  # what the run's drain phase waits on
                reported = dict(positions)
                history.write("positions", positions=[[tp.topic, tp.partition, offset]
                                                      for tp, offset in positions.items()])
    finally:
        if consumer is not None:
            consumer.close()


ROLES = {"producer": run_producer, "txn-producer": run_txn_producer, "consumer": run_consumer,
         "reader": run_reader}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.torture.workload")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--server", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--history", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--topic", help="producers: the topic to write")
    parser.add_argument("--topics", nargs="+", default=[], help="consumers: topics to read")
    parser.add_argument("--group", help="consumers: the group")
    parser.add_argument("--isolation", default="read_uncommitted",
                        choices=["read_uncommitted", "read_committed"])
    parser.add_argument("--rate", type=float, default=300.0, help="producers: records/s")
    parser.add_argument("--outstanding", type=int, default=200,
                        help="producers: unanswered records at most")
    options = parser.parse_args(argv)
    stop = _stop_event()
    history = History(options.history, options.name)
    try:
        ROLES[options.role](options, history, stop)
    except Exception:
        history.write("crash", error=traceback.format_exc())
        raise
    finally:
        history.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
