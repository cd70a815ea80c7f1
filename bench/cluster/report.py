"""The cluster suite's results: ``Result`` rows, the ratio goals, and the table.

Every number is a median over the timed runs. ``server CPU/rec`` is the CPU time of every server
process of the system (the 3 brokers, or the 3 nats-servers) during a run, per record. Throughput is records/s and MB/s of record values
(``records x size / s``, 1 MB = 10**6 bytes). On each factor-3 row, ``/factor 1`` is its
records/s over the factor-1 row of the same size, workload and acks; ``/JetStream`` is its
records/s over JetStream R3's in the same size and workload. The failover row's time is the
median of the kills.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.cluster.failover import Kill, kills_json
from bench.cluster.servers import LEASE_TTL_MS
from bench.cluster.throughput import Series
from bench.common import Goal, Result, format_count, format_seconds

SUITE = "cluster"
SMALL = 100
#: factor 3 acks=all, 100 B produce: records/s on this 2-core box.
PRODUCE_GOAL = Goal(min_rate=1.5e6)
FAILOVER_GOAL = Goal(max_seconds=5.0)


def _label(size: int) -> str:
    return f"{size} B" if size < 1024 else f"{size // 1024} KiB"


def _name(series: Series) -> str:
    if series.system == "nats":
        how = "publish_async, acked" if series.kind == "produce" else "pull fetch"
        return f"JetStream R3 ({how})"
    acks = f", acks={series.acks}" if series.kind == "produce" else ""
    return f"logstore factor {series.factor}{acks}"


def to_results(series: Sequence[Series], kills: Sequence[Kill]) -> list[Result]:
    results = []
    for s in series:
        goal = (PRODUCE_GOAL if (s.kind, s.size, s.system, s.factor, s.acks)
                == ("produce", SMALL, "logstore", 3, "all") else None)
        results.append(Result(
            SUITE, f"{s.kind} {_label(s.size)}", _name(s), "run", s.records, s.records * s.size,
            s.samples, goal, params={"kind": s.kind, "size": s.size, "system": s.system,
                                     "factor": s.factor, "acks": s.acks, "clients": s.clients,
                                     "leader_changes": s.leader_changes,
                                     "server_cpu_ns_per_record": _cpu_ns(s)}))
    add_ratios(results)
    if kills:
        results.append(Result(
            SUITE, "failover", f"SIGKILL of a leader -> next acks=all ack (lease "
            f"{LEASE_TTL_MS / 1000:g} s, median of {len(kills)})", "kill", 1, None,
            [k.acknowledged_s for k in kills], FAILOVER_GOAL,
            params={"kind": "failover", "lease_ttl_ms": LEASE_TTL_MS,
                    "elected_s_median": statistics.median(k.elected_s for k in kills),
                    "rejoined_s_median": statistics.median(k.rejoined_s for k in kills),
                    "kills": kills_json(kills)}))
    return results


def _cpu_ns(series: Series) -> float | None:
    """Median server CPU per record (ns) over the timed runs."""
    if not series.server_cpu_s or not series.records:
        return None
    return statistics.median(series.server_cpu_s) / series.records * 1e9


def _find(results: Sequence[Result], **match: Any) -> Result | None:
    for result in results:
        if all(result.params.get(k) == v for k, v in match.items()):
            return result
    return None


def add_ratios(results: Sequence[Result]) -> None:
    for result in results:
        p = result.params
        if p["system"] != "logstore" or p["factor"] != 3:
            continue
        ratios: dict[str, float] = {}
        base = _find(results, kind=p["kind"], size=p["size"], system="logstore", factor=1,
                     acks=p["acks"])
        if base is not None:
            ratios["factor1"] = result.records_per_second / base.records_per_second
        nats = _find(results, kind=p["kind"], size=p["size"], system="nats")
        if nats is not None:
            ratios["nats"] = result.records_per_second / nats.records_per_second
        p["ratios"] = ratios


@dataclass(frozen=True)
class RatioGoal:
    text: str
    against: str  # factor1 or nats
    target: float

    def value(self, results: Sequence[Result]) -> float | None:
        ours = _find(results, kind="produce", size=SMALL, system="logstore", factor=3, acks="all")
        return None if ours is None else ours.params.get("ratios", {}).get(self.against)

    def to_json(self, results: Sequence[Result]) -> dict[str, Any]:
        value = self.value(results)
        return {"goal": self.text, "value": value, "target": self.target,
                "met": None if value is None else value >= self.target}


RATIO_GOALS = (
    RatioGoal("100 B produce, factor 3 acks=all >= 40% of factor 1 acks=all", "factor1", 0.40),
    RatioGoal("100 B produce, factor 3 acks=all >= 50x JetStream R3", "nats", 50.0),
)


def _ratio_text(value: float, against: str) -> str:
    if against == "factor1":
        return f"{value:.0%}"
    return f"{value:.3g}x" if value < 100 else f"{value:.0f}x"


# -- the table -------------------------------------------------------------------------------------

COLUMNS = ("workload", "records/s", "MB/s", "median time", "server CPU/rec", "/factor 1",
           "/JetStream", "goal", "met?")
LEFT = {0, 7, 8}


def _row(result: Result) -> tuple[str, ...]:
    mb = result.mb_per_second
    ratios = result.params.get("ratios", {})
    met = result.met
    failover = result.params["kind"] == "failover"
    cpu = result.params.get("server_cpu_ns_per_record")
    return (
        f"{result.group}: {result.name}",
        "-" if failover else format_count(result.records_per_second),
        "-" if mb is None else f"{mb:,.0f}" if mb >= 10 else f"{mb:.2g}",
        f"{format_seconds(result.median)}/{result.op}",
        "" if cpu is None else format_seconds(cpu / 1e9),
        _ratio_text(ratios["factor1"], "factor1") if "factor1" in ratios else "",
        _ratio_text(ratios["nats"], "nats") if "nats" in ratios else "",
        "" if result.goal is None else result.goal.text,
        "" if met is None else "yes" if met else "NO",
    )


def print_table(results: Sequence[Result], context: dict[str, Any], file: Any = None) -> None:
    out = file or sys.stdout
    rows = [_row(r) for r in results]
    widths = [max([len(COLUMNS[i])] + [len(row[i]) for row in rows]) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in LEFT else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    print(line(COLUMNS), file=out)
    previous = None
    for result, row in zip(results, rows, strict=True):
        if result.group != previous:
            print(rule, file=out)
            previous = result.group
        print(line(row), file=out)
    print_goals(results, out)
    changes = sum(r.params.get("leader_changes", 0) for r in results)
    if changes:
        print(f"\nwarning: {changes} partition leader change(s) during timed throughput runs "
              f"(a broker missed its {LEASE_TTL_MS} ms lease: an overloaded box)", file=out)
    for text in context.get("notes", []):
        print(f"  {text}", file=out)


def goal_lines(results: Sequence[Result]) -> list[tuple[str, str, bool]]:
    """(goal, measured value, met) of every goal measured in this run."""
    lines: list[tuple[str, str, bool]] = []
    produce = _find(results, kind="produce", size=SMALL, system="logstore", factor=3, acks="all")
    if produce is not None:
        lines.append(("100 B produce, factor 3 acks=all >= 1.5 M records/s",
                      f"{format_count(produce.records_per_second)}/s", bool(produce.met)))
    for goal in RATIO_GOALS:
        value = goal.value(results)
        if value is not None:
            lines.append((goal.text, _ratio_text(value, goal.against), value >= goal.target))
    failover = _find(results, kind="failover")
    if failover is not None:
        lines.append((f"failover: leader SIGKILL -> next acks=all ack <= 5 s (median of "
                      f"{len(failover.samples)})", format_seconds(failover.median),
                      bool(failover.met)))
    return lines


def print_goals(results: Sequence[Result], out: Any) -> None:
    lines = goal_lines(results)
    met = sum(1 for _, _, ok in lines if ok)
    print(f"\nGoals (medians of one run, side by side): {met} of {len(lines)} goals met", file=out)
    width = max((len(text) for text, _, _ in lines), default=0)
    for text, value, ok in lines:
        print(f"  {text:<{width}}  {value:>8}  {'yes' if ok else 'NO'}", file=out)
    cost = replication_cpu_ns(results)
    if cost is not None:
        print(f"  (replication's CPU, the 3 brokers' CPU/record of 100 B factor 3 acks=all minus "
              f"factor 1's: {format_seconds(cost / 1e9)}; compare runs by this on a shared box)",
              file=out)


def replication_cpu_ns(results: Sequence[Result]) -> float | None:
    """Server CPU per record that two follower copies add (100 B, acks=all), or None."""
    three = _find(results, kind="produce", size=SMALL, system="logstore", factor=3, acks="all")
    one = _find(results, kind="produce", size=SMALL, system="logstore", factor=1, acks="all")
    if three is None or one is None:
        return None
    a, b = three.params.get("server_cpu_ns_per_record"), one.params.get("server_cpu_ns_per_record")
    return None if a is None or b is None else a - b
