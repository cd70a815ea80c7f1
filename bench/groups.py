"""Consumer groups and transactions against a real broker (``python -m bench groups``).

Starts a broker (``logstore serve``) on a free loopback port in a temporary directory, then:

- **group consume, N members** (N = 1, 2, 4): a fresh group reads a topic of 8 partitions, every
  member a ``Consumer`` with ``poll_columns`` in its own thread; timed from ``subscribe`` until
  the members together have read every record (joining included). One process, so the members
  share one GIL: on a small machine more members add coordination, not CPU.
- **rebalance: a member joins**: two members own the 8 partitions and keep polling; a third
  subscribes; timed until every partition is owned again and the newcomer holds its share
  (revocations, commits and hand-overs included).
- **produce: idempotent** vs **transactional (1,000 records per transaction)**: ``send()`` per
  record then ``flush()`` vs ``begin_transaction``, 1,000 ``send()``, ``commit_transaction``;
  the transactional goal is 0.8x the idempotent rate measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from bench.common import Goal, Progress, Result
from bench.spawned import Broker

PARTITIONS = 8
MEMBERS = (1, 2, 4)
VALUE_BYTES = 100
TRANSACTION_RECORDS = 1000
TRANSACTIONAL_GOAL = 0.8


@dataclass(frozen=True)
class Plan:
    consume_records: int
    produce_records: int
    repeats: int


QUICK = Plan(consume_records=400_000, produce_records=50_000, repeats=1)
FULL = Plan(consume_records=4_000_000, produce_records=500_000, repeats=5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("groups")
    group.add_argument("--server", metavar="HOST:PORT",
                       help="use this broker instead of starting one (its topics are kept)")


def run(options: argparse.Namespace, progress: Progress) -> list[Result]:
    plan = QUICK if options.quick else FULL
    if options.repeats is not None:
        plan = Plan(plan.consume_records, plan.produce_records, options.repeats)
    broker = None if options.server else Broker("logstore-bench-groups-")
    try:
        server = options.server or broker.address  # type: ignore[union-attr]
        bench = GroupBench(server, plan)
        tasks = [
            *(("consume", f"group consume, {n} member{'s' if n > 1 else ''} x 8 partitions",
               bench.consume(n)) for n in MEMBERS),
            ("rebalance", "rebalance: a 3rd member joins until all 8 owned", bench.rebalance),
            ("produce", "produce: idempotent, send() per record", bench.produce_idempotent),
            ("produce", f"produce: transactional, {TRANSACTION_RECORDS:,} per transaction",
             bench.produce_transactional),
        ]
        tasks = [t for t in tasks if not options.filter or any(f in t[1] for f in options.filter)]
        progress.add(len(tasks))
        results = []
        for group, name, task in tasks:
            progress.start(name)
            results.append(task(group, name))  # type: ignore[operator]
            progress.done()
        return results
    finally:
        if broker is not None:
            broker.stop()


class GroupBench:
    def __init__(self, server: str, plan: Plan) -> None:
        from logstore.client import Admin

        self.server = server
        self.plan = plan
        self.admin = Admin(server)
        self._source: str | None = None
        self._idempotent_rate: float | None = None

    def _topic(self, partitions: int) -> str:
        name = f"bench-groups-{uuid.uuid4().hex[:8]}"
        self.admin.create_topic(name, partitions)
        return name

    def source(self) -> str:
        """The 8-partition topic the consume workloads read (filled once)."""
        if self._source is None:
            from logstore.client import Producer

            topic = self._topic(PARTITIONS)
            rows = np.zeros((self.plan.consume_records // PARTITIONS, VALUE_BYTES), np.uint8)
            with Producer(self.server) as producer:
                futures = [producer.send_batch(topic, rows, partition=p)
                           for p in range(PARTITIONS)]
                for future in futures:
                    future.result()
            self._source = topic
        return self._source

    # -- consuming ---------------------------------------------------------------------------

    def consume(self, members: int) -> object:
        def task(group: str, name: str) -> Result:
            topic = self.source()
            total = self.plan.consume_records // PARTITIONS * PARTITIONS
            samples = [self._consume_once(topic, members, total)
                       for _ in range(self.plan.repeats)]
            return Result("groups", group, name, "run", total, total * VALUE_BYTES, samples,
                          params={"members": members, "partitions": PARTITIONS})

        return task

    def _consume_once(self, topic: str, members: int, total: int) -> float:
        from logstore.client import Consumer

        group = f"bench-{uuid.uuid4().hex[:8]}"
        consumers = [Consumer(self.server, group_id=group, auto_offset_reset="earliest",
                              enable_auto_commit=False) for _ in range(members)]
        counts = [0] * members
        done = threading.Event()
        lock = threading.Lock()

        def member(index: int) -> None:
            consumer = consumers[index]
            while not done.is_set():
                got = sum(len(c) for c in consumer.poll_columns(timeout=0.2).values())
                with lock:
                    counts[index] += got
                    if sum(counts) >= total:
                        done.set()

        start = time.perf_counter()
        for consumer in consumers:
            consumer.subscribe([topic])
        threads = [threading.Thread(target=member, args=(i,)) for i in range(members)]
        for thread in threads:
            thread.start()
        done.wait(300)
        elapsed = time.perf_counter() - start
        for thread in threads:
            thread.join()
        for consumer in consumers:
            consumer.close()
        return elapsed

    # -- rebalancing -------------------------------------------------------------------------

    def rebalance(self, group: str, name: str) -> Result:
        samples = [self._rebalance_once() for _ in range(self.plan.repeats)]
        return Result("groups", group, name, "join", PARTITIONS, None, samples,
                      params={"partitions": PARTITIONS})

    def _rebalance_once(self) -> float:
        from logstore.client import Consumer

        topic = self._topic(PARTITIONS)
        group = f"bench-{uuid.uuid4().hex[:8]}"
        stop = threading.Event()
        consumers: list[Consumer] = []
        threads: list[threading.Thread] = []

        def add_member() -> Consumer:
            consumer = Consumer(self.server, group_id=group, fetch_max_wait_ms=100)
            consumer.subscribe([topic])
            consumers.append(consumer)
            thread = threading.Thread(target=poll, args=(consumer,))
            threads.append(thread)
            thread.start()
            return consumer

        def poll(consumer: Consumer) -> None:
            while not stop.is_set():
                consumer.poll(timeout=0.05)

        def owned() -> list[int]:
            return [len(c.assignment()) for c in consumers]

        try:
            add_member()
            add_member()
            _wait(lambda: sorted(owned()) == [4, 4])
            start = time.perf_counter()
            add_member()
            _wait(lambda: sum(owned()) == PARTITIONS and min(owned()) >= 2)
            return time.perf_counter() - start
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            for consumer in consumers:
                consumer.close()

    # -- producing ---------------------------------------------------------------------------

    def produce_idempotent(self, group: str, name: str) -> Result:
        from logstore.client import Producer

        count = self.plan.produce_records
        value = b"x" * VALUE_BYTES
        samples = []
        for _ in range(self.plan.repeats + 1):  # the first is a warm-up
            topic = self._topic(1)
            with Producer(self.server) as producer:
                start = time.perf_counter()
                send = producer.send
                for _ in range(count):
                    send(topic, value)
                producer.flush()
                samples.append(time.perf_counter() - start)
        samples = samples[1:]
        result = Result("groups", group, name, "run", count, count * VALUE_BYTES, samples)
        self._idempotent_rate = result.records_per_second
        return result

    def produce_transactional(self, group: str, name: str) -> Result:
        from logstore.client import Producer

        count = self.plan.produce_records
        value = b"x" * VALUE_BYTES
        samples = []
        for _ in range(self.plan.repeats + 1):
            topic = self._topic(1)
            with Producer(self.server, transactional_id=f"bench-{uuid.uuid4().hex}") as producer:
                producer.init_transactions()
                start = time.perf_counter()
                for first in range(0, count, TRANSACTION_RECORDS):
                    producer.begin_transaction()
                    send = producer.send
                    for _ in range(min(TRANSACTION_RECORDS, count - first)):
                        send(topic, value)
                    producer.commit_transaction()
                samples.append(time.perf_counter() - start)
        samples = samples[1:]
        goal = None
        if self._idempotent_rate is not None:
            goal = Goal(min_rate=TRANSACTIONAL_GOAL * self._idempotent_rate)
        result = Result("groups", group, name, "run", count, count * VALUE_BYTES, samples, goal,
                        params={"records_per_transaction": TRANSACTION_RECORDS})
        if self._idempotent_rate:
            ratio = result.records_per_second / self._idempotent_rate
            result.name += f" ({ratio:.2f}x idempotent)"
            result.params["ratio_to_idempotent"] = ratio
        return result


def _wait(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError("the group did not settle")
        time.sleep(0.005)


if __name__ == "__main__":  # pragma: no cover
    os.execv(sys.executable, [sys.executable, "-m", "bench", "groups", *sys.argv[1:]])
