"""The Python client end to end against a real broker (``python -m bench client``).

Starts a broker (``logstore serve``) on a free loopback port in a temporary directory and measures,
through gRPC on loopback with one client and one partition — the numbers the broker/client issue
sets goals for:

- **produce, 100 B**: ``send_batch()`` of a 2-D uint8 array (columnar) and ``send()`` per record
  then ``flush()``, both with the producer's defaults (``acks="all"``, idempotent, 1 MiB batches,
  5 requests in flight), to a ``flush=never`` topic; ``send_batch()`` again to a ``flush=always``
  topic (every acknowledged batch fdatasynced). Timed from the first call until every record is
  acknowledged.
- **consume, 100 B**: a topic written once, read from the beginning by a fresh ``Consumer`` with
  ``assign()``: ``poll_columns()`` (numpy columns, values as zero-copy views) and ``poll()`` (a
  ``ConsumerRecord`` per record). Timed from the first poll until the last record arrived.
  The ``send()`` and ``poll()`` rows also show the client's CPU per record (``ClientCpu``: the
  whole process, and the calling thread alone), which a shared box's wall clock hides.
- **1 KiB**: ``send_batch()`` and ``poll_columns()`` of 1,024-byte records, in MB/s; the produce
  row also shows the spawned broker's CPU time per MiB (user + system, from ``/proc``), and the
  row after it the broker alone: the same batches through ``Broker.produce`` in this process
  (``broker_alone.py``), so the difference is what gRPC and the client cost.
- **transactions**: ``send()`` per record, transactional (100, 1,000, 10,000 records per
  transaction) as a ratio to idempotent, and the EndTxn round trip (``client_transactions.py``).
- **latency**: one 100 B record at a time with ``acks=1`` and ``linger_ms=0`` (``send()`` then
  ``result()``), one per millisecond (light load); the goal is on the p99 of the round trips.

Each workload runs once to warm up, then ``--repeats`` times (default 3); the table shows the
median. Produce topics are deleted after each run, so a full run needs ~1 GB of disk at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import broker_alone
from bench.client_transactions import RECORDS_PER_TRANSACTION, TransactionBench
from bench.common import Goal, Progress, Result, print_table
from bench.spawned import Broker

SMALL = 100
LARGE = 1024
MB = 1_000_000
MIB = 1 << 20


@dataclass(frozen=True)
class Plan:
    produce_records: int  # 100 B records per produce run (send() runs use half)
    consume_records: int  # 100 B records read per consume run
    large_records: int  # 1 KiB records per run
    latency_samples: int
    repeats: int
    e2e_seconds: float = 3.0  # how long the end-to-end latency workload sends
    transaction_records: int = 20_000  # records per transactional / idempotent run
    end_txn_samples: int = 50
    #: Interleaved (idempotent, transactional) pairs of the 10,000-record row, at least.
    transaction_goal_pairs: int = 1


QUICK = Plan(produce_records=100_000, consume_records=200_000, large_records=20_000,
             latency_samples=200, repeats=1, e2e_seconds=0.5, transaction_records=20_000,
             end_txn_samples=30, transaction_goal_pairs=5)  # 20,000 records a run: 5 pairs are cheap
FULL = Plan(produce_records=2_000_000, consume_records=4_000_000, large_records=500_000,
            latency_samples=3_000, repeats=3, e2e_seconds=3.0, transaction_records=200_000,
            end_txn_samples=200, transaction_goal_pairs=7)
#: The end-to-end latency workload's rate (issue 16's row).
E2E_RATE = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("client")
    group.add_argument("--server", metavar="HOST:PORT",
                       help="use this broker instead of starting one (topics it creates are deleted)")


def run(options: argparse.Namespace, progress: Progress) -> list[Result]:
    plan = QUICK if options.quick else FULL
    if options.repeats is not None:
        plan = dataclasses.replace(plan, repeats=options.repeats)
    broker = None if options.server else Broker("logstore-bench-client-")
    try:
        bench = ClientBench(options.server or broker.address, plan,  # type: ignore[union-attr]
                            None if broker is None else broker.process.pid)
        txn = TransactionBench(bench.server, plan.transaction_records, plan.repeats,
                               plan.end_txn_samples, bench._topic, bench.admin.delete_topic,
                               plan.transaction_goal_pairs)
        tasks: list[tuple[str, str, Callable[[str, str], Result]]] = [
            ("produce", "produce 100 B: send_batch(), flush=never", bench.produce_batch),
            ("produce", "produce 100 B: send() per record, flush=never", bench.produce_send),
            ("produce", "produce 100 B: send_batch(), flush=always", bench.produce_durable),
            ("consume", "consume 100 B: poll_columns()", bench.consume_columns),
            ("consume", "consume 100 B: poll() records", bench.consume_records),
            ("1 KiB", "produce 1 KiB: send_batch()", bench.produce_large),
            ("1 KiB", "produce 1 KiB: the broker alone, Broker.produce in process",
             bench.produce_large_broker_alone),
            ("1 KiB", "consume 1 KiB: poll_columns()", bench.consume_large),
            ("latency", "one 100 B record, acks=1, linger_ms=0: p50 (goal on p99)", bench.latency),
            ("latency", "end-to-end send() -> poll() at 10,000 rec/s, 100 B, defaults",
             bench.end_to_end),
            ("transactions", "produce 100 B: idempotent, send() per record", txn.idempotent),
            *(("transactions", f"produce 100 B: transactional, {n:,} per transaction",
               txn.transactional(n)) for n in RECORDS_PER_TRANSACTION),
            ("transactions", "EndTxn (commit after flush, 1,000 records)", txn.end_txn),
        ]
        tasks = [t for t in tasks if not options.filter
                 or any(f.lower() in f"{t[0]} {t[1]}".lower() for f in options.filter)]
        progress.add(len(tasks))
        results = []
        for group, name, task in tasks:
            progress.start(name)
            results.append(task(group, name))
            progress.done()
        bench.close()
        return results
    finally:
        if broker is not None:
            broker.stop()


class ClientBench:
    def __init__(self, server: str, plan: Plan, server_pid: int | None = None) -> None:
        from logstore.client import Admin

        self.server = server
        self.plan = plan
        #: The spawned broker's process (its CPU time is read from /proc); None with --server.
        self.server_pid = server_pid
        #: CPU seconds of each send_batch run: the broker, its event loop thread, this client.
        self._server_cpu_s: list[tuple[float, ...]] = []
        self.admin = Admin(server)
        self._filled: dict[int, tuple[str, int]] = {}
        rng = np.random.default_rng(7)
        self._pool = {size: rng.integers(0, 256, (65_536, size), dtype=np.uint8)
                      for size in (SMALL, LARGE)}

    def close(self) -> None:
        for topic, _ in self._filled.values():
            self.admin.delete_topic(topic)
        self.admin.close()

    def _records(self, size: int, count: int) -> np.ndarray:
        """``count`` rows of ``size`` random bytes (the pool repeated)."""
        pool = self._pool[size]
        return np.resize(pool, (count, size)) if count > len(pool) else pool[:count]

    def _topic(self, flush: str = "never") -> str:
        name = f"bench-client-{uuid.uuid4().hex[:8]}"
        self.admin.create_topic(name, 1, config={"flush": flush})
        return name

    def _runs(self, body: Callable[[], float]) -> list[float]:
        """Seconds of each timed run (the first run warms up and is dropped)."""
        return [body() for _ in range(self.plan.repeats + 1)][1:]

    # -- produce -----------------------------------------------------------------------------

    def _send_batch(self, size: int, count: int, flush: str) -> Callable[[], float]:
        from logstore.client import Producer

        rows = self._records(size, count)

        def body() -> float:
            topic = self._topic(flush)
            try:
                with Producer(self.server) as producer:
                    before = _cpu_s(self.server_pid)
                    start = time.perf_counter()
                    producer.send_batch(topic, rows, partition=0).result()
                    elapsed = time.perf_counter() - start
                    after = _cpu_s(self.server_pid)
                    self._server_cpu_s.append(tuple(b - a for a, b in zip(before, after, strict=True)))
                    return elapsed
            finally:
                self.admin.delete_topic(topic)

        return body

    def produce_batch(self, group: str, name: str) -> Result:
        count = self.plan.produce_records
        samples = self._runs(self._send_batch(SMALL, count, "never"))
        return Result("client", group, name, "run", count, count * SMALL, samples,
                      Goal(min_rate=5e6))

    def produce_durable(self, group: str, name: str) -> Result:
        count = self.plan.produce_records
        samples = self._runs(self._send_batch(SMALL, count, "always"))
        return Result("client", group, name, "run", count, count * SMALL, samples,
                      Goal(min_rate=3e6))

    def produce_large(self, group: str, name: str) -> Result:
        count = self.plan.large_records
        self._server_cpu_s = []
        samples = self._runs(self._send_batch(LARGE, count, "never"))
        result = Result("client", group, name, "run", count, count * LARGE, samples,
                        Goal(min_rate=700 * MB / LARGE, label=">= 700 MB/s"))
        if self.server_pid is not None:  # CPU per MiB: broker, its event loop thread, this client
            broker, loop, client = (statistics.median(column) * 1e3 / (count * LARGE / MIB)
                                    for column in zip(*self._server_cpu_s[1:], strict=True))
            result.params.update(server_cpu_ms_per_mib=broker, server_loop_cpu_ms_per_mib=loop,
                                 client_cpu_ms_per_mib=client)
            result.name += f" (CPU ms/MiB: broker {broker:.2f}, {loop:.2f} of it its loop; client {client:.2f})"
        return result

    def produce_large_broker_alone(self, group: str, name: str) -> Result:
        count = self.plan.large_records
        samples = broker_alone.produce_seconds(self._records(LARGE, count), self.plan.repeats)
        # the broker alone must not be what keeps the end-to-end row from its goal
        result = Result("client", group, name, "run", count, count * LARGE, samples,
                        Goal(min_rate=700 * MB / LARGE, label=">= 700 MB/s"))
        result.name += f" ({result.median * 1e3 / (count * LARGE / MIB):.2f} ms/MiB)"
        return result

    def produce_send(self, group: str, name: str) -> Result:
        from logstore.client import Producer

        count = self.plan.produce_records // 2
        values = [bytes(row) for row in self._records(SMALL, min(count, 65_536))]
        values = (values * (count // len(values) + 1))[:count]

        cpu = ClientCpu(count)

        def body() -> float:
            topic = self._topic()
            try:
                with Producer(self.server) as producer:
                    send = producer.send
                    cpu.start()
                    start = time.perf_counter()
                    for value in values:
                        send(topic, value)
                    cpu.caller_done()
                    producer.flush()
                    elapsed = time.perf_counter() - start
                    cpu.stop()
                    return elapsed
            finally:
                self.admin.delete_topic(topic)

        return cpu.describe(Result("client", group, name, "run", count, count * SMALL,
                                   self._runs(body), Goal(min_rate=2.5e6)))

    # -- consume -----------------------------------------------------------------------------

    def _filled_topic(self, size: int, count: int) -> str:
        """A topic holding ``count`` records of ``size`` bytes (written once per size)."""
        from logstore.client import Producer

        if size not in self._filled:
            topic = self._topic()
            with Producer(self.server) as producer:
                step = 1_000_000 // size * 10  # ~10 MB per call
                for first in range(0, count, step):
                    producer.send_batch(topic, self._records(size, min(step, count - first)),
                                        partition=0)
                producer.flush()
            self._filled[size] = (topic, count)
        return self._filled[size][0]

    def _consume(self, topic: str, count: int, columns: bool,
                 cpu: ClientCpu | None = None) -> Callable[[], float]:
        from logstore.client import Consumer

        def body() -> float:
            with Consumer(self.server, auto_offset_reset="earliest") as consumer:
                consumer.assign([(topic, 0)])
                consumer.position((topic, 0))  # ListOffsets before the clock starts
                seen = 0
                deadline = time.monotonic() + 300
                if cpu is not None:
                    cpu.start()
                start = time.perf_counter()
                if columns:
                    while seen < count and time.monotonic() < deadline:
                        for batch in consumer.poll_columns(timeout=1.0).values():
                            seen += len(batch)
                else:
                    while seen < count and time.monotonic() < deadline:
                        seen += len(consumer.poll(timeout=1.0))
                elapsed = time.perf_counter() - start
                if cpu is not None:
                    cpu.caller_done()
                    cpu.stop()
            if seen < count:
                raise RuntimeError(f"read {seen} of {count} records")
            return elapsed

        return body

    def consume_columns(self, group: str, name: str) -> Result:
        count = self.plan.consume_records
        topic = self._filled_topic(SMALL, count)
        return Result("client", group, name, "run", count, count * SMALL,
                      self._runs(self._consume(topic, count, True)), Goal(min_rate=10e6))

    def consume_records(self, group: str, name: str) -> Result:
        count = self.plan.consume_records
        topic = self._filled_topic(SMALL, count)
        cpu = ClientCpu(count)
        return cpu.describe(Result("client", group, name, "run", count, count * SMALL,
                                   self._runs(self._consume(topic, count, False, cpu)),
                                   Goal(min_rate=4e6)))

    def consume_large(self, group: str, name: str) -> Result:
        count = self.plan.large_records
        topic = self._filled_topic(LARGE, count)
        return Result("client", group, name, "run", count, count * LARGE,
                      self._runs(self._consume(topic, count, True)),
                      Goal(min_rate=1200 * MB / LARGE, label=">= 1.2 GB/s"))

    # -- latency -----------------------------------------------------------------------------

    def latency(self, group: str, name: str) -> Result:
        from logstore.client import Producer

        topic = self._topic()
        value = bytes(self._records(SMALL, 1)[0])
        samples: list[float] = []
        try:
            with Producer(self.server, acks=1, linger_ms=0) as producer:
                for _ in range(200):  # warm-up
                    producer.send(topic, value, partition=0).result()
                for _ in range(self.plan.latency_samples):
                    start = time.perf_counter()
                    producer.send(topic, value, partition=0).result()
                    samples.append(time.perf_counter() - start)
                    time.sleep(0.001)
        finally:
            self.admin.delete_topic(topic)
        result = Result("client", group, name, "record", 1, SMALL, samples,
                        Goal(max_seconds=0.002, percentile=99))
        result.params.update(_percentiles(result))
        result.name = (f"{name.split(':')[0]}: p50 {result.median * 1e3:.2f} ms, "
                       f"p99 {result.percentile(99) * 1e3:.2f} ms")
        return result


    def end_to_end(self, group: str, name: str) -> Result:
        """The peers bench's latency roles (``bench.peers.logstore_runner``) at ``E2E_RATE``:
        this process sends with the producer's defaults, a spawned one polls."""
        import multiprocessing

        from bench.peers.logstore_runner import latency_send

        topic = self._topic()
        total = int(E2E_RATE * self.plan.e2e_seconds)
        spec = {"server": self.server, "topic": topic, "records": total, "rate": E2E_RATE,
                "size": SMALL, "seed": 7, "timeout_s": 60.0,
                "settle_s": min(0.5, self.plan.e2e_seconds / 5)}
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(2)
        answer = context.SimpleQueue()
        receiver = context.Process(target=_receive, args=(spec, barrier, answer), daemon=True)
        receiver.start()
        try:
            latency_send(spec, barrier.wait)
            received = answer.get()
        finally:
            receiver.join(10)
            self.admin.delete_topic(topic)
        latency = received["latency"]
        result = Result("client", group, name, "run", received["records"],
                        received["records"] * SMALL, [received["elapsed_s"]])
        result.params.update({key: latency[key] for key in ("p50_ms", "p99_ms", "p999_ms")})
        result.name = (f"end-to-end send() -> poll() at {E2E_RATE:,}/s: p50 {latency['p50_ms']:.2f}"
                       f" ms, p99 {latency['p99_ms']:.2f} ms, p99.9 {latency['p999_ms']:.2f} ms")
        return result


