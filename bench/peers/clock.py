"""Timing inside a client process, and the pacing of fixed-rate sends.

A ``Timer`` brackets exactly the timed part of a role: the wall clock (``time.time_ns``, so the
harness can line up several processes: a measurement of four producers lasts from the first
start to the last end), the monotonic ``perf_counter`` (the duration of a one-process
measurement) and the process CPU time (client CPU per record, to see where the time goes).
"""

from __future__ import annotations

import time
from typing import Any


class Timer:
    def __init__(self) -> None:
        self.start_ns = self.end_ns = 0
        self._perf = self._cpu = 0.0
        self.elapsed_s = self.cpu_s = 0.0

    def start(self) -> None:
        self.start_ns = time.time_ns()
        self._cpu = time.process_time()
        self._perf = time.perf_counter()

    def stop(self) -> None:
        self.elapsed_s = time.perf_counter() - self._perf
        self.cpu_s = time.process_time() - self._cpu
        self.end_ns = time.time_ns()

    def result(self, records: int, **extra: Any) -> dict[str, Any]:
        return {"records": records, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "elapsed_s": self.elapsed_s, "client_cpu_s": self.cpu_s, **extra}


class Pacer:
    """How many records are due at a fixed ``rate`` since ``start()``: ``due()`` minus what was
    sent. ``idle_s`` is how long a sender sleeps when none is due (short against the 100 µs
    between records at 10 k/s, long enough not to spin a core the server needs)."""

    idle_s = 0.0002

    def __init__(self, rate: float, total: int) -> None:
        self.rate = rate
        self.total = total
        self._start = 0.0

    def start(self) -> None:
        self._start = time.perf_counter()

    def due(self) -> int:
        return min(self.total, int((time.perf_counter() - self._start) * self.rate) + 1)
