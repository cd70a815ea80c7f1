"""Recovery time after a SIGKILL with ~1 GB of unflushed data (``python -m bench recovery``).

Starts a broker (``logstore serve``) on a free loopback port in a temporary directory, creates a
topic with ``flush=never`` and writes ``--recovery-gb`` GB of 1,000-byte records into it, spread
over ``--recovery-partitions`` partitions. Then, per timed run, SIGKILL the broker and start it
again, timing from the start of the process until the health check says SERVING and until a
fetch of the last record of every partition returned it (the table shows the latter; the JSON
has both). With ``flush=never`` nothing was fsynced, so the recovery point is still 0: the
restart checks every batch (length and crc32c) of the whole log, then fsyncs what it recovered.
Before every run the checkpoints' recovery point is put back to 0 (the state a kill leaves; the
bytes on disk are the same), and the data is in one of three states:

- **dirty**: as the kill leaves it: in the page cache, not yet written back (the bytes are
  rewritten in place before each run), so recovery's fsync writes the whole log;
- **cached**: written back and still in the page cache;
- **cold**: written back and evicted (``posix_fadvise(DONTNEED)``), so recovery reads it (on a
  virtual machine the host may still serve it from its own cache).

A first row measures the same kill and restart before anything is written: the fixed cost of
starting a broker (Python, gRPC, the internal topics). The last rows time ``DataDir.open`` alone,
in this process, on the same directory put back into the state a kill leaves (no clean-shutdown
markers, recovery points 0): the storage layer's share of the restart.

Then the rows of ``bench/history.py``: start-up with 0 to 10 M offset commits (and 100 k
transactions) in the history. ``--filter history`` runs only those; any other filter only the
rows above.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import history
from bench.common import Progress, Result, format_seconds
from bench.paths import folder

RECORD_BYTES = 1000
CHUNK_RECORDS = 32_768  # records per send_batch call (~32 MB)
TOPIC = "recovery"
#: The states of the data before a restart (see the module docstring).
DATA_STATES = ("dirty", "cached", "cold")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recovery")
    group.add_argument("--recovery-gb", type=float, default=None, metavar="GB",
                       help="data written before the kill (default 1, --quick 0.1)")
    group.add_argument("--recovery-partitions", type=int, default=4, metavar="N",
                       help="partitions of the topic (default 4)")
    group.add_argument("--recovery-dir", metavar="DIR", type=folder,
                       help="where the data directory goes (default: a temporary directory; "
                            "use a real disk, not tmpfs)")
    history.add_arguments(group)


def run(options: argparse.Namespace, progress: Progress) -> list[Result]:
    from bench.torture.broker import Broker

    gigabytes = options.recovery_gb or (0.1 if options.quick else 1.0)
    repeats = options.repeats or (1 if options.quick else 3)
    partitions = options.recovery_partitions
    work = Path(tempfile.mkdtemp(prefix="logstore-bench-recovery-", dir=options.recovery_dir))
    data = work / "data"
    broker = Broker(data, work / "broker.log")
    states = [s for s in DATA_STATES if not options.filter or any(f in s for f in options.filter)]
    with_history = not options.filter or any(f in "history" for f in options.filter)
    try:
        if not states:
            return history.run(options, progress, work) if with_history else []
        progress.add(1 + (1 + 2 * len(states)) * repeats)
        broker.start()
        baseline = []
        for _ in range(repeats):  # the fixed cost: a restart with (almost) nothing to recover
            progress.start("kill and restart, empty topic")
            broker.kill()
            started = time.monotonic()
            broker.start()
            baseline.append(time.monotonic() - started)
            progress.done()
        progress.start(f"write {gigabytes:g} GB")
        records = write(broker.address, gigabytes, partitions)
        progress.done()
        size = sum(path.stat().st_size for path in data.glob(f"{TOPIC}-*/*.log"))
        ends = end_offsets(broker.address)
        params = {"bytes": size, "records": records, "partitions": partitions}
        results = [Result("recovery", "recovery", "SIGKILL, nothing written: restart until SERVING",
                          "restart", 1, None, baseline,
                          params={"partitions": partitions, "serving_seconds": baseline})]
        for state in states:
            serving, fetched = [], []
            for _ in range(repeats):
                progress.start(f"kill and restart, data {state}")
                broker.kill()
                prepare(data, state)
                started = time.monotonic()
                broker.start(timeout=600)
                serving.append(time.monotonic() - started)
                fetch_last(broker.address, ends)
                fetched.append(time.monotonic() - started)
                progress.done()
            results.append(Result(
                "recovery", "recovery",
                f"SIGKILL, {size / 1e9:.2f} GB unflushed, data {state}: restart until a fetch "
                f"at the end works", "restart", records, size, fetched,
                params={**params, "data": state, "serving_seconds": serving,
                        "fetch_at_end_seconds": fetched},
            ))
        broker.kill()
        for state in states:  # the storage layer's share: DataDir.open in this process
            samples = []
            for _ in range(repeats):
                progress.start(f"storage recovery alone, data {state}")
                samples.append(time_storage_open(data, state))
                progress.done()
            results.append(Result(
                "recovery", "recovery",
                f"storage recovery alone (DataDir.open after an unclean stop), {size / 1e9:.2f} "
                f"GB, data {state}", "open", records, size, samples,
                params={**params, "data": state, "storage_only": True},
            ))
        if with_history:
            results += history.run(options, progress, work)
        return results
    finally:
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)


def write(server: str, gigabytes: float, partitions: int) -> int:
    """Fill the topic; returns how many records were written."""
    from logstore.client import Admin, Producer

    with Admin(server) as admin:
        admin.create_topic(TOPIC, partitions, config={"flush": "never"})
    total = int(gigabytes * 1e9 / RECORD_BYTES)
    rows = np.random.default_rng(1).integers(0, 256, (CHUNK_RECORDS, RECORD_BYTES), np.uint8)
    written = 0
    with Producer(server, acks=1, linger_ms=5) as producer:
        futures = []
        while written < total:
            count = min(CHUNK_RECORDS, total - written)
            futures.append(producer.send_batch(TOPIC, rows[:count],
                                               partition=(written // count) % partitions))
            written += count
            if len(futures) > 8:
                futures.pop(0).result()
        for future in futures:
            future.result()
    return written


def end_offsets(server: str) -> dict[int, int]:
    from logstore.client import Admin

    with Admin(server) as admin:
        listed = admin.list_offsets(TOPIC)
    return {tp.partition: offset for tp, offset in listed.items()}


def reset_recovery_points(data_dir: Path) -> None:
    """Put every partition's recovery point back to 0 (the state after the first kill)."""
    for checkpoint in data_dir.glob(f"{TOPIC}-*/checkpoint.json"):
        state = json.loads(checkpoint.read_text())
        state["recovery_point"] = 0
        checkpoint.write_text(json.dumps(state))


