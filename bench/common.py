"""What every benchmark suite shares: timing, results and goals, the table, JSON, progress, malloc.

Timing. ``time_calls`` times a cheap call: one warm-up call, one to calibrate, then ``repeats``
samples of enough back-to-back calls to last ``min_sample_seconds`` each; a sample is the mean time
of one call. ``time_runs`` times a whole run (an append of many batches into a fresh log): one
warm-up run, then ``repeats`` runs, each with an untimed setup and teardown. A result reports the
**median** sample; all samples go to the JSON.

Units. A result counts work per *operation* (one batch encoded, one ``read`` call, one index
lookup): ``records`` and ``nbytes`` per operation, ``samples`` in seconds per operation. Throughput
is records (or lookups) per second and MB/s with 1 MB = 10**6 bytes of batch bytes (header and
columns included); MB/s is left blank where no bytes move.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent

# -- malloc ----------------------------------------------------------------------------------------

#: glibc ``mallopt`` parameters (malloc.h) and the values the benchmarks run with.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 << 20  # 67108864: buffers below 64 MiB come from the heap ...
TRIM_THRESHOLD_BYTES = 256 << 20  # 268435456: ... and freed heap memory is kept, not returned


def tune_malloc() -> bool:
    """Keep fresh buffers of up to 64 MiB on the heap; True if glibc took both settings.

    By default glibc serves every allocation above 128 KiB (growing to at most 32 MiB) with a new
    ``mmap`` and gives it back with ``munmap``, so each fresh 1 MiB batch costs page faults on
    first touch. The same as starting Python with ``MALLOC_MMAP_THRESHOLD_=67108864
    MALLOC_TRIM_THRESHOLD_=268435456``. A no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    trim_ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    return mmap_ok and trim_ok


def freeze_startup_objects() -> None:
    """Move every object made so far (imported modules, clients, connections) into the cyclic
    collector's permanent generation (``gc.freeze()``): its full passes then walk only what the
    work makes. A worker that takes 1,000 records a poll moves each batch into the older
    generations (a young pass runs every 700 new containers, while the batch is in use), so a
    full pass comes every few hundred polls and walked the whole heap, ~10-20 ms each in a
    logstore worker (~0.1 us a task). Every system's queue worker does it once connected."""
    gc.freeze()


# -- timing ----------------------------------------------------------------------------------------


def time_calls(fn: Callable[[], object], *, repeats: int, min_sample_seconds: float) -> list[float]:
    """Seconds per call of ``fn``: ``repeats`` samples after a warm-up call and a calibrating one."""
    fn()  # warm-up: caches, lazy imports, first-touch of buffers
    start = time.perf_counter()
    fn()
    single = time.perf_counter() - start
    loops = max(1, math.ceil(min_sample_seconds / max(single, 1e-9)))
    samples = []
    for _ in range(max(1, repeats)):
        gc.collect()
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops)
    return samples


State = TypeVar("State")


def time_runs(
    run: Callable[[State], object],
    *,
    repeats: int,
    setup: Callable[[], State],
    teardown: Callable[[State], object] = lambda state: None,
) -> list[float]:
    """Seconds per run of ``run(setup())``: ``repeats`` samples after one warm-up run.

    Only ``run`` is timed; ``setup`` and ``teardown`` (fresh log, delete it) are not.
    """
    samples = []
    for index in range(max(1, repeats) + 1):
        state = setup()
        try:
            gc.collect()
            start = time.perf_counter()
            run(state)
            elapsed = time.perf_counter() - start
        finally:
            teardown(state)
        if index:  # the first run is the warm-up
            samples.append(elapsed)
    return samples


