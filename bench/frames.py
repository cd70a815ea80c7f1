"""Streams as tables (``python -m bench frames``): a topic range into Arrow, pandas, polars and
Parquet, beside the paths a user has today.

Against a spawned broker on loopback, one partition, one client, a topic written once per size:

- **100 B** (10 M records; ``--quick`` 200 k): ``read_arrow`` (a ``pyarrow.Table``),
  ``poll_columns()`` in a loop (numpy columns, the reference ``read_arrow`` is held to: >= 80 %),
  ``read_pandas``, ``read_polars``, ``iter_arrow`` into a Parquet file, and ``poll()`` records
  into a pandas DataFrame (what a logstore user without this writes).
  ``read_pandas`` (bytes objects per value: the slow part) reads the first 2 M (``--quick``
  100 k), like the ``poll()`` row.
- **100 B lz4** (the same counts): values that compress as JSON events do (~3x with lz4),
  produced with ``codec="lz4"``: the broker stores and sends the compressed batches, the client
  decompresses each into its Arrow buffer on two threads (fewer bytes through gRPC, the cost
  per record that random bytes cannot avoid). ``read_arrow`` and ``poll_columns()``.
- **1 KiB** (1 M; ``--quick`` 50 k): ``read_arrow`` and ``poll_columns()``, in MB/s.
- **floor** (100 B and 1 KiB): ``read_arrow``'s fetch alone (its Subscribe stream, messages kept,
  nothing decoded); the CPU lines then print read_arrow's own client CPU per record (read_arrow
  minus this), the part the ratio to ``poll_columns()`` is about.
- **A/B of the transport** (100 B and 1 KiB): ``read_arrow`` with its streams read as HTTP/2
  calls to the gRPC port, served by the broker's grpcio (``fetch.CHANNEL_STREAMS = False``:
  ``socket_stream``), and read by grpcio on both ends (``fetch.SOCKET_STREAMS = False``),
  instead of off the broker's Subscribe data channel (``channel_stream``, the default).
- **JSON** (1 M objects of ~110 B; ``--quick`` 50 k): ``read_arrow(value_format="json")`` into
  typed columns, and the same with each message parsed in the caller's thread (no parse
  threads: their A/B in one run).
- **peers** (100 B, 200 k; ``--quick`` 5 k; JetStream the first 20 k, ``--quick`` 2 k: it
  reads ~3 k/s): Redis Streams ``XRANGE`` and NATS JetStream pull ``fetch`` into a pandas
  DataFrame (``bench.frames_peers``); the goal for ``read_arrow`` is >= 50x the Redis path,
  compared as records/s measured in the same run.
- **memory**: ``iter_arrow`` over a tenth of the 100 B range and over all of it, each in a fresh
  process, reporting the peak RSS growth (VmHWM minus the RSS before reading): flat means the
  whole range costs about what the tenth does.

Each workload runs once to warm up, then ``--repeats`` times (default 3, ``--quick`` 1); the
table shows the median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Goal, Progress, Result, print_table
from bench.spawned import Broker

SMALL, LARGE = 100, 1024
MB = 1_000_000


@dataclass(frozen=True)
class Plan:
    small_records: int
    large_records: int
    json_records: int
    peer_records: int
    slow_records: int  # poll() into a DataFrame: the slow path, on fewer records
    repeats: int
    jetstream_records: int = 20_000  # ~3 k/s through nats-py: 200 k took 5 minutes a run set


QUICK = Plan(200_000, 50_000, 50_000, 5_000, 100_000, 1, 2_000)
FULL = Plan(10_000_000, 1_000_000, 1_000_000, 200_000, 2_000_000, 3)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("frames")
    group.add_argument("--no-peers", action="store_true", help="skip the Redis and JetStream rows")


def run(options: argparse.Namespace, progress: Progress) -> list[Result]:
    plan = QUICK if options.quick else FULL
    if options.repeats is not None:
        plan = replace(plan, repeats=options.repeats)
    broker = Broker("logstore-bench-frames-")
    try:
        bench = FramesBench(broker.address, plan, broker.process.pid)
        tasks: list[tuple[str, Callable[[], Result]]] = [
            ("100 B", bench.read_arrow_small), ("100 B", bench.poll_columns_small),
            ("100 B", bench.stream_small), ("100 B", bench.read_arrow_http2_small),
            ("100 B", bench.read_arrow_grpc_small),
            ("100 B", bench.read_pandas), ("100 B", bench.read_polars),
            ("100 B", bench.parquet), ("100 B", bench.poll_frame),
            ("100 B lz4", bench.read_arrow_lz4), ("100 B lz4", bench.poll_columns_lz4),
            ("1 KiB", bench.read_arrow_large), ("1 KiB", bench.poll_columns_large),
            ("1 KiB", bench.stream_large), ("1 KiB", bench.read_arrow_http2_large),
            ("1 KiB", bench.read_arrow_grpc_large),
            ("JSON", bench.read_json), ("JSON", bench.read_json_inline),
        ]
        if not options.no_peers:
            tasks += [("peers", bench.redis), ("peers", bench.jetstream)]
        tasks += [("memory", bench.memory_tenth), ("memory", bench.memory_whole)]
        tasks = [t for t in tasks if not options.filter
                 or any(f.lower() in f"{t[0]} {t[1].__name__}".lower() for f in options.filter)]
        progress.add(len(tasks))
        results = []
        try:
            for _group, task in tasks:
                progress.start(task.__name__)
                results.append(task())
                progress.done()
        finally:
            bench.close()
        return results
    finally:
        broker.stop()


class FramesBench:
    def __init__(self, server: str, plan: Plan, broker_pid: int | None = None) -> None:
        self.server = server
        self.plan = plan
        self.broker_pid = broker_pid
        self._cpu: list[tuple[float, float]] = []
        self._topics: dict[str, str] = {}
        self._peers: Any = None
        rng = np.random.default_rng(11)
        self._pool = {size: rng.integers(0, 256, (65_536, size), dtype=np.uint8)
                      for size in (SMALL, LARGE)}
        self._dir = tempfile.mkdtemp(prefix="logstore-bench-frames-out-")

    def close(self) -> None:
        if self._peers is not None:
            self._peers.close()
        shutil.rmtree(self._dir, ignore_errors=True)  # the Parquet file: 1 GB at full size

    def _rows(self, size: int, count: int) -> np.ndarray:
        pool = self._pool[size]
        return np.resize(pool, (count, size)) if count > len(pool) else pool[:count]

    def _topic(self, what: str, fill: Callable[[Any, str], None], codec: str = "none") -> str:
        from logstore.client import Admin, Producer

        if what not in self._topics:
            name = f"bench-frames-{what}-{uuid.uuid4().hex[:6]}"
            with Admin(self.server) as admin:
                admin.create_topic(name, 1, config={"flush": "never"})
            with Producer(self.server, codec=codec) as producer:
                fill(producer, name)
                producer.flush()
            self._topics[what] = name
        return self._topics[what]

    def _filled(self, size: int, count: int) -> str:
        def fill(producer: Any, name: str) -> None:
            step = 10 * MB // size
            for first in range(0, count, step):
                producer.send_batch(name, self._rows(size, min(step, count - first)), partition=0)

        return self._topic(f"{size}-{count}", fill)

    def _compressible(self, count: int) -> str:
        """A topic of ``count`` 100 B values like JSON events (field names repeat, numbers
        vary), produced with lz4."""
        key = f"lz4-{count}"
        if key not in self._topics:
            rng = np.random.default_rng(5)
            events = ("click", "view", "buy", "scroll")
            rows = [(b'{"id":%d,"user":"u%05d","event":"%s","page":"/item/%d","ts":%d,"pad":"'
                     % (i * 7919, rng.integers(50_000), events[i % 4].encode(),
                        rng.integers(100_000), 1_700_000_000_000 + 13 * i)
                     + b"x" * SMALL)[: SMALL - 2] + b'"}' for i in range(65_536)]
            pool = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, SMALL)

            def fill(producer: Any, name: str) -> None:
                step = 10 * MB // SMALL
                for first in range(0, count, step):
                    rows = min(step, count - first)
                    producer.send_batch(name, np.resize(pool, (rows, SMALL)), partition=0)

            self._topic(key, fill, codec="lz4")
        return self._topics[key]

    def _runs(self, body: Callable[[], float]) -> list[float]:
        self._cpu = []
        runs = [body() for _ in range(self.plan.repeats + 1)][1:]
        self._cpu = self._cpu[1:]
        return runs

    def _timed(self, call: Callable[[Any], int], count: int) -> Callable[[], float]:
        """Seconds of ``call(consumer)`` with a fresh consumer; it returns the rows it made.
        Notes the CPU seconds this process and the broker spent (``_cpu``)."""
        from logstore.client import Consumer

        def body() -> float:
            with Consumer(self.server) as consumer:
                broker_cpu = process_cpu_seconds(self.broker_pid)
                cpu = time.process_time()
                start = time.perf_counter()
                rows = call(consumer)
                elapsed = time.perf_counter() - start
                self._cpu.append((time.process_time() - cpu,
                                  process_cpu_seconds(self.broker_pid) - broker_cpu))
            if rows != count:
                raise RuntimeError(f"{rows} rows of {count}")
            return elapsed

        return body

    def _result(self, group: str, name: str, count: int, size: float, body: Callable[[], float],
                goal: Goal | None = None) -> Result:
        result = Result("frames", group, name, "run", count, count * size, self._runs(body), goal)
        if self._cpu:  # CPU per record: comparable on a shared box, unlike records/s
            result.params["client_cpu_ns_per_record"] = float(
                np.median([client for client, _ in self._cpu])) / count * 1e9
            result.params["broker_cpu_ns_per_record"] = float(
                np.median([broker for _, broker in self._cpu])) / count * 1e9
        return result

    # -- 100 B and 1 KiB ----------------------------------------------------------------------------

    def read_arrow_small(self) -> Result:
        count = self.plan.small_records
        topic = self._filled(SMALL, count)
        return self._result("100 B", "100 B: read_arrow -> pyarrow.Table", count, SMALL,
                            self._timed(lambda c: c.read_arrow(topic).num_rows, count),
                            Goal(min_rate=15e6))

    def _poll_columns(self, topic: str, count: int) -> Callable[[Any], int]:
        def call(consumer: Any) -> int:
            consumer.assign([(topic, 0)])
            consumer.seek((topic, 0), 0)
            seen = 0
            deadline = time.monotonic() + 600
            while seen < count and time.monotonic() < deadline:
                for columns in consumer.poll_columns(timeout=1.0).values():
                    seen += len(columns)
            return seen

        return call

    def poll_columns_small(self) -> Result:
        count = self.plan.small_records
        topic = self._filled(SMALL, count)
        return self._result("100 B", "100 B: poll_columns() loop (reference)", count, SMALL,
                            self._timed(self._poll_columns(topic, count), count))

    def _stream(self, topic: str, count: int) -> Callable[[Any], int]:
        """read_arrow's fetch alone (``frames.fetch.iter_messages``: its Subscribe stream, its
        message size and queue), every message kept as a table keeps it, nothing decoded: the
        floor under read_arrow's client CPU, so that read_arrow minus this is its own work."""
        def call(consumer: Any) -> int:
            from logstore.client.frames.fetch import iter_messages

            kept = list(iter_messages(consumer._link(), topic, {0: (0, count)},
                                      "read_uncommitted"))
            return min(kept[-1][3].next_offset, count) if kept else 0

        return call

    def stream_small(self) -> Result:
        count = self.plan.small_records
        topic = self._filled(SMALL, count)
        return self._result("100 B", "100 B: its Subscribe stream alone, kept (floor)", count,
                            SMALL, self._timed(self._stream(topic, count), count))

    def _transport_ab(self, group: str, size: int, count: int, grpc_only: bool) -> Result:
        """``read_arrow`` with its streams read as HTTP/2 calls to the gRPC port (the broker's
        grpcio serves them: ``fetch.CHANNEL_STREAMS = False``) or by grpcio on both ends
        (``SOCKET_STREAMS = False``), not off the broker's data channel: the A/B rows."""
        from logstore.client.frames import fetch

        topic = self._filled(size, count)
        flag = "SOCKET_STREAMS" if grpc_only else "CHANNEL_STREAMS"

        def call(consumer: Any) -> int:
            setattr(fetch, flag, False)
            try:
                return int(consumer.read_arrow(topic).num_rows)
            finally:
                setattr(fetch, flag, True)

        how = "streams through gRPC" if grpc_only else "streams as HTTP/2 calls, grpcio broker"
        return self._result(group, f"{group}: read_arrow, {how} (A/B)", count, size,
                            self._timed(call, count))

    def read_arrow_grpc_small(self) -> Result:
        return self._transport_ab("100 B", SMALL, self.plan.small_records, True)

    def read_arrow_grpc_large(self) -> Result:
        return self._transport_ab("1 KiB", LARGE, self.plan.large_records, True)

    def read_arrow_http2_small(self) -> Result:
        return self._transport_ab("100 B", SMALL, self.plan.small_records, False)

    def read_arrow_http2_large(self) -> Result:
        return self._transport_ab("1 KiB", LARGE, self.plan.large_records, False)

    def read_pandas(self) -> Result:
        count = self.plan.slow_records
        topic = self._filled(SMALL, self.plan.small_records)
        return self._result("100 B", "100 B: read_pandas -> pandas.DataFrame", count, SMALL,
                            self._timed(lambda c: len(c.read_pandas(topic, end=count)), count))

    def read_polars(self) -> Result:
        count = self.plan.small_records
        topic = self._filled(SMALL, count)
        return self._result("100 B", "100 B: read_polars -> polars.DataFrame", count, SMALL,
                            self._timed(lambda c: c.read_polars(topic).height, count))

    def parquet(self) -> Result:
        import pyarrow.parquet as pq

        count = self.plan.small_records
        topic = self._filled(SMALL, count)
        path = Path(self._dir) / "range.parquet"

        def call(consumer: Any) -> int:
            writer = None
            rows = 0
            for batch in consumer.iter_arrow(topic):
                if writer is None:
                    writer = pq.ParquetWriter(path, batch.schema, compression="none")
                writer.write_batch(batch)
                rows += batch.num_rows
            assert writer is not None
            writer.close()
            return rows

        return self._result("100 B", "100 B: iter_arrow -> Parquet file (uncompressed)", count,
                            SMALL, self._timed(call, count))

    def poll_frame(self) -> Result:
        import pandas as pd

        count = self.plan.slow_records
        topic = self._filled(SMALL, count)

        def call(consumer: Any) -> int:
            consumer.assign([(topic, 0)])
            consumer.seek((topic, 0), 0)
            records: list[Any] = []
            while len(records) < count:
                records += consumer.poll(timeout=1.0)
            frame = pd.DataFrame({"offset": [r.offset for r in records],
                                  "timestamp": [r.timestamp for r in records],
                                  "value": [r.value for r in records]})
            return len(frame)

        return self._result("100 B", "100 B: poll() records -> pandas.DataFrame (today)", count,
                            SMALL, self._timed(call, count))

    def read_arrow_lz4(self) -> Result:
        count = self.plan.small_records
        topic = self._compressible(count)
        return self._result("100 B lz4", "100 B lz4: read_arrow -> pyarrow.Table", count, SMALL,
                            self._timed(lambda c: c.read_arrow(topic).num_rows, count),
                            Goal(min_rate=15e6))

    def poll_columns_lz4(self) -> Result:
        count = self.plan.small_records
        topic = self._compressible(count)
        return self._result("100 B lz4", "100 B lz4: poll_columns() loop (reference)", count,
                            SMALL, self._timed(self._poll_columns(topic, count), count))

    def read_arrow_large(self) -> Result:
        count = self.plan.large_records
        topic = self._filled(LARGE, count)
        return self._result("1 KiB", "1 KiB: read_arrow -> pyarrow.Table", count, LARGE,
                            self._timed(lambda c: c.read_arrow(topic).num_rows, count),
                            Goal(min_rate=1000 * MB / LARGE, label=">= 1 GB/s"))

    def poll_columns_large(self) -> Result:
        count = self.plan.large_records
        topic = self._filled(LARGE, count)
        return self._result("1 KiB", "1 KiB: poll_columns() loop (reference)", count, LARGE,
                            self._timed(self._poll_columns(topic, count), count))

    def stream_large(self) -> Result:
        count = self.plan.large_records
        topic = self._filled(LARGE, count)
        return self._result("1 KiB", "1 KiB: its Subscribe stream alone, kept (floor)", count,
                            LARGE, self._timed(self._stream(topic, count), count))

    # -- JSON ---------------------------------------------------------------------------------------

    def _json_topic(self) -> tuple[str, float]:
        """A topic of ``json_records`` JSON objects and their mean size in bytes."""
        count = self.plan.json_records
        cities = ["Oslo", "Lima", "Pune", "Kobe"]
        documents = [json.dumps({"id": i, "price": round(i * 0.37 % 100, 2), "name": f"item-{i}",
                                 "paid": i % 2 == 0,
                                 "customer": {"id": i % 977, "city": cities[i % 4]}}).encode()
                     for i in range(min(count, 100_000))]

        def fill(producer: Any, name: str) -> None:
            for first in range(0, count, len(documents)):
                producer.send_batch(name, documents[: min(len(documents), count - first)],
                                    partition=0)

        return self._topic(f"json-{count}", fill), sum(map(len, documents)) / len(documents)

    def read_json(self) -> Result:
        count = self.plan.json_records
        topic, size = self._json_topic()
        return self._result("JSON", f"JSON ~{size:.0f} B: read_arrow(value_format='json')",
                            count, size,
                            self._timed(lambda c: c.read_arrow(topic, value_format="json").num_rows,
                                        count), Goal(min_rate=1e6))

    def read_json_inline(self) -> Result:
        """The row above with each message parsed in the caller's thread as it arrives (no
        parse threads: ``values.JSON_PARSE_THREADS = 0``), the A/B of those threads."""
        from logstore.client.frames import values

        count = self.plan.json_records
        topic, size = self._json_topic()
        threads = values.JSON_PARSE_THREADS
        values.JSON_PARSE_THREADS = 0
        try:
            return self._result(
                "JSON", f"JSON ~{size:.0f} B: the same, parsed in the caller's thread (A/B)",
                count, size, self._timed(
                    lambda c: c.read_arrow(topic, value_format="json").num_rows, count))
        finally:
            values.JSON_PARSE_THREADS = threads

    # -- peers --------------------------------------------------------------------------------------

    def _peer_setup(self) -> Any:
        if self._peers is None:
            from bench.frames_peers import Peers

            self._peers = Peers()
            rows = self._rows(SMALL, self.plan.peer_records)
            self._peers.fill_redis("frames", rows)
            self._peers.fill_nats("frames", rows[: self.plan.jetstream_records])
        return self._peers

    def redis(self) -> Result:
        peers = self._peer_setup()
        count = self.plan.peer_records
        return self._result("peers", "100 B: Redis XRANGE (COUNT 1000) -> pandas.DataFrame",
                            count, SMALL, lambda: peers.redis_frame("frames", count))

    def jetstream(self) -> Result:
        peers = self._peer_setup()
        count = min(self.plan.jetstream_records, self.plan.peer_records)
        runs = iter(range(1_000))
        return self._result("peers", "100 B: JetStream fetch(1000) -> pandas.DataFrame",
                            count, SMALL, lambda: peers.nats_frame("frames", count, next(runs)))

    # -- memory -------------------------------------------------------------------------------------

    def _memory(self, count: int, label: str) -> Result:
        topic = self._filled(SMALL, self.plan.small_records)
        script = MEMORY_PROBE.format(server=self.server, topic=topic, end=count)
        growths, samples = [], []
        for _ in range(max(1, self.plan.repeats)):
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                 check=True, timeout=600).stdout.split()
            growths.append(int(out[0]) / 2**20)
            samples.append(float(out[1]))
        growth = float(np.median(growths))
        result = Result("frames", "memory", f"100 B: iter_arrow over {label}: peak RSS "
                        f"+{growth:.0f} MiB", "run", count, count * SMALL, samples)
        result.params["peak_rss_growth_mib"] = growth
        return result

    def memory_tenth(self) -> Result:
        count = self.plan.small_records // 10
        return self._memory(count, f"{count:,} records (a tenth)")

    def memory_whole(self) -> Result:
        count = self.plan.small_records
        return self._memory(count, f"{count:,} records (all)")


