"""Issue 16's scorecard: every row of its table with its goal, "yes"/"NO", and the count met.

``scripts/bench peers`` and ``scripts/bench client`` both print it after their own table, from
the results of that one run; a row the suite did not measure says so (e.g. the Redis ratios in
``bench client``). Rows find their numbers *by name*, so a suite can add or reorder workloads
without touching this file:

- peers results by (tier, size, workload key, system, variant) in ``Result.params``;
- client results by their table name (``Result.name``, e.g. "consume 100 B: poll() records");
- any result may also carry ``params["scorecard"] = {row key: value}`` (value in the row's unit:
  records/s, a 0..1 share, a ratio, or ms); that wins over the lookups above. The row keys are
  the ``Row.key`` values in ``ROWS`` (``txn-vs-idempotent``, ``end-txn-p50-ms``, ...), so a
  workload added later (transactions, the 1 KiB ceiling share) joins the scorecard by naming
  its row.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import Result, format_count

Lookup = Callable[[Sequence[Result]], float | None]


@dataclass(frozen=True)
class Row:
    key: str
    text: str  # issue 16's row, as the table says it
    goal: str
    target: float
    at_most: bool  # the goal is an upper bound (latency), else a lower bound
    unit: str  # "rate", "x", "%" or "ms"
    lookups: tuple[Lookup, ...]

    def value(self, results: Sequence[Result]) -> float | None:
        for result in results:
            given = result.params.get("scorecard", {}).get(self.key)
            if given is not None:
                return float(given)
        for lookup in self.lookups:
            found = lookup(results)
            if found is not None:
                return found
        return None

    def met(self, value: float) -> bool:
        return value <= self.target if self.at_most else value >= self.target

    def show(self, value: float) -> str:
        if self.unit == "rate":
            return f"{format_count(value)}/s"
        if self.unit == "%":
            return f"{value:.0%}"
        if self.unit == "ms":
            return f"{value:.3g} ms"
        return f"{value:.3g}x"


# -- lookups ------------------------------------------------------------------------------------


def _peers(workload: str, size: int, variant: str | None = None,
           tier: str = "page") -> Callable[[Sequence[Result]], list[Result]]:
    def rows(results: Sequence[Result]) -> list[Result]:
        return [r for r in results if r.suite == "peers"
                and r.params.get("system") == "logstore" and r.params.get("tier") == tier
                and r.params.get("size") == size and r.params.get("workload") == workload
                and (variant is None or r.params.get("variant") == variant)]
    return rows


def peers_rate(workload: str, size: int, variant: str) -> Lookup:
    def lookup(results: Sequence[Result]) -> float | None:
        rows = _peers(workload, size, variant)(results)
        return max((r.records_per_second for r in rows), default=None)
    return lookup


def peers_ratio(workload: str, size: int, against: str, variant: str | None = None) -> Lookup:
    """logstore's best row (or ``variant``'s) over the peer / the gRPC ceiling."""
    def lookup(results: Sequence[Result]) -> float | None:
        rows = _peers(workload, size, variant)(results)
        ratios = [r.params.get("ratios", {}).get(against) for r in rows]
        found = [ratio for ratio in ratios if ratio is not None]
        return max(found, default=None)
    return lookup


def peers_latency(workload: str, size: int, percentile: str) -> Lookup:
    def lookup(results: Sequence[Result]) -> float | None:
        rows = _peers(workload, size)(results)
        values = [r.params[percentile] for r in rows if percentile in r.params]
        return min(values, default=None)
    return lookup


def client_rate(name: str) -> Lookup:
    def lookup(results: Sequence[Result]) -> float | None:
        rows = [r for r in results if r.suite == "client"
                and (r.name == name or r.name.startswith(f"{name} ("))]  # "(client CPU ...)"
        return max((r.records_per_second for r in rows), default=None)
    return lookup


def client_param(name_start: str, key: str) -> Lookup:
    def lookup(results: Sequence[Result]) -> float | None:
        rows = [r for r in results if r.suite == "client" and r.name.startswith(name_start)
                and key in r.params]
        return rows[0].params[key] if rows else None
    return lookup


LATENCY_10K = "latency-10000"
E2E = "end-to-end send() -> poll() at 10,000 rec/s, 100 B"

ROWS = (
    Row("e2e-p50-ms", f"{E2E}: p50", "p50 <= 1 ms", 1.0, True, "ms",
        (peers_latency(LATENCY_10K, 100, "p50_ms"), client_param("end-to-end", "p50_ms"))),
    Row("e2e-p99-ms", f"{E2E}: p99", "p99 <= 2 ms", 2.0, True, "ms",
        (peers_latency(LATENCY_10K, 100, "p99_ms"), client_param("end-to-end", "p99_ms"))),
    Row("consume-vs-redis", "consume from the beginning, 100 B, fastest API", ">= 40x Redis",
        40, False, "x", (peers_ratio("consume", 100, "redis"),)),
    Row("poll-rate", "consume, per-record poll(), 100 B", ">= 4 M rec/s", 4e6, False, "rate",
        (peers_rate("consume", 100, "poll"), client_rate("consume 100 B: poll() records"))),
    Row("send-batch-vs-redis", "produce, 100 B, send_batch()", ">= 60x Redis", 60, False, "x",
        (peers_ratio("produce", 100, "redis", "send_batch"),)),
    Row("send-rate", "produce, 100 B, send() per record", ">= 2.5 M rec/s", 2.5e6, False, "rate",
        (peers_rate("produce", 100, "send"),
         client_rate("produce 100 B: send() per record, flush=never"))),
    Row("produce-1k-vs-ceiling", "1 KiB produce vs the raw gRPC upload ceiling", ">= 70%", 0.70,
        False, "%", (peers_ratio("produce", 1024, "grpc"),)),
    Row("consume-1k-vs-ceiling", "1 KiB consume vs the raw gRPC download ceiling", ">= 85%",
        0.85, False, "%", (peers_ratio("consume", 1024, "grpc"),)),
    Row("txn-vs-idempotent", "transactional vs idempotent produce, 10,000 records/transaction",
        ">= 0.8x", 0.8, False, "x", ()),
    Row("end-txn-p50-ms", "EndTxn p50", "<= 2 ms", 2.0, True, "ms", ()),
)


def evaluate(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Every row: its value (None when not measured) and whether the goal is met."""
    out = []
    for row in ROWS:
        value = row.value(results)
        out.append({"key": row.key, "row": row.text, "goal": row.goal, "value": value,
                    "met": None if value is None else row.met(value)})
    return out


def print_scorecard(results: Sequence[Result], file: Any = None) -> None:
    out = file or sys.stdout
    lines = []
    for row, verdict in zip(ROWS, evaluate(results), strict=True):
        value = verdict["value"]
        shown = "not measured in this run" if value is None else row.show(value)
        met = "" if value is None else "yes" if verdict["met"] else "NO"
        lines.append(f"  {row.text:<66} {row.goal:<14} {shown:>12}  {met}")
    measured = [v for v in evaluate(results) if v["value"] is not None]
    met_count = sum(1 for v in measured if v["met"])
    print(f"\nIssue 16 scorecard: {met_count} of {len(measured)} measured goals met "
          f"({len(ROWS)} rows)", file=out)
    for line in lines:
        print(line, file=out)
