"""``python -m bench [SUITE] [options]``: run one benchmark suite, or the default ones.

To add a suite, write ``bench/NAME.py`` with ``add_arguments(parser)`` and
``run(options, progress) -> list[common.Result]``, and add one line to ``SUITES`` (and to
``DEFAULT_SUITES`` if a bare ``scripts/bench`` should run it). Suites are imported only when run,
so one suite's dependencies (grpc, a peer client) never slow down or break another. A suite may
also define ``print_results(results)`` (its own table instead of ``common.print_table``) and
``describe(results) -> dict`` (extra top-level keys for the JSON).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from bench.common import Progress, Result, print_table, tune_malloc, write_json
from bench.paths import output_file


@dataclass(frozen=True)
class Suite:
    module: str
    help: str


SUITES: dict[str, Suite] = {
    "storage": Suite("bench.storage", "in-process storage engine: encode, decode, append, read, "
                     "index lookups"),
    "client": Suite("bench.client", "the Python client end to end: produce (send_batch, send, "
                    "flush=always), consume (poll_columns, poll), 1 KiB, produce latency, against "
                    "a spawned broker"),
    "groups": Suite("bench.groups", "consumer groups (1/2/4 members), rebalance time, "
                    "transactional vs idempotent produce, against a spawned broker"),
    "peers": Suite("bench.peers", "logstore vs Redis Streams vs NATS JetStream on loopback, "
                   "with a raw gRPC ceiling (starts the servers itself)"),
    "recovery": Suite("bench.recovery", "restart time after a SIGKILL with ~1 GB unflushed "
                      "(flush=never), page cache warm and cold, against a spawned broker"),
    "queue": Suite("bench.queue", "queue mode: tasks/s with per-task acks, 1/4/16 worker processes, "
                   "logstore share groups vs Redis Streams vs JetStream; redelivery after SIGKILL"),
    "frames": Suite("bench.frames", "streams as tables: a range into Arrow, pandas, polars, "
                    "Parquet, beside poll_columns, poll() and Redis/JetStream into DataFrames"),
    "overload": Suite("bench.overload", "producers faster than the disk, 1,000+ idle connections "
                      "and slow consumers: backpressure, progress and the broker's peak RSS"),
    "cluster": Suite("bench.cluster", "3 brokers on etcd: produce/consume with replication factor "
                     "1 vs 3 and acks=1 vs all, beside a 3-node JetStream R3 cluster; leader "
                     "failover time after a SIGKILL (starts etcd, the brokers and nats itself)"),
}

#: What ``scripts/bench`` with no suite runs, in order.
DEFAULT_SUITES: tuple[str, ...] = ("peers",)


def _usage() -> str:
    lines = [
        "usage: bench [SUITE] [--quick] [--json FILE] [--repeats N] [--filter TEXT] ...",
        "",
        f"suites (default: {' '.join(DEFAULT_SUITES)}):",
    ]
    width = max(len(name) for name in SUITES)
    lines += [f"  {name.ljust(width)}  {suite.help}" for name, suite in SUITES.items()]
    lines += ["", "'bench SUITE --help' lists a suite's options."]
    return "\n".join(lines)


def _parser(names: Sequence[str], modules: Sequence[ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"bench {' '.join(names)}",
        description="; ".join(SUITES[name].help for name in names),
    )
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and one timed run per workload: a seconds-long smoke run")
    parser.add_argument("--json", metavar="FILE", type=output_file,
                        help="also write every result with machine info to FILE "
                             "(bench/results/ is git-ignored)")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="timed runs per workload after the warm-up (default 5, --quick 1); "
                             "the table shows their median")
    parser.add_argument("--filter", action="append", default=[], metavar="TEXT",
                        help="run only workloads whose group or name contains TEXT, any case "
                             "(repeatable), e.g. --filter append --filter index")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar, even on a terminal")
    for module in modules:
        module.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args and not args[0].startswith("-"):
        name = args.pop(0)
        if name not in SUITES:
            print(f"bench: unknown suite {name!r}\n\n{_usage()}", file=sys.stderr)
            return 2
        names: tuple[str, ...] = (name,)
    else:
        names = DEFAULT_SUITES
    modules = [importlib.import_module(SUITES[name].module) for name in names]
    options = _parser(names, modules).parse_args(args)
    if options.repeats is not None and options.repeats < 1:
        print("bench: --repeats must be at least 1", file=sys.stderr)
        return 2

    malloc_tuned = tune_malloc()
    load_at_start = os.getloadavg()
    if load_at_start[0] >= 0.5:
        print(f"bench: load average {load_at_start[0]:.2f} at start: other processes are using the "
              "CPU, so expect noisy numbers", file=sys.stderr)
    results: list[Result] = []
    per_module: list[tuple[ModuleType, list[Result]]] = []
    with Progress(enabled=False if options.no_progress else None) as progress:
        for module in modules:
            per_module.append((module, module.run(options, progress)))
            results += per_module[-1][1]
    extra: dict[str, object] = {}
    for module, module_results in per_module:
        getattr(module, "print_results", print_table)(module_results)
        if hasattr(module, "describe"):
            extra.update(module.describe(module_results))
    if options.json:
        write_json(options.json, results, suites=list(names), malloc_tuned=malloc_tuned,
                   load_average={"start": load_at_start, "end": os.getloadavg()},
                   options={key: value for key, value in vars(options).items() if key != "json"},
                   **extra)
        print(f"\nwrote {options.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the suites have stopped what they started
        print("\nbench: interrupted", file=sys.stderr)
        sys.exit(130)
