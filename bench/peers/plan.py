"""What the side-by-side benchmark measures: plans, workloads, variants, and the system interface.

A *measurement* is one workload of one system's client API variant at one record size in one
durability tier and one run. Each system builds a ``Job`` for it (the specs of its client
processes, the untimed jobs that must run first, a check of the results); the harness runs the
jobs, alternating systems, and keeps the timed runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

SYSTEMS = ("logstore", "redis", "nats")
PEERS = ("redis", "nats")
TIERS = ("page", "fsync")
SIZES = (100, 1024)


@dataclass(frozen=True)
class Plan:
    records: int  # N: records per throughput measurement, the same for every system
    sizes: tuple[int, ...]
    repeats: int  # timed runs; the table shows their median
    warmup_fraction: float  # the warm-up run moves this share of N (0: no warm-up run)
    latency_rates: tuple[int, ...]  # records per second of each latency workload
    latency_seconds: float  # how long the latency workload sends
    group_members: tuple[int, ...]
    ceiling_bytes: int  # bytes per run of the raw gRPC probe, each direction
    group_partitions: int = 8
    producers: int = 4  # in the multi-producer workload, one partition each
    seed: int = 20_240_501


FULL = Plan(records=300_000, sizes=SIZES, repeats=3, warmup_fraction=0.2,
            latency_rates=(1_000, 10_000, 100_000),
            latency_seconds=5.0, group_members=(1, 2, 4), ceiling_bytes=2 << 30)
QUICK = Plan(records=2_000, sizes=SIZES, repeats=1, warmup_fraction=0.0, latency_rates=(2_000,),
             latency_seconds=0.5, group_members=(1, 2, 4), ceiling_bytes=32 << 20)


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    kind: str  # produce, consume, latency, group, ceiling
    direction: str  # which gRPC ceiling bounds it: upload (produce) or download (consume)
    rate: int = 0  # latency workloads: records per second


def latency_key(rate: int) -> str:
    """The workload key of the latency workload at ``rate`` records/s: ``latency-10000``."""
    return f"latency-{rate}"


def workloads(plan: Plan) -> list[Workload]:
    found = [
        Workload("produce", "produce: 1 producer, 1 partition", "produce", "upload"),
        Workload(f"produce-{plan.producers}",
                 f"produce: {plan.producers} producers, {plan.producers} partitions",
                 "produce", "upload"),
        Workload("consume", "consume from the beginning, 1 partition", "consume", "download"),
    ]
    found += [Workload(latency_key(rate), f"end-to-end latency at {rate:,}/s", "latency", "",
                       rate) for rate in plan.latency_rates]
    found += [Workload(f"group-{m}", f"consumer group: {m} member{'s' * (m > 1)}, "
                       f"{plan.group_partitions} partitions", "group", "download")
              for m in plan.group_members]
    return found


#: Workloads that write (and so depend on the durability tier); the rest run in the page tier.
TIERED_KINDS = ("produce", "latency")


@dataclass(frozen=True)
class Variant:
    key: str
    label: str  # the client API, as the table shows it


@dataclass(frozen=True)
class Context:
    """One run of one size in one tier: what every job of that run needs."""

    tier: str
    size: int
    records: int
    run: int  # 0 is the warm-up run
    plan: Plan
    timeout_s: float

    @property
    def tag(self) -> str:
        """A prefix for the names of this run's topics, streams and groups."""
        return f"{self.tier}-{self.size}-r{self.run}"

    def latency_records(self, rate: int) -> int:
        """Records of a latency run at ``rate``: ``latency_seconds`` of them (scaled like the
        throughput runs, so a warm-up run is shorter)."""
        seconds = self.plan.latency_seconds * (self.records / self.plan.records)
        return max(100, int(rate * seconds))


@dataclass
class Job:
    """What one measurement runs: one spec per client process, started together."""

    specs: list[dict[str, Any]]
    server_pid: int | None = None
    #: Untimed jobs to run first (e.g. filling a log to consume).
    before: list[Job] = field(default_factory=list)
    #: Raises if the results are wrong (records missing); runs after the job, untimed.
    check: Callable[[list[dict[str, Any]]], None] | None = None


class System(Protocol):
    """A system under test, from the harness's side: admin work and job building."""

    name: str
    tiers: tuple[str, ...]

    def variants(self, workload: Workload) -> list[Variant]: ...

    def set_tier(self, tier: str) -> None: ...

    def job(self, workload: Workload, variant: Variant, ctx: Context) -> Job: ...

    def end_run(self, ctx: Context) -> None:
        """Delete everything the run created (untimed)."""

    def info(self) -> dict[str, Any]:
        """Client versions and settings, for the table and the JSON."""

    def close(self) -> None: ...


def expect_count(what: str, expected: int, actual: int) -> None:
    if actual != expected:
        raise RuntimeError(f"{what}: {actual:,} records stored, expected {expected:,}")


def rows_of(total: int, parts: int, index: int) -> tuple[int, int]:
    """Rows [start, stop) of part ``index`` of ``total`` rows cut into ``parts``."""
    return total * index // parts, total * (index + 1) // parts
