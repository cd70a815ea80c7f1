"""The order of the benchmark: tiers, sizes, runs, workloads, systems; and what a run measures.

Loops, outermost first: durability tier -> record size -> run (0 is the warm-up, with
``warmup_fraction`` of the records; its numbers are dropped) -> workload -> system -> client API
variant. So every system runs every workload once per run, alternating with the others in the
same minute, and the order of the systems rotates from run to run. Within a run, *consume* reads
the log that *produce* (one producer) wrote, and the three group workloads share one 8-partition
fill; everything a run created is deleted when it ends. In the fsync tier only the workloads that
write (produce, latency) run: reads cost the same in both tiers. The gRPC ceiling (upload, the
producer's shape, then download) opens every run of every size in the first tier, so it too is measured in the same
minutes as the systems; its number is the median over all those runs.

What one measurement's number is (``seconds``):

- produce, consume: from the first client's start to the last client's end (wall clock; all
  clients of a measurement start together, see ``pool``);
- latency: the send-to-receive percentiles of the records sent after the first ``settle_s``;
  ``seconds`` is how long the receiver ran (records/s is then the rate achieved);
- consumer group: from the first record any member received to the last, scaled by
  records / (records - the first batch), so the join (member ids, assignment) is not counted
  and the batch that opened the window is not counted twice; ``join_s`` keeps the join time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import Progress
from bench.peers.grpc_ceiling import CONSUME_MESSAGE_BYTES, PRODUCE_MESSAGE_BYTES
from bench.peers.plan import (
    TIERED_KINDS,
    Context,
    Job,
    Plan,
    System,
    Variant,
    Workload,
)
from bench.peers.pool import Pool
from bench.peers.servers import Server, process_cpu_seconds

#: A measurement may take this long plus ``records / MIN_RATE`` seconds before it is abandoned.
BASE_TIMEOUT_S = 120.0
MIN_RATE = 2_000.0
MESSAGE_BYTES = 1 << 20


@dataclass
class Sample:
    """One timed run of one measurement."""

    seconds: float
    records: int
    client_cpu_s: float
    server_cpu_s: float
    latency: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    tier: str
    size: int
    workload: Workload
    system: str
    variant: Variant
    records: int  # per run
    samples: list[Sample] = field(default_factory=list)


class Harness:
    def __init__(
        self,
        plan: Plan,
        systems: Sequence[System],
        pool: Pool,
        progress: Progress,
        tiers: Sequence[str],
        workloads: Sequence[Workload],
        ceiling: Server | None,
    ) -> None:
        self.plan = plan
        self.systems = list(systems)
        self.pool = pool
        self.progress = progress
        self.tiers = list(tiers)
        self.workloads = list(workloads)
        self.ceiling = ceiling

    # -- the plan ----------------------------------------------------------------------------------

    def runs(self) -> range:
        return range(0 if self.plan.warmup_fraction > 0 else 1, self.plan.repeats + 1)

    def workloads_of(self, tier: str) -> list[Workload]:
        if tier == "page":
            return self.workloads
        return [w for w in self.workloads if w.kind in TIERED_KINDS]

    def count(self) -> int:
        """How many measurements (progress bar steps) the plan holds."""
        per_size = 0
        for tier in self.tiers:
            for workload in self.workloads_of(tier):
                for system in self.systems:
                    if tier in system.tiers:
                        per_size += len(system.variants(workload))
        ceiling = 3 if self.ceiling is not None else 0
        return (ceiling + per_size) * len(self.plan.sizes) * len(self.runs())

    # -- running -----------------------------------------------------------------------------------

    def run(self) -> tuple[list[Measurement], list[Measurement]]:
        """(the systems' measurements, the ceiling's)"""
        self.progress.add(self.count())
        ceiling = self._ceiling_measurements()
        found: dict[tuple[str, int, str, str, str], Measurement] = {}
        for tier in self.tiers:
            systems = [s for s in self.systems if tier in s.tiers]
            for system in systems:
                system.set_tier(tier)
            for size in self.plan.sizes:
                for run in self.runs():
                    ctx = self._context(tier, size, run)
                    order = systems[run % len(systems):] + systems[: run % len(systems)]
                    if tier == self.tiers[0]:
                        self._ceiling(ceiling, run)
                    try:
                        for workload in self.workloads_of(tier):
                            for system in order:
                                for variant in _turns(system.variants(workload), run):
                                    sample = self._measure(system, workload, variant, ctx)
                                    if run == 0:
                                        continue
                                    key = (tier, size, workload.key, system.name, variant.key)
                                    found.setdefault(key, Measurement(
                                        tier, size, workload, system.name, variant,
                                        ctx.records)).samples.append(sample)
                    finally:
                        for system in systems:
                            system.end_run(ctx)
            for system in systems:
                system.set_tier("page")
        return self._ordered(found.values()), ceiling

    def _ordered(self, measurements: Iterable[Measurement]) -> list[Measurement]:
        """Tier, size, workload and system in plan order (variants stay in the system's order),
        whatever order the rotating runs met them in."""
        workload_index = {w.key: i for i, w in enumerate(self.workloads)}
        system_index = {s.name: i for i, s in enumerate(self.systems)}
        variants = {s.name: s for s in self.systems}

        def variant_index(m: Measurement) -> int:
            keys = [v.key for v in variants[m.system].variants(m.workload)]
            return keys.index(m.variant.key) if m.variant.key in keys else len(keys)

        return sorted(measurements, key=lambda m: (
            self.tiers.index(m.tier), self.plan.sizes.index(m.size),
            workload_index[m.workload.key], system_index[m.system], variant_index(m)))

    def _context(self, tier: str, size: int, run: int) -> Context:
        records = self.plan.records
        if run == 0:
            records = max(100, int(records * self.plan.warmup_fraction))
        timeout = BASE_TIMEOUT_S + records / MIN_RATE + self.plan.latency_seconds
        return Context(tier=tier, size=size, records=records, run=run, plan=self.plan,
                       timeout_s=timeout)

    def _label(self, ctx: Context, workload: Workload, system: str, variant: Variant) -> str:
        run = "warm-up" if ctx.run == 0 else f"run {ctx.run}/{self.plan.repeats}"
        return (f"{ctx.tier} {size_label(ctx.size)} {run}: {workload.key} {system} "
                f"{variant.key}")

    def _measure(self, system: System, workload: Workload, variant: Variant,
                 ctx: Context) -> Sample:
        self.progress.start(self._label(ctx, workload, system.name, variant))
        job = system.job(workload, variant, ctx)
        for before in job.before:
            self._run_job(before, ctx.timeout_s)
        results, server_cpu = self._run_job(job, ctx.timeout_s)
        if job.check is not None:
            job.check(results)
        self.progress.done()
        return summarize(workload, results, server_cpu, ctx.records)

    def _run_job(self, job: Job, timeout: float) -> tuple[list[dict[str, Any]], float]:
        pid = job.server_pid
        start = [0.0]

        def before_go() -> None:
            start[0] = process_cpu_seconds(pid) if pid else 0.0

        results = self.pool.run(job.specs, timeout, before_go)
        server_cpu = process_cpu_seconds(pid) - start[0] if pid else 0.0
        return results, server_cpu

    def _ceiling_measurements(self) -> list[Measurement]:
        if self.ceiling is None:
            return []
        workloads = [(Workload("ceiling-upload", "raw gRPC, client -> server, 1 MiB messages",
                               "ceiling", "upload"), MESSAGE_BYTES),
                     # the producer's shape (see grpc_ceiling): printed beside the upload ceiling
                     (Workload("ceiling-produce", "raw gRPC, client -> server, 4 MiB messages, "
                               "each answered, 5 in flight", "ceiling", "produce"),
                      PRODUCE_MESSAGE_BYTES),
                     (Workload("ceiling-download", "raw gRPC, server -> client, 1 MiB messages",
                               "ceiling", "download"), MESSAGE_BYTES),
                     # the consumer's shape: printed beside the download ceiling
                     (Workload("ceiling-consume", "raw gRPC, server -> client, 4 MiB messages, "
                               "each read from the page cache", "ceiling", "consume"),
                      CONSUME_MESSAGE_BYTES)]
        return [Measurement("page", size, w, "grpc",
                            Variant(w.direction, "generic handler, raw bytes"),
                            max(1, self.plan.ceiling_bytes // size))
                for w, size in workloads]

    def _ceiling(self, measurements: list[Measurement], run: int) -> None:
        """One upload and one download run (run 0: a warm-up with fewer messages)."""
        if self.ceiling is None:
            return
        for measurement in measurements:
            count = measurement.records
            if run == 0:
                count = max(1, int(count * self.plan.warmup_fraction))
            label = "warm-up" if run == 0 else f"run {run}/{self.plan.repeats}"
            self.progress.start(f"gRPC ceiling {measurement.variant.key} {label}")
            spec = {"system": "ceiling", "role": measurement.variant.key,
                    "server": self.ceiling.address, "messages": count,
                    "timeout_s": BASE_TIMEOUT_S}
            results, server_cpu = self._run_job(Job([spec], self.ceiling.pid), BASE_TIMEOUT_S)
            self.progress.done()
            if run:
                measurement.samples.append(summarize(measurement.workload, results, server_cpu,
                                                     count))


def _turns(variants: list[Variant], run: int) -> list[Variant]:
    """A system's variants, the first one moved along by one each run: every variant takes its
    turn at reading a run's freshly written topic first, so the order cannot favour one (an A/B
    of 8 fresh 1 KiB topics on the shared box found no cost of reading first: 2 broker page
    faults per MiB, the same CPU per MiB within the noise)."""
    turn = run % len(variants) if variants else 0
    return variants[turn:] + variants[:turn]


def summarize(workload: Workload, results: list[dict[str, Any]], server_cpu: float,
              records: int) -> Sample:
    client_cpu = sum(r.get("client_cpu_s", 0.0) for r in results)
    if workload.kind == "latency":
        receiver = results[0]
        return Sample(receiver["elapsed_s"], receiver["records"], client_cpu, server_cpu,
                      latency=receiver["latency"],
                      extra={"fetch_batch": receiver.get("fetch_batch")})
    count = sum(r["records"] for r in results)
    if workload.kind == "group":
        start = min(r["start_ns"] for r in results)
        firsts = [r for r in results if r["first_ns"]]
        first = min(firsts, key=lambda r: r["first_ns"]) if firsts else None
        last = max(r["last_ns"] for r in results)
        if first is None or count <= first["first_batch"]:
            seconds = (last - start) / 1e9 if last > start else max(r["elapsed_s"] for r in results)
        else:
            seconds = (last - first["first_ns"]) / 1e9 * count / (count - first["first_batch"])
        extra = {"join_s": (first["first_ns"] - start) / 1e9 if first else None,
                 "records_received": count,
                 "modes": sorted({r.get("mode", "") for r in results} - {""}),
                 "per_member": [r["records"] for r in results]}
        return Sample(seconds * records / count if count else seconds, records, client_cpu,
                      server_cpu, extra=extra)
    if len(results) == 1:
        seconds = results[0]["elapsed_s"]
    else:
        seconds = (max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)) / 1e9
    return Sample(seconds, count, client_cpu, server_cpu)


def size_label(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"
