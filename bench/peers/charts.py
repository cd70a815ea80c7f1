"""PNG charts of a run, drawn with matplotlib (Agg, no display needed).

- ``throughput.png``: page tier, one panel per throughput workload and record size, a bar per
  system and client API (records/s, log scale; the label on each bar is records/s), the gRPC
  ceiling as a dashed line (its MB/s in records of that size);
- ``throughput_fsync.png``: the same for the fsync tier's produce workloads, when it ran;
- ``latency_cdf.png``: the send-to-receive latency distribution of each fixed-rate workload
  (1 k, 10 k, 100 k records/s), one panel per rate and record size; the y axis is logit-scaled
  so that p99 and p99.9 get room;
- ``latency_histogram.png``: the same runs as histograms (share of records per log-spaced bin).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import Result, format_count
from bench.peers.harness import size_label
from bench.peers.report import ceiling_mb

COLORS = {"logstore": "#1f77b4", "redis": "#d62728", "nats": "#2ca02c"}
LINESTYLES = {"page": "-", "fsync": "--"}
DPI = 80


def draw(results: Sequence[Result], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for tier, name in (("page", "throughput.png"), ("fsync", "throughput_fsync.png")):
        path = directory / name
        if _throughput(results, tier, path):
            paths.append(path)
    path = directory / "latency_cdf.png"
    if _latency(results, path):
        paths.append(path)
    path = directory / "latency_histogram.png"
    if _histogram(results, path):
        paths.append(path)
    return paths


def _throughput(results: Sequence[Result], tier: str, path: Path) -> bool:
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.params["tier"] == tier
            and r.params["kind"] in ("produce", "consume", "group")]
    if not rows:
        return False
    sizes = sorted({r.params["size"] for r in rows})
    workloads: list[tuple[str, str]] = []
    for r in rows:
        if (r.params["workload"], r.params["workload_title"]) not in workloads:
            workloads.append((r.params["workload"], r.params["workload_title"]))
    figure, axes = plt.subplots(len(sizes), len(workloads), squeeze=False,
                                figsize=(2.6 * len(workloads) + 1, 4.2 * len(sizes)))
    for i, size in enumerate(sizes):
        for j, (workload, title) in enumerate(workloads):
            ax = axes[i][j]
            cells = [r for r in rows if r.params["size"] == size and r.params["workload"] == workload]
            labels = [f"{r.params['system']}\n{r.params['variant']}" for r in cells]
            values = [r.records_per_second for r in cells]
            bars = ax.bar(range(len(cells)), values,
                          color=[COLORS.get(r.params["system"], "grey") for r in cells])
            for bar, value in zip(bars, values, strict=True):
                ax.annotate(format_count(value), (bar.get_x() + bar.get_width() / 2, value),
                            ha="center", va="bottom", fontsize=7)
            ceiling = ceiling_mb(results, cells[0].params["direction"]) if cells else None
            if ceiling:
                ax.axhline(ceiling * 1e6 / size, color="black", linestyle="--", linewidth=0.8)
                ax.annotate("gRPC ceiling", (len(cells) - 0.5, ceiling * 1e6 / size),
                            ha="right", va="bottom", fontsize=7)
            ax.set_yscale("log")
            ax.set_xticks(range(len(cells)))
            ax.set_xticklabels(labels, fontsize=7, rotation=45, ha="right")
            ax.set_title(f"{title}\n{size_label(size)} records", fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
            if j == 0:
                ax.set_ylabel("records/s (log)", fontsize=8)
            ax.set_ylim(top=max(values + [ceiling * 1e6 / size if ceiling else 0]) * 4)
    figure.suptitle(f"Throughput, {tier} tier (median of the timed runs)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return True


def _latency_panels(results: Sequence[Result], key: str) -> list[tuple[int, list[Result]]]:
    """(size, rows) of every latency workload that recorded ``key``, by size then rate."""
    rows = [r for r in results if r.params["kind"] == "latency" and r.params.get(key)]
    panels = []
    for size in sorted({r.params["size"] for r in rows}):
        for rate in sorted({_rate(r) for r in rows if r.params["size"] == size}):
            cell = [r for r in rows if r.params["size"] == size and _rate(r) == rate]
            panels.append((size, cell))
    return panels


def _rate(result: Result) -> int:
    """The target rate of a latency row, from its workload key (``latency-10000``)."""
    return int(result.params["workload"].rsplit("-", 1)[-1])


def _label(r: Result) -> str:
    return (f"{r.params['system']} [{r.params['tier']}]: p50 {r.params['p50_ms']:.2g}, "
            f"p99 {r.params['p99_ms']:.2g}, p99.9 {r.params['p999_ms']:.2g} ms")


def _grid(count: int) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    columns = min(3, count)
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, squeeze=False, figsize=(6 * columns, 4.5 * rows))
    return figure, [ax for line in axes for ax in line]


def _latency_figure(results: Sequence[Result], path: Path, key: str, title: str,
                    draw_panel: Callable[[Any, list[Result]], None]) -> bool:
    """One panel per latency workload that recorded ``key``: ``draw_panel(ax, rows)`` plots
    its systems, then the panel gets its title, grid and legend."""
    import matplotlib.pyplot as plt

    panels = _latency_panels(results, key)
    if not panels:
        return False
    figure, axes = _grid(len(panels))
    for ax, (size, rows) in zip(axes, panels, strict=False):
        draw_panel(ax, rows)
        ax.set_xscale("log")
        ax.set_title(f"{rows[0].params['workload_title']}, {size_label(size)} records",
                     fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return True


def _style(r: Result) -> dict[str, Any]:
    return {"label": _label(r), "color": COLORS.get(r.params["system"], "grey"),
            "linestyle": LINESTYLES.get(r.params["tier"], "-")}


def _latency(results: Sequence[Result], path: Path) -> bool:
    from bench.peers.records import CDF_QUANTILES

    def draw_panel(ax: Any, rows: list[Result]) -> None:
        for r in rows:
            points = [(ms, q) for ms, q in zip(r.params["cdf_ms"], CDF_QUANTILES, strict=True)
                      if 0 < q < 1 and ms > 0]
            ax.plot([p[0] for p in points], [p[1] for p in points], **_style(r))
        ax.set_yscale("logit")
        ax.set_yticks([0.1, 0.5, 0.9, 0.99, 0.999])
        ax.set_yticklabels(["p10", "p50", "p90", "p99", "p99.9"])
        ax.set_xlabel("send -> receive latency, ms (log)")

    return _latency_figure(results, path, "cdf_ms",
                           "End-to-end latency CDF (the run with the median p99)", draw_panel)


def _histogram(results: Sequence[Result], path: Path) -> bool:
    """The share of records per log-spaced latency bin."""
    from bench.peers.records import HISTOGRAM_EDGES_MS

    def draw_panel(ax: Any, rows: list[Result]) -> None:
        for r in rows:
            counts = r.params["histogram"]
            total = sum(counts) or 1
            ax.stairs([c / total for c in counts], HISTOGRAM_EDGES_MS, linewidth=1.2,
                      **_style(r))
        ax.set_xlabel("send -> receive latency, ms (log bins)")
        ax.set_ylabel("share of records", fontsize=8)

    return _latency_figure(results, path, "histogram",
                           "End-to-end latency histogram (the run with the median p99)",
                           draw_panel)