def _receive(spec: dict[str, Any], barrier: Any, answer: Any) -> None:
    """The receiving process of ``end_to_end``."""
    from bench.peers.logstore_runner import latency_receive

    answer.put(latency_receive(spec, barrier.wait))
class ClientCpu:
    """CPU time of this (the client's) process per record over the timed runs: all its threads
    (the sender and gRPC's too) and the calling thread alone (``time.thread_time``), so a row
    says what a record costs the client, which a shared box's wall clock does not."""

    def __init__(self, records: int) -> None:
        self.records = records
        self._process: list[float] = []
        self._caller: list[float] = []
        self._start = (0.0, 0.0)
        self._caller_end = 0.0

    def start(self) -> None:
        self._start = (time.process_time(), time.thread_time())

    def caller_done(self) -> None:
        """The calling thread's part ends here (before ``flush``, which only waits)."""
        self._caller_end = time.thread_time()

    def stop(self) -> None:
        self._process.append(time.process_time() - self._start[0])
        self._caller.append(self._caller_end - self._start[1])

    def describe(self, result: Result) -> Result:
        """``result`` with the medians (the warm-up run left out) in its name and params."""
        process_ns = statistics.median(self._process[1:] or self._process) * 1e9 / self.records
        caller_ns = statistics.median(self._caller[1:] or self._caller) * 1e9 / self.records
        result.params.update(client_cpu_ns_per_record=process_ns,
                             caller_cpu_ns_per_record=caller_ns)
        result.name += f" (client CPU {process_ns:.0f} ns/record, {caller_ns:.0f} in the caller)"
        return result


def _process_cpu_s(pid: int | None, stat: str = "stat") -> float:
    """User + system CPU seconds of process ``pid`` so far (0 when unknown); ``stat`` =
    ``task/PID/stat``: of its main thread alone (the broker's event loop)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/{stat}", encoding="ascii") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int | None) -> tuple[float, float, float]:
    """CPU seconds so far of the broker, of its event loop thread, and of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (_process_cpu_s(pid), _process_cpu_s(pid, f"task/{pid}/stat"),
            usage.ru_utime + usage.ru_stime)


def _percentiles(result: Result) -> dict[str, Any]:
    return {f"p{q:g}_ms": result.percentile(q) * 1e3 for q in (50, 90, 99, 99.9)}


def print_results(results: list[Result]) -> None:
    """The table, then issue 16's scorecard (``bench.scorecard``)."""
    from bench.scorecard import print_scorecard

    print_table(results)
    print_scorecard(results)


def describe(results: list[Result]) -> dict[str, Any]:
    from bench.scorecard import evaluate

    return {"client": {"issue16": evaluate(results)}}
