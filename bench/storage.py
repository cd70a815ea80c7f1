"""The in-process storage benchmark: ``scripts/bench storage [--quick] [--json FILE]``.

No server and no network: the records layer and a ``DataDir`` opened in this process, its
maintenance thread running. Record sizes 100 B and 1 KiB, batches of 1,000 and 10,000 records,
uncompressed, no keys or headers. Workloads, in table order:

    encode    ``encode_batch`` from a list of ``bytes`` (what a producer holds), and
              ``encode_columns`` from a numpy length array plus one bytes blob
    decode    ``decode_columns`` (the columnar view) and ``decode_columns(...).records()``
    validate  ``validate_batches`` (what the broker runs on every produced batch)
    append    ``PartitionLog.append`` of pre-encoded batches for each flush policy, into a fresh
              topic per run with the largest ``segment_bytes`` (no rolls); only the appends are
              timed (creating and deleting the topic is not). ``interval`` uses a short
              ``flush_interval_ms`` (``--flush-interval-ms``) so that runs see the background fsync.
    read      sequential ``PartitionLog.read(offset, max_bytes=1 MiB)`` over the whole log, each
              result decoded with ``decode_columns``; one op is one read
    index     ``OffsetIndex.lookup`` on the index of a full segment at the default config
              (1 GiB, one entry per 4 KiB), uniformly random offsets, so most probes miss the CPU
              caches; ``PartitionLog.offset_for_timestamp`` with random timestamps

Goals (from the issue, for a 2-core machine) sit beside the rows they apply to. Data directories go
under ``--data-dir`` (default ``bench/.data``: the repo's filesystem, not a tmpfs ``/tmp``, so fsync
costs what it costs) and are removed afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import math
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import REPO_ROOT, Goal, Progress, Result, time_calls, time_runs
from bench.paths import folder
from logstore.records import (
    RECORD_OVERHEAD,
    decode_columns,
    encode_batch,
    encode_columns,
    validate_batches,
)
from logstore.storage import DataDir, LogConfig, PartitionLog
from logstore.storage.config import FLUSH_ALWAYS, FLUSH_INTERVAL, FLUSH_NEVER, MAX_SEGMENT_BYTES
from logstore.storage.offset_index import ENTRY_DTYPE as OFFSET_ENTRY_DTYPE
from logstore.storage.offset_index import OffsetIndex

SUITE = "storage"

RECORD_SIZES = (100, 1024)
BATCH_RECORDS = (1_000, 10_000)
FLUSH_POLICIES = (FLUSH_NEVER, FLUSH_INTERVAL, FLUSH_ALWAYS)
READ_MAX_BYTES = 1 << 20
BASE_TIMESTAMP = 1_700_000_000_000

#: The offset index of a full segment at the default config: segment_bytes (1 GiB) /
#: index_interval_bytes (4 KiB) = 262,144 entries, 34 records of 100 B between entries.
INDEX_BYTES_PER_ENTRY = LogConfig().index_interval_bytes
INDEX_ENTRIES = LogConfig().segment_bytes // INDEX_BYTES_PER_ENTRY
INDEX_OFFSETS_PER_ENTRY = INDEX_BYTES_PER_ENTRY // (100 + RECORD_OVERHEAD)

#: The goals, for 100 B records; encode, decode and append in batches of 10,000 (~1.2 MB).
GOAL_RECORDS = 100
GOAL_BATCH = 10_000
ENCODE_GOAL = Goal(min_rate=15e6)
DECODE_GOAL = Goal(min_rate=100e6)
APPEND_GOALS = {FLUSH_NEVER: Goal(min_rate=10e6), FLUSH_ALWAYS: Goal(min_rate=5e6)}
READ_GOAL = Goal(min_rate=20e6)
LOOKUP_GOAL = Goal(max_seconds=2e-6)

DEFAULT_DATA_DIR = REPO_ROOT / "bench" / ".data"


@dataclass(frozen=True)
class Plan:
    """How much work each workload does."""

    repeats: int
    min_sample_seconds: float  # encode/decode/validate: back-to-back calls per sample
    append_bytes: int  # batch bytes appended per timed run
    read_bytes: int  # size of the log that one read run walks
    min_batches: int  # at least this many batches per append run and in each read log
    lookups: int  # random offsets per index-lookup sample
    timestamp_batches: int  # batches of 1,000 x 100 B in the offset_for_timestamp log
    timestamp_lookups: int  # random timestamps per offset_for_timestamp sample


FULL = Plan(
    repeats=5,
    min_sample_seconds=0.2,
    append_bytes=256 << 20,
    read_bytes=256 << 20,
    min_batches=16,
    lookups=500_000,
    timestamp_batches=2_000,
    timestamp_lookups=20_000,
)
QUICK = Plan(
    repeats=1,
    min_sample_seconds=0.005,
    append_bytes=8 << 20,
    read_bytes=8 << 20,
    min_batches=4,
    lookups=100_000,
    timestamp_batches=100,
    timestamp_lookups=2_000,
)


@dataclass(frozen=True)
class Task:
    group: str
    name: str
    run: Callable[[], Result]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("storage")
    group.add_argument("--data-dir", type=folder, metavar="DIR",
                       default=Path(os.environ.get("LOGSTORE_BENCH_DIR", DEFAULT_DATA_DIR)),
                       help="where the temporary data directories go (default: $LOGSTORE_BENCH_DIR "
                            "or bench/.data); keep it on the disk you mean to measure")
    group.add_argument("--flush-interval-ms", type=int, default=100, metavar="MS",
                       help="flush_interval_ms of the flush=interval workloads (default 100)")


def run(options: argparse.Namespace, progress: Progress) -> list[Result]:
    plan = QUICK if options.quick else FULL
    if options.repeats is not None:
        plan = dataclasses.replace(plan, repeats=options.repeats)
    parent: Path = options.data_dir
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="logstore-bench-", dir=parent))
    try:
        bench = StorageBench(plan, root, flush_interval_ms=options.flush_interval_ms)
        try:
            tasks = [t for t in bench.tasks() if _selected(t, options.filter)]
            progress.add(len(tasks))
            results = []
            for task in tasks:
                progress.start(task.name)
                results.append(task.run())
                progress.done()
            return results
        finally:
            bench.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if parent == DEFAULT_DATA_DIR:
            try:
                parent.rmdir()  # only if empty: another run may be using it
            except OSError:
                pass


def _selected(task: Task, filters: list[str]) -> bool:
    """``--filter`` matches a workload's group or name, ignoring case."""
    text = f"{task.group}: {task.name}".lower()
    return not filters or any(part.lower() in text for part in filters)