def prepare(data_dir: Path, state: str) -> None:
    """Recovery points back to 0, and the segments dirty, cached or cold."""
    reset_recovery_points(data_dir)
    for path in sorted(data_dir.glob(f"{TOPIC}-*/*.log")):
        fd = os.open(path, os.O_RDWR)
        try:
            if state == "dirty":  # the same bytes again: in the page cache, not written back
                size, position = os.fstat(fd).st_size, 0
                while position < size:
                    chunk = os.pread(fd, 64 << 20, position)
                    os.pwrite(fd, chunk, position)
                    position += len(chunk)
            else:
                os.fsync(fd)
                if state == "cold":
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def time_storage_open(data_dir: Path, state: str) -> float:
    """Seconds ``DataDir.open`` takes in this process after an unclean stop (no clean-shutdown
    markers, recovery points 0): the storage layer's part of a restart."""
    from logstore.storage import DataDir

    for marker in data_dir.glob("*/.clean_shutdown"):
        marker.unlink()
    prepare(data_dir, state)
    started = time.monotonic()
    store = DataDir.open(data_dir, background=False)
    elapsed = time.monotonic() - started
    store.close()
    return elapsed


def fetch_last(server: str, ends: dict[int, int], timeout: float = 60.0) -> None:
    """Read the last record of every partition (the fetch at the end works)."""
    from logstore.client import Consumer, TopicPartition

    with Consumer(server, auto_offset_reset="error", fetch_max_wait_ms=100) as consumer:
        wanted = {TopicPartition(TOPIC, p): end - 1 for p, end in ends.items() if end > 0}
        consumer.assign(list(wanted))
        for tp, offset in wanted.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no record at the end of {sorted(wanted)} after {timeout} s")
            for record in consumer.poll(timeout=1.0):
                tp = TopicPartition(record.topic, record.partition)
                if wanted.get(tp) == record.offset:
                    del wanted[tp]


def print_results(results: list[Result]) -> None:
    print()
    for result in results:
        if result.group == "history":
            continue
        params = result.params
        if params.get("storage_only"):
            print(f"{result.name}: {format_seconds(result.median)} (median of "
                  f"{len(result.samples)}); {(result.nbytes or 0) / result.median / 1e6:,.0f} MB/s")
            continue
        if "records" not in params:
            print(f"{result.name}: {format_seconds(result.median)} (median of "
                  f"{len(result.samples)}): Python, gRPC and the data directory, the fixed cost")
            continue
        checked = (result.nbytes or 0) / result.median / 1e6
        print(result.name)
        print(f"  {params['records']:,} records in {params['partitions']} partitions: SERVING "
              f"after {format_seconds(statistics.median(params['serving_seconds']))}, the fetch "
              f"at the end after {format_seconds(result.median)} (medians of "
              f"{len(result.samples)}); {checked:,.0f} MB/s recovered")
    history.print_results([r for r in results if r.group == "history"])