def process_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 when unknown: not Linux)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: Run in a fresh interpreter: iterate a range, print peak RSS growth (bytes) and seconds.
MEMORY_PROBE = """
import time
from logstore.client import Consumer
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import pyarrow
with Consumer({server!r}) as consumer:
    base = status("VmRSS")
    start = time.perf_counter()
    rows = sum(batch.num_rows for batch in consumer.iter_arrow({topic!r}, end={end}))
    elapsed = time.perf_counter() - start
    assert rows == {end}, rows
    print(status("VmHWM") - base, elapsed)
"""


#: The goals of issue 14 that compare two rows of one run (the others are the table's).
RATIO_GOAL = 0.8  # read_arrow >= 80 % of poll_columns
REDIS_GOAL = 50.0  # read_arrow >= 50x Redis XRANGE -> DataFrame
FLAT_GOAL = 2.0  # iter_arrow over 10x the records: peak RSS growth at most 2x


def _mark(met: bool) -> str:
    return "yes" if met else "NO"


def goal_lines(results: list[Result]) -> list[tuple[str, bool]]:
    """(text, met) of every goal the run measured: the table's, then the ratios between rows."""
    goals = [(f"{r.name}: {r.goal.text}", bool(r.met)) for r in results if r.goal is not None]
    by_group: dict[str, list[Result]] = {}
    for result in results:
        by_group.setdefault(result.group, []).append(result)

    def find(group: str, start: str) -> Result | None:
        for result in by_group.get(group, []):
            if result.name.split(": ", 1)[-1].startswith(start):
                return result
        return None

    for group in ("100 B", "100 B lz4", "1 KiB"):
        arrow, columns = find(group, "read_arrow"), find(group, "poll_columns")
        if arrow and columns:
            ratio = arrow.records_per_second / columns.records_per_second
            goals.append((f"{group}: read_arrow / poll_columns = {ratio:.0%} (>= {RATIO_GOAL:.0%})",
                          ratio >= RATIO_GOAL))
    arrow, redis = find("100 B", "read_arrow"), find("peers", "Redis")
    if arrow and redis:
        times = arrow.records_per_second / redis.records_per_second
        goals.append((f"100 B: read_arrow / Redis XRANGE -> DataFrame = {times:.0f}x "
                      f"(>= {REDIS_GOAL:.0f}x)", times >= REDIS_GOAL))
    memory = by_group.get("memory", [])
    if len(memory) == 2:
        tenth, whole = (r.params["peak_rss_growth_mib"] for r in memory)
        growth = whole / max(tenth, 1.0)
        goals.append((f"iter_arrow memory flat: peak RSS +{tenth:.0f} MiB over a tenth, "
                      f"+{whole:.0f} MiB over all ({growth:.1f}x for 10x the records, "
                      f"<= {FLAT_GOAL:.0f}x)", growth <= FLAT_GOAL))
    return goals