# -- results and goals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A target from the issue: at least ``min_rate`` records/s, or at most ``max_seconds`` per op
    (the median's, or the ``percentile``'s of the samples, e.g. 99)."""

    min_rate: float | None = None
    max_seconds: float | None = None
    percentile: float | None = None
    #: How the table shows the goal, when not in records/s (e.g. ">= 700 MB/s").
    label: str | None = None

    def met(self, result: Result) -> bool:
        if self.min_rate is not None and result.records_per_second < self.min_rate:
            return False
        if self.max_seconds is None:
            return True
        if self.percentile is None:
            return result.median <= self.max_seconds
        return result.percentile(self.percentile) <= self.max_seconds

    @property
    def text(self) -> str:
        if self.label is not None:
            return self.label
        if self.min_rate is not None:
            return f">= {format_count(self.min_rate)}/s"
        assert self.max_seconds is not None
        which = "" if self.percentile is None else f"p{self.percentile:g} "
        return f"{which}<= {format_seconds(self.max_seconds)}"

    def to_json(self) -> dict[str, Any]:
        return {"min_records_per_second": self.min_rate, "max_seconds_per_op": self.max_seconds,
                "percentile": self.percentile, "text": self.text}


@dataclass
class Result:
    suite: str
    group: str  # encode, decode, append, read, index, ...
    name: str  # the workload, as shown in the table
    op: str  # what one operation is: batch, read, lookup, ...
    records: float  # records (or lookups) per operation
    nbytes: float | None  # batch bytes per operation; None where no bytes move
    samples: list[float]  # seconds per operation, one per sample
    goal: Goal | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def percentile(self, q: float) -> float:
        """The q-th percentile of the samples (linear interpolation, as numpy's default)."""
        ordered = sorted(self.samples)
        rank = (len(ordered) - 1) * q / 100
        low = int(rank)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    @property
    def records_per_second(self) -> float:
        return self.records / self.median

    @property
    def mb_per_second(self) -> float | None:
        return None if self.nbytes is None else self.nbytes / self.median / 1e6

    @property
    def met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "group": self.group,
            "name": self.name,
            "op": self.op,
            "records_per_op": self.records,
            "bytes_per_op": self.nbytes,
            "samples_seconds_per_op": self.samples,
            "median_seconds_per_op": self.median,
            "records_per_second": self.records_per_second,
            "mb_per_second": self.mb_per_second,
            "ns_per_record": self.median / self.records * 1e9,
            "goal": None if self.goal is None else self.goal.to_json(),
            "met": self.met,
            "params": self.params,
        }


# -- formatting ------------------------------------------------------------------------------------


def format_count(value: float) -> str:
    """12_345_678 -> '12.3 M'."""
    for factor, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}" if value < 100 * factor else f"{value / factor:.0f}{suffix}"
    return f"{value:.3g}"


def format_seconds(seconds: float) -> str:
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if seconds >= factor:
            return f"{seconds / factor:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


COLUMNS = ("workload", "records/s", "MB/s", "median time", "goal", "met?")


def table_rows(results: Sequence[Result]) -> list[tuple[str, ...]]:
    rows = []
    for result in results:
        mb = result.mb_per_second
        met = result.met
        rows.append(
            (
                result.name,
                format_count(result.records_per_second),
                "-" if mb is None else f"{mb:,.0f}" if mb >= 10 else f"{mb:.2g}",
                f"{format_seconds(result.median)}/{result.op}",
                "" if result.goal is None else result.goal.text,
                "" if met is None else "yes" if met else "NO",
            )
        )
    return rows


def print_table(results: Sequence[Result], file: Any = None) -> None:
    """Aligned columns; a rule between groups; numbers right-aligned."""
    out = file or sys.stdout
    rows = table_rows(results)
    widths = [max([len(COLUMNS[i])] + [len(row[i]) for row in rows]) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i in (0, 4, 5) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    print(line(COLUMNS), file=out)
    previous = None
    for result, row in zip(results, rows, strict=True):
        if (result.suite, result.group) != previous:
            print(rule, file=out)
            previous = (result.suite, result.group)
        print(line(row), file=out)
    goals = [r for r in results if r.goal is not None]
    if goals:
        met = sum(1 for r in goals if r.met)
        print(f"\n{met} of {len(goals)} goals met.", file=out)


# -- machine info and JSON -------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _git_commit() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    import numpy

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        from logstore import __version__ as logstore_version
    except ImportError:
        logstore_version = None
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_bytes": _memory_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": numpy.__version__,
        "logstore": logstore_version,
        "git_commit": _git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_json(path: str | os.PathLike[str], results: Sequence[Result], **extra: Any) -> None:
    document = {"machine": machine_info(), **extra, "results": [r.to_json() for r in results]}
    target = Path(path)
    if target.parent != Path(""):
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")


# -- progress --------------------------------------------------------------------------------------


class Progress:
    """A tqdm bar on stderr while stdout is a terminal; silent otherwise (logs, pipes, CI)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self._bar: Any = None
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="workload", leave=False, file=sys.stderr,
                             dynamic_ncols=True)

    def add(self, count: int) -> None:
        """Announce ``count`` more workloads."""
        if self._bar is not None:
            self._bar.total += count
            self._bar.refresh()

    def start(self, label: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(label)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
