"""The side-by-side results: ``Result`` rows for the JSON, ratios, goals, and the terminal table.

Every number in the table is the median of the timed runs. Throughput is records/s and MB/s of
record values (``records x size / s``, 1 MB = 10**6 bytes; the same bytes for every system,
whatever each adds around them). Ratios sit on logstore's rows:

- ``/redis``, ``/nats``: this logstore row's records/s over the *fastest* client API of that
  peer in the same tier, size and workload;
- ``/gRPC``: this row's MB/s over the raw gRPC ceiling in the same direction (upload for
  produce, download for consume and groups).

Latency rows show p50 / p99 / p99.9 from send to receive; their records/s is the rate achieved.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import Result, format_count
from bench.peers.harness import Measurement, size_label
from bench.peers.plan import PEERS
from bench.peers.servers import TIERS

SUITE = "peers"


# -- results -----------------------------------------------------------------------------------


def to_results(measurements: Sequence[Measurement], ceiling: Sequence[Measurement]) -> list[Result]:
    results = []
    for m in [*ceiling, *measurements]:
        params: dict[str, Any] = {
            "tier": m.tier, "size": m.size, "workload": m.workload.key,
            "workload_title": m.workload.title, "kind": m.workload.kind,
            "direction": m.workload.direction, "system": m.system, "variant": m.variant.key,
            "api": m.variant.label, "runs": len(m.samples),
            "client_cpu_ns_per_record": _median_per_record(m, "client_cpu_s"),
            "server_cpu_ns_per_record": _median_per_record(m, "server_cpu_s"),
            "samples_extra": [s.extra for s in m.samples if s.extra],
        }
        if m.workload.kind == "latency":
            params.update(_latency_params(m))
        name = (f"{m.workload.key} {size_label(m.size)} {m.system} {m.variant.key}"
                + (f" [{m.tier}]" if m.tier != "page" else ""))
        results.append(Result(
            suite=SUITE, group=m.workload.key, name=name, op="run",
            records=m.records if m.workload.kind != "latency" else _median_records(m),
            nbytes=(m.records if m.workload.kind != "latency" else _median_records(m)) * m.size,
            samples=[s.seconds for s in m.samples], params=params,
        ))
    add_ratios(results)
    return results


def _median_per_record(m: Measurement, attribute: str) -> float:
    values = [getattr(s, attribute) / s.records * 1e9 for s in m.samples if s.records]
    return statistics.median(values) if values else 0.0


def _median_records(m: Measurement) -> int:
    return int(statistics.median(s.records for s in m.samples))


def _latency_params(m: Measurement) -> dict[str, Any]:
    runs = [s.latency for s in m.samples if s.latency]
    if not runs:
        return {}
    middle = sorted(runs, key=lambda r: r["p99_ms"])[len(runs) // 2]
    return {
        **{key: statistics.median(r[key] for r in runs)
           for key in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")},
        "latency_runs": [{k: v for k, v in r.items() if k not in ("cdf_ms", "histogram")}
                         for r in runs],
        "cdf_ms": middle["cdf_ms"],  # the run with the median p99
        "histogram": middle.get("histogram", []),
    }


def _key(result: Result) -> tuple[str, int, str]:
    p = result.params
    return p["tier"], p["size"], p["workload"]


def ceiling_mb(results: Sequence[Result], direction: str) -> float | None:
    for result in results:
        if result.params["kind"] == "ceiling" and result.params["direction"] == direction:
            return result.mb_per_second
    return None


def cpu_ms_per_mib(result: Result) -> tuple[float, float]:
    """(client, server) CPU ms per MiB of record values (a ceiling's "record" is a message)."""
    p = result.params
    per_mib = (1 << 20) * result.records / result.nbytes if result.nbytes else 0.0
    return (p["client_cpu_ns_per_record"] * per_mib / 1e6,
            p["server_cpu_ns_per_record"] * per_mib / 1e6)


def cpu_against_ceiling(results: Sequence[Result], size: int = 1024) -> list[str]:
    """logstore's fastest consume of ``size`` records against the download ceiling by CPU per
    MiB, client and server (each process's user + system time, all threads): what a shared
    box's wall clock hides, and which side costs more than gRPC alone. The consumer-shaped
    ceiling (4 MiB messages read from the page cache) is set beside it when it ran: the part of
    the gap that is the shape and the read, not logstore's code."""
    ceilings = {r.params["direction"]: r for r in results if r.params["kind"] == "ceiling"}
    ceiling = ceilings.get("download")
    consume = best(results, "logstore", "page", size, "consume")
    if ceiling is None or consume is None or not cpu_ms_per_mib(ceiling)[0]:
        return []
    (ceiling_client, ceiling_server), (client, server) = cpu_ms_per_mib(ceiling), cpu_ms_per_mib(consume)
    ratio = (ceiling_client + ceiling_server) / (client + server) if client + server else 0.0
    shaped = ""
    if "consume" in ceilings and cpu_ms_per_mib(ceilings["consume"])[0]:
        shaped_client, shaped_server = cpu_ms_per_mib(ceilings["consume"])
        shaped_ratio = (shaped_client + shaped_server) / (client + server) if client + server else 0.0
        shaped = (f"; the consumer-shaped ceiling {shaped_client:.2f} + {shaped_server:.2f} ms "
                  f"(consume at {shaped_ratio:.0%} of it by CPU)")
    return [f"CPU per MiB, client + server: download ceiling {ceiling_client:.2f} + "
            f"{ceiling_server:.2f} ms; consume {size_label(size)} {consume.params['variant']} "
            f"{client:.2f} + {server:.2f} ms ({ratio:.0%} of the ceiling by CPU){shaped}"]


def best(results: Sequence[Result], system: str, tier: str, size: int, workload: str) -> Result | None:
    rows = [r for r in results if r.params["system"] == system and _key(r) == (tier, size, workload)]
    return max(rows, key=lambda r: r.records_per_second, default=None)


def add_ratios(results: Sequence[Result]) -> None:
    for result in results:
        p = result.params
        if p["system"] != "logstore" or p["kind"] == "latency":
            continue
        ratios: dict[str, float] = {}
        for peer in PEERS:
            other = best(results, peer, *_key(result))
            if other is not None:
                ratios[peer] = result.records_per_second / other.records_per_second
        ceiling = ceiling_mb(results, p["direction"])
        mb = result.mb_per_second
        if ceiling and mb is not None:
            ratios["grpc"] = mb / ceiling
        p["ratios"] = ratios


# -- goals --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """logstore's fastest API in (tier, size, workload) against a peer (x) or the ceiling (%)."""

    text: str
    tier: str
    size: int
    workload: str
    against: str  # redis, nats or grpc
    target: float

    def value(self, results: Sequence[Result]) -> float | None:
        ours = best(results, "logstore", self.tier, self.size, self.workload)
        if ours is None:
            return None
        return ours.params.get("ratios", {}).get(self.against)

    def to_json(self, results: Sequence[Result]) -> dict[str, Any]:
        value = self.value(results)
        return {"goal": self.text, "value": value, "target": self.target,
                "met": None if value is None else value >= self.target}


GOALS = (
    Goal("100 B produce, logstore >= 40x Redis Streams", "page", 100, "produce", "redis", 40),
    Goal("100 B produce, logstore >= 100x JetStream", "page", 100, "produce", "nats", 100),
    Goal("100 B consume, logstore >= 40x Redis Streams", "page", 100, "consume", "redis", 40),
    Goal("100 B consume, logstore >= 40x JetStream", "page", 100, "consume", "nats", 40),
    Goal("1 KiB produce >= 70% of the gRPC ceiling", "page", 1024, "produce", "grpc", 0.70),
    Goal("1 KiB consume >= 85% of the gRPC ceiling", "page", 1024, "consume", "grpc", 0.85),
    Goal("fsync tier, 100 B produce, logstore >= 50x Redis appendfsync always", "fsync", 100,
         "produce", "redis", 50),
)


def _ratio_text(value: float, against: str) -> str:
    if against == "grpc":
        return f"{value:.0%}"
    return f"{value:.3g}x" if value < 100 else f"{value:.0f}x"


# -- the table -------------------------------------------------------------------------------------

COLUMNS = ("workload", "size", "system", "client API", "records/s", "MB/s", "p50 ms", "p99 ms",
           "p99.9 ms", "/redis", "/nats", "/gRPC")
RIGHT = {4, 5, 6, 7, 8, 9, 10, 11}


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _row(result: Result, first: bool) -> tuple[str, ...]:
    p = result.params
    mb = result.mb_per_second
    ratios = p.get("ratios", {})
    latency = p["kind"] == "latency"
    return (
        p["workload_title"] if first else "",
        size_label(p["size"]) if first else "",
        p["system"],
        p["api"],
        format_count(result.records_per_second),
        "" if mb is None else f"{mb:,.0f}" if mb >= 10 else f"{mb:.2g}",
        _ms(p.get("p50_ms")) if latency else "",
        _ms(p.get("p99_ms")) if latency else "",
        _ms(p.get("p999_ms")) if latency else "",
        *(_ratio_text(ratios[k], k) if k in ratios else "" for k in ("redis", "nats", "grpc")),
    )


def print_table(results: Sequence[Result], context: dict[str, Any], file: Any = None) -> None:
    out = file or sys.stdout
    ceiling = [r for r in results if r.params["kind"] == "ceiling"]
    rows_by_tier: dict[str, list[Result]] = {}
    for result in results:
        if result.params["kind"] != "ceiling":
            rows_by_tier.setdefault(result.params["tier"], []).append(result)
    if ceiling:
        parts = [f"{r.params['direction']} {r.mb_per_second:,.0f} MB/s" for r in ceiling
                 if r.mb_per_second is not None]
        print(f"gRPC ceiling (raw bytes over loopback, no logstore code; upload, download: 1 MiB "
              f"messages on one stream; produce: the producer's shape, 4 MiB messages each "
              f"answered, 5 in flight; consume: the consumer's shape, 4 MiB messages each read "
              f"from the page cache): "
              f"{', '.join(parts)}", file=out)
        for line in cpu_against_ceiling(results):
            print(line, file=out)
    for tier, rows in rows_by_tier.items():
        settings = "; ".join(f"{system} {text}" for system, text in TIERS[tier].items())
        print(f"\n== {tier} tier: {settings}", file=out)
        table: list[tuple[str, ...]] = []
        blocks: list[int] = []
        previous = None
        for result in rows:
            key = (result.params["workload"], result.params["size"])
            if key != previous:
                blocks.append(len(table))
            table.append(_row(result, key != previous))
            previous = key
        _print_rows(table, blocks, out)
    print_goals(results, out)
    print_versions(context, out)


def _print_rows(table: list[tuple[str, ...]], blocks: list[int], out: Any) -> None:
    widths = [max([len(COLUMNS[i])] + [len(row[i]) for row in table]) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(w) if i in RIGHT else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    print(line(COLUMNS), file=out)
    for index, row in enumerate(table):
        if index in blocks:
            print(rule, file=out)
        print(line(row), file=out)


def print_goals(results: Sequence[Result], out: Any) -> None:
    lines = []
    for goal in GOALS:
        value = goal.value(results)
        if value is None:
            lines.append(f"  {goal.text:<70} not measured in this run")
            continue
        met = "yes" if value >= goal.target else "NO"
        lines.append(f"  {goal.text:<70} {_ratio_text(value, goal.against):>7}  {met}")
    measured = [g for g in GOALS if g.value(results) is not None]
    met_count = sum(1 for g in measured if (g.value(results) or 0) >= g.target)
    print(f"\nGoals (logstore's fastest client API; same run): {met_count} of {len(measured)} "
          f"measured goals met", file=out)
    for text in lines:
        print(text, file=out)


def print_versions(context: dict[str, Any], out: Any) -> None:
    if not context:
        return
    print("\nServers and clients:", file=out)
    for name, info in context.get("systems", {}).items():
        server = info.get("server", {})
        version = server.get("version", "")
        config = server.get("config")
        settings = ", ".join(f"{k} {v!r}" for k, v in config.items()) if config else ""
        print(f"  {name} {version}: {server.get('command', '')}", file=out)
        if settings:
            print(f"      settings at start: {settings}", file=out)
        for tier, text in info.get("tiers", {}).items():
            print(f"      {tier} tier: {text}", file=out)
        client = info.get("client", {})
        if client:
            print("      client: " + "; ".join(f"{k} {v}" for k, v in client.items()), file=out)
    versions = context.get("versions", {})
    if versions:
        print("  " + ", ".join(f"{k} {v}" for k, v in versions.items()), file=out)
    plan = context.get("plan")
    if plan:
        print(f"  plan: {plan}", file=out)
    for path in context.get("charts", []):
        print(f"  chart: {path}", file=out)