def print_results(results: list[Result]) -> None:
    print_table(results)
    cpu = [r for r in results if "client_cpu_ns_per_record" in r.params]
    if cpu:
        print("\nCPU per record (medians; comparable on a shared box, unlike records/s):")
        width = max(len(r.name) for r in cpu)
        for result in cpu:
            client = result.params["client_cpu_ns_per_record"]
            broker = result.params["broker_cpu_ns_per_record"]
            print(f"  {result.name:<{width}}  client {client:7.0f} ns  broker {broker:6.0f} ns")
        for group in ("100 B", "1 KiB"):
            arrow = next((r for r in cpu if r.group == group and "read_arrow" in r.name), None)
            floor = next((r for r in cpu if r.group == group and "(floor)" in r.name), None)
            if arrow and floor:
                own = (arrow.params["client_cpu_ns_per_record"]
                       - floor.params["client_cpu_ns_per_record"])
                print(f"  {group}: read_arrow's own client CPU (read_arrow - its stream alone): "
                      f"{own:.0f} ns a record")
    goals = goal_lines(results)
    if goals:
        print("\nGoals of issue 14 (one run):")
        width = max(len(text) for text, _ in goals)
        for text, met in goals:
            print(f"  {text:<{width}}  {_mark(met)}")
        print(f"{sum(met for _, met in goals)} of {len(goals)} goals met.")
