"""The cluster benchmark: ``scripts/bench cluster [--quick] [--records N] [--kills N] ...``.

One command starts, each process in its own directory under a temporary root in ``bench/.data``
(``--work-dir``, ``$LOGSTORE_BENCH_DIR``): 3 etcd members and 3 ``logstore serve --cluster``
brokers on 127.0.0.11-13 (``servers``), and a 3-node NATS JetStream cluster (nats-server's own
clustering, routes on loopback); then measures, for 100 B and 1 KiB records:

- **produce** (``send_batch`` of a 2-D uint8 array, up to 5 requests in flight) to a
  3-partition topic with replication factor 1 and factor 3 (``min_insync_replicas=2``), each with
  ``acks=1`` and ``acks=all``; beside it JetStream publishing with acks (``publish_async``) to
  three R3 streams;
- **consume** (``poll_columns``) of the factor-1 and factor-3 topics, and a JetStream pull
  consumer reading the R3 streams. JetStream moves ``--nats-records`` (a tenth of logstore's by
  default: its rate, ~100x lower, is as steady over a 10 s run, and the full run stays ~10 min);
- **failover** (``failover``): from a partition leader's SIGKILL to the next acknowledged
  ``acks=all`` produce on that partition, median of ``--kills`` kills (default 10), the killed
  broker started again and back in the ISR before the next one. The brokers run with a
  test-speed membership lease (``lease_ttl_ms=2000`` in a TOML ``[cluster_settings]``); the table
  says so.

How the clients find the leaders. The routing client (one ``Producer`` that sends each
partition's batches to its leader) is not used here: the suite reads the partition leaders from
the ``Metadata`` RPC before each run and gives each leader its own client process with its own
``logstore.client.Producer(server=<that leader's address>)``, sending ``send_batch`` with an
explicit ``partition`` to the partitions it leads; consumers likewise, one
``Consumer(server=<leader>)`` per leader, ``assign``-ed its partitions. That is the same wire
traffic a routing client makes (each partition's requests go to its leader), in one process per
leader.

Goals on this 2-core box, ratios measured side by side in one run: factor 3 ``acks=all`` at
100 B >= 1.5 M records/s, >= 40 % of factor 1 (``acks=all``), >= 50x JetStream R3; failover
<= 5 s. The table prints goal and yes/NO per row and the count of goals met. Modules:
``servers`` (the processes), ``roles`` (the producer in a client process), ``throughput``
(rounds of produce and consume), ``failover``, ``report`` (results, ratios, goals, table).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Progress, Result
from bench.paths import folder

DEFAULT_WORK_DIR = REPO_ROOT / "bench" / ".data"
SIZES = (100, 1024)

#: What ``run`` leaves for ``print_results`` and ``describe``.
_context: dict[str, Any] = {}


@dataclass(frozen=True)
class Plan:
    records: int  # 100 B records per logstore measurement (1 KiB: the same bytes)
    nats_records: int  # 100 B records per JetStream measurement (1 KiB: the same bytes)
    repeats: int  # timed rounds
    warmup: bool  # one untimed round first
    kills: int  # failover samples
    timeout_s: float  # one measurement gives up after this long


QUICK = Plan(records=20_000, nats_records=3_000, repeats=1, warmup=False, kills=1, timeout_s=60)
FULL = Plan(records=1_500_000, nats_records=150_000, repeats=3, warmup=True, kills=10,
            timeout_s=300)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster (3 brokers on etcd vs a 3-node JetStream cluster)")
    group.add_argument("--records", type=int, metavar="N",
                       help=f"100 B records per measurement; 1 KiB runs move the same bytes "
                            f"(default {FULL.records:,}; --quick {QUICK.records:,})")
    group.add_argument("--nats-records", type=int, metavar="N",
                       help=f"100 B records per JetStream measurement, ~100x slower than "
                            f"logstore's, so fewer (default {FULL.nats_records:,}; --quick "
                            f"{QUICK.nats_records:,})")
    group.add_argument("--kills", type=int, metavar="N",
                       help=f"leader SIGKILLs of the failover measurement; 0 skips it (default "
                            f"{FULL.kills}; --quick {QUICK.kills})")
    group.add_argument("--work-dir", type=folder, metavar="DIR",
                       default=Path(os.environ.get("LOGSTORE_BENCH_DIR", DEFAULT_WORK_DIR)),
                       help="where the servers' directories go (default $LOGSTORE_BENCH_DIR or "
                            "bench/.data: a real disk, not tmpfs)")


def plan_of(options: argparse.Namespace) -> Plan:
    plan = QUICK if options.quick else FULL
    changes: dict[str, Any] = {}
    for name, minimum in (("records", 30), ("nats_records", 30), ("kills", 0)):
        value = getattr(options, name)
        if value is not None:
            if value < minimum:
                raise SystemExit(f"bench: --{name.replace('_', '-')} must be at least {minimum}")
            changes[name] = value
    if options.repeats is not None:
        changes["repeats"] = options.repeats
    return dataclasses.replace(plan, **changes)


def _selected(text: str, filters: list[str]) -> bool:
    return not filters or any(f.lower() in text.lower() for f in filters)


def run(options: argparse.Namespace, progress: Progress) -> list[Result]:
    from bench.cluster import failover, report
    from bench.cluster.servers import ClusterServers
    from bench.cluster.throughput import Throughput
    from bench.peers import _sigterm_as_interrupt
    from bench.peers.pool import Pool
    from bench.peers.servers import child_env, ensure_installed

    plan = plan_of(options)
    sizes = [s for s in SIZES if _selected(f"produce consume {s} B {s // 1024} KiB",
                                           options.filter)]
    kills = plan.kills if _selected("failover", options.filter) else 0
    if not sizes and not kills:
        raise SystemExit("bench: --filter matches no workload (produce, consume, 100 B, 1 KiB, "
                         "failover)")
    ensure_installed(["nats-server", "etcd"])
    options.work_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="cluster-", dir=options.work_dir))
    env = child_env()
    series = []
    kill_list = []
    try:
        with _sigterm_as_interrupt(), ClusterServers(root, env) as servers:
            cluster = servers.start_logstore()
            nats = servers.start_nats()
            pool = Pool(env, root, size=3)
            try:
                bench = Throughput(cluster, nats, pool, plan.timeout_s)
                progress.add(len(sizes) * (plan.repeats + plan.warmup) * bench.per_round + kills)
                for size in sizes:
                    series += bench.rounds(size, plan.records * SIZES[0] // size,
                                           plan.nats_records * SIZES[0] // size, plan.repeats,
                                           plan.warmup, progress)
            finally:
                pool.close()
            if kills:
                kill_list = failover.measure(cluster, kills, progress)
            info = {"brokers": [b.command for b in cluster.brokers],
                    "etcd": [m.command for m in cluster.etcd],
                    "nats": [s.info for s in nats.servers]}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = report.to_results(series, kill_list)
    _context.clear()
    _context.update(servers=info, plan=dataclasses.asdict(plan), sizes=sizes)
    return results


def print_results(results: list[Result]) -> None:
    from bench.cluster import report

    report.print_table(results, _context)


def describe(results: list[Result]) -> dict[str, Any]:
    from bench.cluster import report

    goals = [{"goal": text, "value": value, "met": ok}
             for text, value, ok in report.goal_lines(results)]
    return {"cluster": {**_context, "goals": goals,
                        "replication_cpu_ns_per_record": report.replication_cpu_ns(results)}}