def _label(size: int, count: int) -> str:
    size_text = f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"
    return f"{size_text} x {count:,}"


def _goal_batch(size: int, count: int) -> bool:
    return size == GOAL_RECORDS and count == GOAL_BATCH


class StorageBench:
    def __init__(self, plan: Plan, root: Path, *, flush_interval_ms: int) -> None:
        self.plan = plan
        self.root = root
        self.flush_interval_ms = flush_interval_ms
        self._store: DataDir | None = None
        self._topic_numbers = itertools.count()

    @property
    def store(self) -> DataDir:
        """The data directory, opened on first use, its maintenance thread running."""
        if self._store is None:
            self._store = DataDir.open(self.root / "data")
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- data ---------------------------------------------------------------------------------------

    @staticmethod
    @functools.cache
    def values(size: int, count: int) -> list[bytes]:
        """``count`` distinct random values of ``size`` bytes, as a producer would hold them."""
        blob = np.random.default_rng(size * count).bytes(size * count)
        return [blob[i : i + size] for i in range(0, size * count, size)]

    @staticmethod
    @functools.cache
    def batch(size: int, count: int) -> bytes:
        return encode_batch(StorageBench.values(size, count), timestamps=BASE_TIMESTAMP)

    def _new_topic(self, kind: str, config: dict[str, object]) -> tuple[str, PartitionLog]:
        name = f"{kind}-{next(self._topic_numbers)}"
        self.store.create_topic(name, config={"segment_bytes": MAX_SEGMENT_BYTES, **config})
        return name, self.store.log(name, 0)

    # -- workloads ----------------------------------------------------------------------------------

    def tasks(self) -> Iterator[Task]:
        shapes = [(size, count) for size in RECORD_SIZES for count in BATCH_RECORDS]
        for kind in ("encode_batch", "encode_columns"):
            for size, count in shapes:
                yield Task("encode", f"{kind} {_label(size, count)}",
                           functools.partial(self.encode, kind, size, count))
        for kind in ("decode_columns", "decode .records()", "validate_batches"):
            for size, count in shapes:
                group = "validate" if kind == "validate_batches" else "decode"
                yield Task(group, f"{kind} {_label(size, count)}",
                           functools.partial(self.decode, kind, size, count))
        for policy in FLUSH_POLICIES:
            for size, count in shapes:
                yield Task("append", f"append {self._policy_label(policy)} {_label(size, count)}",
                           functools.partial(self.append, policy, size, count))
        for size, count in shapes:
            yield Task("read", f"read + decode_columns {_label(size, count)}",
                       functools.partial(self.read, size, count))
        yield Task("index", f"OffsetIndex.lookup ({INDEX_ENTRIES:,} entries)", self.index_lookup)
        yield Task("index", f"offset_for_timestamp ({self.plan.timestamp_batches * 1000:,} records)",
                   self.offset_for_timestamp)

    def _policy_label(self, policy: str) -> str:
        if policy == FLUSH_INTERVAL:
            return f"flush=interval({self.flush_interval_ms}ms)"
        return f"flush={policy}"

    def encode(self, kind: str, size: int, count: int) -> Result:
        values = self.values(size, count)
        if kind == "encode_batch":
            def fn() -> bytes:
                return encode_batch(values)
        else:
            lengths = np.full(count, size, dtype=np.int32)
            blob = b"".join(values)

            def fn() -> bytes:
                return encode_columns(value_lengths=lengths, values=blob)
        samples = time_calls(fn, repeats=self.plan.repeats,
                             min_sample_seconds=self.plan.min_sample_seconds)
        return Result(
            SUITE, "encode", f"{kind} {_label(size, count)}", "batch", count, len(fn()), samples,
            ENCODE_GOAL if _goal_batch(size, count) else None,
            {"record_bytes": size, "batch_records": count},
        )

    def decode(self, kind: str, size: int, count: int) -> Result:
        batch = self.batch(size, count)
        fn: Callable[[], object]
        if kind == "decode_columns":
            fn = functools.partial(decode_columns, batch)
            goal = DECODE_GOAL if _goal_batch(size, count) else None
        elif kind == "validate_batches":
            fn = functools.partial(validate_batches, batch)
            goal = None
        else:
            def fn() -> object:
                return decode_columns(batch).records()
            goal = None
        samples = time_calls(fn, repeats=self.plan.repeats,
                             min_sample_seconds=self.plan.min_sample_seconds)
        group = "validate" if kind == "validate_batches" else "decode"
        return Result(SUITE, group, f"{kind} {_label(size, count)}", "batch", count, len(batch),
                      samples, goal, {"record_bytes": size, "batch_records": count})

    def append(self, policy: str, size: int, count: int) -> Result:
        batch = self.batch(size, count)
        batches = max(self.plan.min_batches, math.ceil(self.plan.append_bytes / len(batch)))
        config: dict[str, object] = {"flush": policy}
        if policy == FLUSH_INTERVAL:
            config["flush_interval_ms"] = self.flush_interval_ms

        def setup() -> tuple[str, PartitionLog]:
            return self._new_topic(f"append-{policy}", config)

        def append_all(state: tuple[str, PartitionLog]) -> None:
            append = state[1].append
            for _ in range(batches):
                append(batch)

        def teardown(state: tuple[str, PartitionLog]) -> None:
            log = state[1]
            if log.log_end_offset != batches * count:
                raise RuntimeError(f"appended {log.log_end_offset} records, not {batches * count}")
            self.store.delete_topic(state[0])

        samples = time_runs(append_all, repeats=self.plan.repeats, setup=setup, teardown=teardown)
        return Result(
            SUITE, "append", f"append {self._policy_label(policy)} {_label(size, count)}", "batch",
            count, len(batch), [s / batches for s in samples],
            APPEND_GOALS.get(policy) if _goal_batch(size, count) else None,
            {"record_bytes": size, "batch_records": count, "flush": policy,
             "batches_per_run": batches, **config},
        )

    def read(self, size: int, count: int) -> Result:
        batch = self.batch(size, count)
        batches = max(self.plan.min_batches, math.ceil(self.plan.read_bytes / len(batch)))
        name, log = self._new_topic("read", {"flush": FLUSH_NEVER})
        try:
            for _ in range(batches):
                log.append(batch)
            end = log.log_end_offset

            def read_all(_: object = None) -> tuple[int, int, int]:
                offset = reads = records = nbytes = 0
                while offset < end:
                    data = log.read(offset, READ_MAX_BYTES).data
                    columns = decode_columns(data)
                    offset = int(columns.offsets[-1]) + 1
                    reads += 1
                    records += len(columns)
                    nbytes += len(data)
                return reads, records, nbytes

            reads, records, nbytes = read_all()
            if records != end:
                raise RuntimeError(f"read {records} records of {end}")
            samples = time_runs(read_all, repeats=self.plan.repeats, setup=lambda: None)
        finally:
            self.store.delete_topic(name)
        return Result(
            SUITE, "read", f"read + decode_columns {_label(size, count)}", "read",
            records / reads, nbytes / reads, [s / reads for s in samples],
            READ_GOAL if size == GOAL_RECORDS else None,
            {"record_bytes": size, "batch_records": count, "max_bytes": READ_MAX_BYTES,
             "log_bytes": batches * len(batch), "reads_per_run": reads},
        )

    def index_lookup(self) -> Result:
        """``OffsetIndex.lookup`` on a sealed index file of a full segment, random offsets.

        Entries are unevenly spaced (batches of 1 to 2 x 34 records, a little over 4 KiB apart),
        as a real log's are, so a lookup that guesses from the mean spacing is not flattered.
        """
        rng = np.random.default_rng(7)
        offset_gaps = rng.integers(1, 2 * INDEX_OFFSETS_PER_ENTRY, INDEX_ENTRIES, dtype=np.int64)
        position_gaps = rng.integers(INDEX_BYTES_PER_ENTRY + 1, INDEX_BYTES_PER_ENTRY + 512,
                                     INDEX_ENTRIES, dtype=np.int64)
        offset_gaps[0] = position_gaps[0] = 0  # the first batch starts the segment
        relative_offsets = np.cumsum(offset_gaps)
        positions = np.cumsum(position_gaps)
        entries = np.empty(INDEX_ENTRIES, dtype=OFFSET_ENTRY_DTYPE)
        entries["relative_offset"] = relative_offsets
        entries["position"] = positions
        base_offset = 1_000_000
        path = self.root / f"{base_offset:020d}.index"
        path.write_bytes(entries.tobytes())
        index = OffsetIndex(path, base_offset, len(entries) * OFFSET_ENTRY_DTYPE.itemsize,
                            writable=False)
        end_offset = int(relative_offsets[-1]) + INDEX_OFFSETS_PER_ENTRY
        offsets = (base_offset + rng.integers(0, end_offset, self.plan.lookups)).tolist()
        for offset in offsets[:100]:  # against an oracle: the floor entry
            slot = int(np.searchsorted(relative_offsets, offset - base_offset, side="right")) - 1
            if index.lookup(offset) != (base_offset + int(relative_offsets[slot]),
                                        int(positions[slot])):
                raise RuntimeError(f"OffsetIndex.lookup({offset}) returned the wrong entry")
        lookup = index.lookup

        def lookup_all() -> None:
            deque(map(lookup, offsets), maxlen=0)

        samples = time_calls(lookup_all, repeats=self.plan.repeats, min_sample_seconds=0.0)
        index.close()
        path.unlink()
        return Result(
            SUITE, "index", f"OffsetIndex.lookup ({INDEX_ENTRIES:,} entries)", "lookup", 1, None,
            [s / len(offsets) for s in samples], LOOKUP_GOAL,
            {"entries": INDEX_ENTRIES, "lookups_per_sample": len(offsets)},
        )

    def offset_for_timestamp(self) -> Result:
        """A log of 1,000-record batches, record k stamped BASE_TIMESTAMP + k; random queries."""
        size, count = 100, 1000
        batches = self.plan.timestamp_batches
        lengths = np.full(count, size, dtype=np.int32)
        blob = b"".join(self.values(size, count))
        name, log = self._new_topic("timestamps", {"flush": FLUSH_NEVER})
        try:
            for number in range(batches):
                stamps = BASE_TIMESTAMP + number * count + np.arange(count, dtype=np.int64)
                log.append(encode_columns(value_lengths=lengths, values=blob, timestamps=stamps))
            rng = np.random.default_rng(11)
            queries = (BASE_TIMESTAMP + rng.integers(0, batches * count,
                                                     self.plan.timestamp_lookups)).tolist()
            if log.offset_for_timestamp(queries[0]) != queries[0] - BASE_TIMESTAMP:
                raise RuntimeError("offset_for_timestamp returned the wrong offset")
            find = log.offset_for_timestamp

            def find_all() -> None:
                deque(map(find, queries), maxlen=0)

            samples = time_calls(find_all, repeats=self.plan.repeats, min_sample_seconds=0.0)
        finally:
            self.store.delete_topic(name)
        return Result(
            SUITE, "index", f"offset_for_timestamp ({batches * count:,} records)", "lookup", 1,
            None, [s / len(queries) for s in samples], None,
            {"records": batches * count, "batch_records": count, "lookups_per_sample": len(queries)},
        )
