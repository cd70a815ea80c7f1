"""Client throughput probe (not a test): end-to-end rates of one client on one partition.

    .venv/bin/python bench/client_probe.py --server 127.0.0.1:7070
    .venv/bin/python bench/client_probe.py --spawn          # starts a broker in a temp dir

Measures, for ``--value-bytes`` (100) byte records on a fresh one-partition topic:

- ``send_batch`` with a 2-D uint8 array (columnar) and with a list of bytes;
- per-record ``send()`` in a loop, then ``flush()``;
- consuming everything back with ``poll_columns`` (numpy columns) and with ``poll`` (records).

Each workload runs ``--repeats`` times; the table shows the best run and the goal from the issue.
``--profile NAME`` runs one workload under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from logstore import Admin, Consumer, Producer

GOALS = {
    "send_batch (2-D array)": 5e6,
    "send_batch (list of bytes)": 5e6,
    "send() per record": 1.5e6,
    "poll_columns": 10e6,
    "poll (records)": 3e6,
}


def process_cpu_seconds(pid: int | None) -> float:
    """utime + stime of another process (Linux /proc), 0.0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_broker(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "logstore", "serve", "--data-dir", data_dir, "--listen", address,
         "--metrics-listen", "", "--log-level", "warning"],
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with Admin(address, timeout=1.0) as admin:
                admin.list_topics()
            return process, address
        except Exception:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the broker did not start")


class Probe:
    def __init__(self, server: str, records: int, value_bytes: int, codec: str) -> None:
        self.server = server
        self.records = records
        self.value_bytes = value_bytes
        self.codec = codec
        rng = np.random.default_rng(1)
        self.array = rng.integers(0, 256, size=(records, value_bytes), dtype=np.uint8)
        self.values = [bytes(row) for row in self.array[: min(records, 1 << 20)]]
        self.admin = Admin(server)
        self.filled: str | None = None

    def topic(self) -> str:
        name = f"probe-{uuid.uuid4().hex[:8]}"
        self.admin.create_topic(name, partitions=1)
        return name

    def send_batch_array(self) -> float:
        topic = self.topic()
        with Producer(self.server, codec=self.codec) as producer:
            start = time.perf_counter()
            producer.send_batch(topic, self.array, partition=0).result()
            elapsed = time.perf_counter() - start
        self.filled = topic
        return elapsed

    def send_batch_list(self) -> float:
        topic = self.topic()
        values = self._values()
        with Producer(self.server, codec=self.codec) as producer:
            start = time.perf_counter()
            producer.send_batch(topic, values, partition=0).result()
            elapsed = time.perf_counter() - start
        self.admin.delete_topic(topic)
        return elapsed

    def send_loop(self) -> float:
        topic = self.topic()
        values = self._values()
        with Producer(self.server, codec=self.codec) as producer:
            send = producer.send
            start = time.perf_counter()
            for value in values:
                send(topic, value, None, None, 0)
            producer.flush()
            elapsed = time.perf_counter() - start
        self.admin.delete_topic(topic)
        return elapsed

    def poll_columns(self) -> float:
        topic = self._filled()
        with Consumer(self.server, auto_offset_reset="earliest") as consumer:
            consumer.assign([(topic, 0)])
            consumer.position((topic, 0))
            seen = 0
            start = time.perf_counter()
            while seen < self.records:
                for columns in consumer.poll_columns(timeout=5.0).values():
                    seen += len(columns)
            return time.perf_counter() - start

    def poll_records(self) -> float:
        topic = self._filled()
        with Consumer(self.server, auto_offset_reset="earliest") as consumer:
            consumer.assign([(topic, 0)])
            consumer.position((topic, 0))
            seen = 0
            start = time.perf_counter()
            while seen < self.records:
                seen += len(consumer.poll(timeout=5.0))
            return time.perf_counter() - start

    def _values(self) -> list[bytes]:
        if len(self.values) >= self.records:
            return self.values[: self.records]
        repeats = -(-self.records // len(self.values))
        return (self.values * repeats)[: self.records]

    def _filled(self) -> str:
        if self.filled is None:
            self.send_batch_array()
        assert self.filled is not None
        return self.filled

    def workloads(self) -> dict[str, Callable[[], float]]:
        return {
            "send_batch (2-D array)": self.send_batch_array,
            "send_batch (list of bytes)": self.send_batch_list,
            "send() per record": self.send_loop,
            "poll_columns": self.poll_columns,
            "poll (records)": self.poll_records,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("LOGSTORE_SERVER"))
    parser.add_argument("--spawn", action="store_true", help="start a broker in a temp dir")
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--codec", default="none", choices=["none", "zstd", "lz4"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", action="append", help="run only workloads containing this")
    parser.add_argument("--profile", metavar="NAME", help="profile the workload containing NAME")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--server-pid", type=int, help="also report this broker process's CPU")
    args = parser.parse_args()

    process = None
    tmp = None
    if args.spawn or not args.server:
        tmp = tempfile.TemporaryDirectory(prefix="logstore-probe-")
        process, args.server = spawn_broker(tmp.name)
        args.server_pid = process.pid
    try:
        probe = Probe(args.server, args.records, args.value_bytes, args.codec)
        workloads = probe.workloads()
        if args.profile:
            name = next(n for n in workloads if args.profile in n)
            profilers = [cProfile.Profile()]

            def profile_thread(*_: object) -> None:  # every new thread profiles itself too
                sys.setprofile(None)
                profiler = cProfile.Profile()
                profilers.append(profiler)
                profiler.enable()

            threading.setprofile(profile_thread)
            profilers[0].enable()
            seconds = workloads[name]()
            profilers[0].disable()
            threading.setprofile(None)  # type: ignore[arg-type]
            print(f"{name}: {args.records / seconds / 1e6:.2f} M records/s (all threads below)")
            pstats.Stats(*profilers).sort_stats("tottime").print_stats(30)
            return 0
        results = []
        print(f"{args.records:,} records of {args.value_bytes} B, codec {args.codec}, "
              f"server {args.server}")
        print(f"{'workload':28} {'records/s':>12} {'MB/s':>8} {'goal':>10}  met?  "
              "CPU/record: client  broker")
        for name, run in workloads.items():
            if args.only and not any(part in name for part in args.only):
                continue
            timings = []
            for _ in range(args.repeats):
                cpu = time.process_time()
                server_cpu = process_cpu_seconds(args.server_pid)
                elapsed = run()
                timings.append((elapsed, time.process_time() - cpu,
                                process_cpu_seconds(args.server_pid) - server_cpu))
            best, cpu_seconds, server_seconds = min(timings)
            rate = args.records / best
            megabytes = rate * args.value_bytes / 1e6
            goal = GOALS[name] if args.value_bytes == 100 else None
            met = "" if goal is None else ("yes" if rate >= goal else "NO")
            goal_text = "" if goal is None else f">= {goal / 1e6:g} M"
            cpu_ns = cpu_seconds / args.records * 1e9
            server_ns = server_seconds / args.records * 1e9
            print(f"{name:28} {rate / 1e6:10.2f} M {megabytes:8.0f} {goal_text:>10}  {met:4}  "
                  f"{cpu_ns:12.0f} ns {server_ns:4.0f} ns")
            results.append({"workload": name, "records_per_second": rate, "seconds": best,
                            "client_cpu_ns_per_record": cpu_ns,
                            "broker_cpu_ns_per_record": server_ns, "goal": goal})
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
