"""``python -m bench.queue_crash`` (``scripts/torture --queue``): the queue-mode crash test.

Phases: start a broker; create the task topic and configure the share group (lock, max
deliveries, dead-letter topic); produce ``--tasks`` tasks (acknowledged, so each task's offset is
known); start ``--workers`` worker processes; the nemesis SIGKILLs the broker (restarting it) or a
worker (starting a new one) ``--kills`` times over about ``--seconds``; heal; wait until the
group has nothing available or acquired; stop the workers; read the dead-letter topic; check the
histories (``checker.py``). Prints the counts; exits 1 on any anomaly.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.queue_crash.checker import check, read_events
from bench.torture.broker import REPO_ROOT, Broker
from logstore.client import Admin, Consumer, Producer, TopicPartition
from logstore.errors import LogstoreError

TOPIC = "queue-tasks"
DEAD = "queue-tasks.dlq"
GROUP = "queue-crash"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/torture --queue", description=__doc__)
    parser.add_argument("--kills", type=int, default=10, help="faults (broker or worker SIGKILLs; 10)")
    parser.add_argument("--seconds", type=float, default=30.0, help="about how long the nemesis runs (30)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--tasks", type=int, default=5000, help="tasks produced up front (5000)")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--lock-ms", type=int, default=1500)
    parser.add_argument("--work-ms", type=float, default=2.0, help="per task (2)")
    parser.add_argument("--broker-share", type=float, default=0.5,
                        help="share of faults that kill the broker rather than a worker (0.5)")
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    parser.add_argument("--work-dir", metavar="DIR", help="keep everything here (default: a temp dir)")
    return parser.parse_args(argv)


class Workers:
    def __init__(self, broker: Broker, work_dir: Path, args: argparse.Namespace) -> None:
        self.broker, self.work_dir, self.args = broker, work_dir, args
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0

    def start(self) -> None:
        name = f"w{self.started}"
        self.started += 1
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "bench.queue_crash.worker", self.broker.address, GROUP, TOPIC,
             str(self.work_dir / f"{name}.jsonl"), name, "--work-ms", str(self.args.work_ms),
             "--prefetch", str(self.started % 2)],  # every other worker pipelines its fetches
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=open(self.work_dir / f"{name}.err", "wb"),  # noqa: SIM115
        )

    def kill_one(self, rng: random.Random) -> None:
        name = rng.choice(sorted(self.processes))
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.start()

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def remaining(address: str, partitions: int) -> int:
    """Records available or acquired; -1 while some partition has no share-partition yet (no
    worker fetched from it since the broker started: its records are all still to do)."""
    with Admin(address, timeout=10) as admin:
        states = admin.describe_share_group(GROUP).partitions
    if len({s.partition for s in states if s.topic == TOPIC}) < partitions:
        return -1
    return sum(s.available + s.acquired for s in states)


def produce_tasks(address: str, count: int, partitions: int) -> dict[tuple[int, int], int]:
    tasks: dict[tuple[int, int], int] = {}
    with Producer(address) as producer:
        futures = [(n, producer.send(TOPIC, b"task-%d" % n, partition=n % partitions)) for n in range(count)]
        for n, future in futures:
            metadata = future.result(60)
            tasks[(metadata.partition, metadata.offset)] = n
    return tasks


def dead_letters(address: str) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    with Admin(address) as admin:
        try:
            partitions = admin.describe_topic(DEAD).partitions
        except LogstoreError:
            return found
    with Consumer(address, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition(DEAD, p.partition) for p in partitions])
        wanted = sum(p.log_end_offset for p in partitions)
        seen = 0
        deadline = time.monotonic() + 30
        while seen < wanted and time.monotonic() < deadline:
            for record in consumer.poll(timeout=1.0):
                headers = dict(record.headers)
                found.add((int(headers["partition"] or b"-1"), int(headers["offset"] or b"-1")))
                seen += 1
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    rng = random.Random(args.seed)
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="queue-crash-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    broker = Broker(work_dir / "data", work_dir / "broker.log")
    broker.start()
    crashes: list[float] = []
    kills = {"broker": 0, "worker": 0}
    workers = Workers(broker, work_dir, args)
    try:
        with Admin(broker.address) as admin:
            admin.create_topic(TOPIC, args.partitions)
            admin.alter_share_group_config(GROUP, {
                "lock_ms": args.lock_ms, "max_deliveries": 10, "dead_letter_topic": DEAD})
        tasks = produce_tasks(broker.address, args.tasks, args.partitions)
        for _ in range(args.workers):
            workers.start()
        started = time.monotonic()
        for fault in range(args.kills):
            due = started + (fault + 1) * args.seconds / (args.kills + 1)
            time.sleep(max(0.0, due - time.monotonic()))
            if rng.random() < args.broker_share:
                crashes.append(time.time())
                broker.kill()
                time.sleep(rng.uniform(0.0, 0.5))
                broker.start()
                kills["broker"] += 1
            else:
                workers.kill_one(rng)
                kills["worker"] += 1
        deadline = time.monotonic() + args.drain_seconds
        left = -1
        while time.monotonic() < deadline:
            try:
                left = remaining(broker.address, args.partitions)
            except LogstoreError:
                left = -1
            if left == 0:
                break
            time.sleep(0.5)
        workers.stop()
        dead = dead_letters(broker.address)
        left = remaining(broker.address, args.partitions)
    finally:
        workers.stop()
        broker.stop()
    events = read_events(sorted(work_dir.glob("w*.jsonl")))
    report = check(tasks, events, dead, crashes, args.lock_ms, left)
    summary = {"anomalies": report.anomalies, "figures": report.figures, "kills": kills,
               "examples": report.examples, "work_dir": str(work_dir)}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary))
    if not args.work_dir and not any(report.anomalies.values()):
        shutil.rmtree(work_dir, ignore_errors=True)
    return 1 if any(report.anomalies.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
