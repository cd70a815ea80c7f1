"""The side-by-side benchmark: ``scripts/bench [--quick] [--records N] [--size BYTES] ...``.

logstore (through its Python client) against Redis Streams (redis-py) and NATS JetStream
(nats-py) on loopback, with a raw gRPC bandwidth probe as the ceiling this machine allows. One
command starts a logstore broker, ``redis-server`` and ``nats-server -js`` (installing the Debian
packages when absent), runs every workload for 100 B and 1 KiB records, and stops every server
again, also on Ctrl-C. ``bench/README.md`` explains how to read the output.

Modules, in the order a run uses them:

- ``servers``: the server processes, their settings and the durability tiers;
- ``pool`` and ``agent``: the client processes (one per producer or consumer) and their barrier;
- ``logstore_runner``, ``redis_runner``, ``nats_runner``, ``grpc_ceiling``: per system, the
  client roles that run in the agents and the harness's admin side;
- ``plan``: workloads, sizes, run counts; ``harness``: the loops (alternating systems, warm-up,
  timed runs); ``report``: medians, ratios, goals, the table; ``charts``: the PNGs;
- ``records`` and ``clock``: the records every system writes, latency statistics, timers;
- ``profile``: ``python -m bench.peers.profile WORKLOAD VARIANT``, py-spy on the broker and the
  clients of one logstore measurement (where the time goes).

A complete run writes the JSON to ``bench/results/peers.json`` unless ``--json`` names another
file, and the charts to ``bench/results/`` unless ``--charts`` names another directory; a
``--quick`` or partial run (``--filter``, ``--only``, ``--size``, ``--tier``) writes neither unless
asked, so it never replaces the published charts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Progress, Result
from bench.paths import folder
from bench.peers.plan import FULL, QUICK, SYSTEMS, TIERS, Plan, System, workloads

SUITE = "peers"
DEFAULT_WORK_DIR = REPO_ROOT / "bench" / ".data"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_JSON = RESULTS_DIR / "peers.json"

#: What ``run`` leaves for ``print_results`` and ``describe``: servers, versions, charts.
_context: dict[str, Any] = {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("peers (logstore vs Redis Streams vs NATS JetStream)")
    group.add_argument("--records", type=int, metavar="N",
                       help=f"records per throughput measurement, the same for every system "
                            f"(default {FULL.records:,}; --quick {QUICK.records:,})")
    group.add_argument("--size", metavar="BYTES",
                       help="record sizes, comma-separated (default 100,1024)")
    group.add_argument("--only", metavar="SYSTEMS",
                       help="comma-separated subset of logstore,redis,nats (the gRPC ceiling "
                            "always runs)")
    group.add_argument("--tier", choices=TIERS,
                       help="durability tier: page (page cache) or fsync (default: both, the "
                            "fsync tier only for the workloads that write)")
    group.add_argument("--latency-rate", metavar="N[,N...]",
                       help="records/s of the latency workloads, comma-separated (default "
                            f"{','.join(map(str, FULL.latency_rates))}; --quick "
                            f"{','.join(map(str, QUICK.latency_rates))})")
    group.add_argument("--work-dir", type=folder, metavar="DIR",
                       default=Path(os.environ.get("LOGSTORE_BENCH_DIR", DEFAULT_WORK_DIR)),
                       help="where the servers' temporary directories go (default "
                            "$LOGSTORE_BENCH_DIR or bench/.data: a real disk, not tmpfs)")
    group.add_argument("--charts", type=folder, metavar="DIR",
                       help="write the PNG charts here (default bench/results/ on a complete run; "
                            "none with --quick, --filter, --only, --size or --tier)")


def plan_of(options: argparse.Namespace) -> Plan:
    plan = QUICK if options.quick else FULL
    changes: dict[str, Any] = {}
    if options.records is not None:
        if options.records < 8:
            raise SystemExit("bench: --records must be at least 8")
        changes["records"] = options.records
    if options.size:
        try:
            sizes = tuple(int(part) for part in options.size.split(","))
        except ValueError:
            raise SystemExit(f"bench: --size takes byte counts, not {options.size!r}") from None
        if any(size < 8 for size in sizes):
            raise SystemExit("bench: --size must be at least 8 bytes (the latency stamp)")
        changes["sizes"] = sizes
    if options.repeats is not None:
        changes["repeats"] = options.repeats
    if options.latency_rate is not None:
        try:
            rates = tuple(int(part) for part in options.latency_rate.split(","))
        except ValueError:
            raise SystemExit(f"bench: --latency-rate takes records/s, not "
                             f"{options.latency_rate!r}") from None
        if not rates or min(rates) <= 0:
            raise SystemExit("bench: --latency-rate must be positive")
        changes["latency_rates"] = rates
    return dataclasses.replace(plan, **changes)


def systems_of(options: argparse.Namespace) -> list[str]:
    if not options.only:
        return list(SYSTEMS)
    wanted = [part.strip() for part in options.only.split(",") if part.strip()]
    unknown = sorted(set(wanted) - set(SYSTEMS))
    if unknown or not wanted:
        raise SystemExit(f"bench: --only takes {','.join(SYSTEMS)}, not {options.only!r}")
    return [name for name in SYSTEMS if name in wanted]


def _selected(text: str, filters: Sequence[str]) -> bool:
    return not filters or any(f.lower() in text.lower() for f in filters)


def run(options: argparse.Namespace, progress: Progress) -> list[Result]:
    from bench.peers import charts, report
    from bench.peers.harness import Harness
    from bench.peers.pool import Pool
    from bench.peers.servers import Servers, child_env, ensure_installed

    plan = plan_of(options)
    names = systems_of(options)
    tiers = [options.tier] if options.tier else list(TIERS)
    chosen = [w for w in workloads(plan) if _selected(f"{w.key} {w.title}", options.filter)]
    if not chosen:
        raise SystemExit("bench: --filter matches no workload")
    ensure_installed([binary for name, binary in (("redis", "redis-server"),
                                                  ("nats", "nats-server")) if name in names])
    options.work_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="peers-", dir=options.work_dir))
    env = child_env()
    systems: list[System] = []
    try:
        with _sigterm_as_interrupt(), Servers(root, env) as servers:
            try:
                systems = _start(names, servers)
                ceiling = servers.start_ceiling()
                pool = Pool(env, root, size=max(plan.producers, *plan.group_members, 2))
                try:
                    harness = Harness(plan, systems, pool, progress, tiers, chosen, ceiling)
                    measurements, ceiling_measurements = harness.run()
                finally:
                    pool.close()
                info = {system.name: system.info() for system in systems}
            finally:
                for system in systems:
                    system.close()
    finally:
        _remove(root)  # errors carry the tails of the logs that were in it
    results = report.to_results(measurements, ceiling_measurements)
    _context.clear()
    _context.update(systems=info, versions=_versions(), plan=dataclasses.asdict(plan),
                    tiers=tiers, workloads=[w.key for w in chosen])
    # Only a complete run replaces the published results; a partial one writes where it is told.
    complete = not (options.quick or options.filter or options.only or options.size or options.tier)
    chart_dir = options.charts or (RESULTS_DIR if complete else None)
    if chart_dir is not None:
        _context["charts"] = [str(p) for p in charts.draw(results, chart_dir)]
    if options.json is None and complete:
        options.json = str(DEFAULT_JSON)  # read by bench.__main__ after run() returns
    return results


def _start(names: Sequence[str], servers: Any) -> list[System]:
    from bench.peers.logstore_runner import LogstoreSystem
    from bench.peers.nats_runner import NatsSystem
    from bench.peers.redis_runner import RedisSystem

    systems: list[System] = []
    if "logstore" in names:
        systems.append(LogstoreSystem(servers.start_logstore()))
    if "redis" in names:
        systems.append(RedisSystem(servers.start_redis()))
    if "nats" in names:
        systems.append(NatsSystem(servers.start_nats()))
    return systems


def print_results(results: Sequence[Result]) -> None:
    from bench.peers import report
    from bench.scorecard import print_scorecard

    report.print_table(results, _context)
    print_scorecard(results)


def describe(results: Sequence[Result]) -> dict[str, Any]:
    """Extra top-level JSON: servers, clients, versions, plan, goals, charts."""
    from bench.peers import report
    from bench.scorecard import evaluate

    return {SUITE: {**_context, "goals": [g.to_json(results) for g in report.GOALS],
                    "issue16": evaluate(results)}}


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C: every server and client is stopped on the way out."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove(root: Path) -> None:
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return done.stdout.strip() or "?"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import logstore

    found = {"logstore git": _git("describe", "--always", "--dirty", "--abbrev=12"),
             "logstore from": str(Path(logstore.__file__).parent),
             "python": platform.python_version()}
    for package in ("grpcio", "protobuf", "numpy", "redis", "hiredis", "nats-py", "uvloop"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
