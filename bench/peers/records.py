"""The records every system writes, and the statistics of latencies.

Records. Every system gets the same values: row ``i`` of a data set of ``n`` fixed-size records
is row ``i % POOL_ROWS`` of a pool of random bytes drawn from ``numpy.random.default_rng(seed)``.
Any slice of rows (the share of one of four producers) is built without drawing the rows before
it. No system compresses or deduplicates, so the repeat every 65,536 rows changes nothing.

Latency records carry their send time in their first ``STAMP_BYTES`` bytes: ``time.time_ns()``
as a little-endian int64 (the wall clock, shared by every process on the machine; the
``perf_counter`` of one process means nothing in another).

Statistics. ``latency_summary`` turns latencies in nanoseconds into p50/p90/p99/p99.9/max in
milliseconds and ``CDF_QUANTILES``, a grid dense in the tail, for the CDF chart.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

import numpy as np

POOL_ROWS = 65_536
STAMP_BYTES = 8
STAMP = struct.Struct("<q")
#: The quantiles kept for the CDF chart: every percent up to 90 %, then log-spaced to 99.99 %.
CDF_QUANTILES: tuple[float, ...] = tuple(
    float(q) for q in np.concatenate([np.linspace(0.0, 0.9, 91), 1.0 - np.logspace(-1.05, -4, 60)])
)


@functools.lru_cache(maxsize=4)
def _pool(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.frombuffer(rng.bytes(POOL_ROWS * size), dtype=np.uint8).reshape(POOL_ROWS, size)


def value_rows(start: int, stop: int, size: int, seed: int) -> np.ndarray:
    """Rows [start, stop) of the data set as a C-contiguous (rows, size) uint8 array."""
    pool = _pool(size, seed)
    index = np.arange(start, stop, dtype=np.int64) % POOL_ROWS
    return np.ascontiguousarray(pool[index])


def as_bytes_list(rows: np.ndarray) -> list[bytes]:
    """One ``bytes`` per row (what a per-record API takes)."""
    blob = rows.tobytes()
    size = rows.shape[1]
    return [blob[i : i + size] for i in range(0, len(blob), size)]


def filler(size: int, seed: int) -> bytes:
    """The bytes after the send time in a latency record of ``size`` bytes."""
    return bytes(_pool(size, seed)[0, STAMP_BYTES:])


def read_stamp(value: Any) -> int:
    """The send time (ns) in the first bytes of a latency record (bytes or memoryview)."""
    return int(STAMP.unpack_from(value, 0)[0])


#: Latency histogram bins, ms: 60 log-spaced bins from 20 µs to 2 s.
HISTOGRAM_EDGES_MS = np.geomspace(0.02, 2000.0, 61)


def latency_summary(latencies_ns: np.ndarray) -> dict[str, Any]:
    """Percentiles in ms and the CDF grid; an empty input gives zeros (the caller checks)."""
    if len(latencies_ns) == 0:
        return {"count": 0, "p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "p999_ms": 0.0,
                "max_ms": 0.0, "cdf_ms": [], "histogram": []}
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    p50, p90, p99, p999 = np.quantile(ms, [0.5, 0.9, 0.99, 0.999])
    return {
        "count": int(len(ms)),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        "max_ms": float(ms.max()),
        "cdf_ms": [float(v) for v in np.quantile(ms, CDF_QUANTILES)],
        #: records per bin of ``HISTOGRAM_EDGES_MS`` (those outside go to the end bins)
        "histogram": np.histogram(np.clip(ms, HISTOGRAM_EDGES_MS[0], HISTOGRAM_EDGES_MS[-1]),
                                  HISTOGRAM_EDGES_MS)[0].tolist(),
    }


def settled_latencies(sent: np.ndarray, received: np.ndarray, settle_s: float) -> dict[str, Any]:
    """Latency summary (send to receive, ns in) of the records sent after the first
    ``settle_s`` seconds of a run: connection set-up is not what the workload measures."""
    if len(sent) == 0:
        return latency_summary(sent)
    keep = sent >= sent.min() + int(settle_s * 1e9)
    return latency_summary((received - sent)[keep])
