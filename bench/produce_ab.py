"""A/B of brokers under the same client: ``python -m bench.produce_ab``.

Starts one ``logstore serve`` per ``--broker NAME=SOURCE[,CONFIG]`` (SOURCE: a checkout whose
``logstore`` package that broker runs, e.g. ``git worktree add /tmp/old main``; CONFIG: a TOML
file for ``--config``, e.g. ``[limits] write_off_loop_bytes = 262144``), then times
``Producer.send_batch`` of 1 KiB rows (the ``bench client`` row: defaults, one partition,
``flush=never``) against each in turn, round after round, the order reversed every other round,
so that the brokers share the box's load. Prints per broker the median (and range) of MB/s and
of CPU per MiB: the broker (user, system), its event-loop thread, its gRPC event-engine threads,
its other threads (the writer thread, if on), and this client process; then each broker's
median per-round ratio of MB/s to the first one. On a shared box read the CPU columns and the
ratios, not the MB/s (docs/produce.md).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
import uuid
from collections.abc import Sequence

import numpy as np

from bench.spawned import Broker

MIB = 1 << 20
COLUMNS = ("MB/s", "user", "sys", "loop", "grpc", "other", "client")


def thread_cpu_s(pid: int) -> tuple[float, float, float, float, float]:
    """CPU seconds of process ``pid``: user, system, its main thread, its gRPC event-engine
    threads, the others (from ``/proc/PID/task/*/stat``)."""
    tick = os.sysconf("SC_CLK_TCK")
    totals = [0.0, 0.0, 0.0, 0.0, 0.0]
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as file:
                stat = file.read()
        except FileNotFoundError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        user, system = int(fields[11]) / tick, int(fields[12]) / tick
        totals[0] += user
        totals[1] += system
        kind = 2 if tid == str(pid) else 3 if name.startswith("event_engine") else 4
        totals[kind] += user + system
    return totals[0], totals[1], totals[2], totals[3], totals[4]


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(broker: Broker, rows: np.ndarray) -> tuple[float, ...]:
    """MB/s and the CPU columns (ms per MiB) of one send_batch of ``rows`` to a new topic."""
    from logstore.client import Admin, Producer

    mib = rows.nbytes / MIB
    topic = f"ab-{uuid.uuid4().hex[:8]}"
    with Admin(broker.address) as admin:
        admin.create_topic(topic, 1, config={"flush": "never"})
        try:
            with Producer(broker.address) as producer:
                before, client_before = thread_cpu_s(broker.process.pid), client_cpu_s()
                start = time.perf_counter()
                producer.send_batch(topic, rows, partition=0).result()
                elapsed = time.perf_counter() - start
                after, client_after = thread_cpu_s(broker.process.pid), client_cpu_s()
        finally:
            admin.delete_topic(topic)
    cpu = [(b - a) * 1e3 / mib for a, b in zip(before, after, strict=True)]
    return (rows.nbytes / 1e6 / elapsed, *cpu, (client_after - client_before) * 1e3 / mib)


def compare(specs: Sequence[str], records: int, size: int, rounds: int) -> None:
    rng = np.random.default_rng(7)
    rows = np.resize(rng.integers(0, 256, (65_536, size), dtype=np.uint8), (records, size))
    brokers: dict[str, Broker] = {}
    try:
        for spec in specs:
            name, _, rest = spec.partition("=")
            source, _, config = rest.partition(",")
            brokers[name] = Broker("logstore-bench-ab-", source=source or None,
                                   args=("--config", config) if config else ())
        print(f"load average {os.getloadavg()[0]:.1f} at the start; {records:,} records of {size} B, "
              f"{rounds} rounds after a warm-up")
        samples: dict[str, list[tuple[float, ...]]] = {name: [] for name in brokers}
        order = list(brokers)
        for round_number in range(rounds + 1):
            for name in order if round_number % 2 else reversed(order):
                result = one_run(brokers[name], rows)
                if round_number:
                    samples[name].append(result)
        print(f"load average {os.getloadavg()[0]:.1f} at the end; CPU in ms per MiB, medians (ranges)")
        print(f"{'broker':12}" + "".join(f"{column:>20}" for column in COLUMNS))
        for name, runs in samples.items():
            cells = [f"{statistics.median(c):.2f} ({min(c):.2f}-{max(c):.2f})" for c in zip(*runs, strict=True)]
            print(f"{name:12}" + "".join(f"{cell:>20}" for cell in cells))
        first = samples[order[0]]
        for name, runs in samples.items():
            ratios = [run[0] / base[0] for run, base in zip(runs, first, strict=True)]
            print(f"{name}: MB/s / {order[0]}'s, per round: median {statistics.median(ratios):.2f} "
                  f"({', '.join(f'{r:.2f}' for r in ratios)})")
    finally:
        for broker in brokers.values():
            broker.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.produce_ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", action="append", metavar="NAME=SOURCE[,CONFIG]",
                        help="a broker to compare (repeatable; SOURCE empty: this checkout)")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=8)
    options = parser.parse_args(argv)
    compare(options.broker or ["this="], options.records, options.size, options.rounds)


if __name__ == "__main__":
    main()
