"""Where the cluster's CPU goes under acks=all produce: ``python -m bench.cluster.profile``.

    .venv/bin/python -m bench.cluster.profile --records 1000000 --repeats 3
    .venv/bin/python -m bench.cluster.profile --perf /tmp/brokers.data    # + perf of the brokers

Starts 3 etcd members and the 3 brokers of the suite (``servers``, here with /metrics), then
runs the suite's produce measurement (``throughput``: one client process per partition leader,
``send_batch``, acks=all, a fresh 3-partition topic each run) for replication factor 1 and
factor 3 in turn, ``--repeats`` times, side by side. Per run it prints records/s and CPU per
record: of the client processes, and of the brokers split by thread —

- ``main``: the event loop thread (request handlers, appends and their ``pwritev`` into the page
  cache, the follower's fetch loop, gRPC's Python side and its copies of each message);
- ``grpc``: gRPC core's own threads (``event_engine``: socket reads and writes, HTTP/2);
- ``other``: the storage threads (interval flush ``fsync``, checkpoints) and the rest;

and the ReplicaFetch calls the brokers answered, with the MiB they carried per call (what the
followers wrote, from ``/proc/<pid>/io``, over the calls). The summary gives the medians and the
replication's cost, factor 3 minus factor 1, per part. On a shared box compare CPU per record,
not records/s. ``--transports grpc,channel`` compares the followers' two fetch transports
(docs/cluster.md, "The replica data channel"): each repeat starts a fresh cluster per transport
in turn and the summary is given per transport. ``--perf FILE`` records the brokers with ``perf record -g`` during the last
factor-3 run and prints its top symbols (kernel page-cache copies, memmove, Python, gRPC).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.cluster.servers import ClusterServers, HostServer, LogstoreCluster, NatsCluster
from bench.cluster.throughput import Throughput
from bench.common import REPO_ROOT
from bench.peers.pool import Pool
from bench.peers.servers import child_env, process_cpu_seconds

PARTS = ("main", "grpc", "other")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_REQUESTS = re.compile(r'logstore_requests_total\{code="[A-Z_]+",method="ReplicaFetch(?:Channel)?"\} (\S+)')


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads by part (``PARTS``), from /proc/<pid>/task."""
    parts: dict[str, float] = defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        part = ("main" if task.name == str(pid)
                else "grpc" if name.startswith(("event_engine", "grpc")) else "other")
        parts[part] += (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    return parts


def written_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "wchar":
            return int(value)
    return 0


def replica_fetches(broker: HostServer) -> float:
    with urllib.request.urlopen(f"http://{broker.metrics_address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(m.group(1)) for m in _REQUESTS.finditer(text))


@dataclass
class Snapshot:
    parts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    clients_s: float = 0.0
    written: int = 0
    fetches: float = 0.0

    @classmethod
    def take(cls, cluster: LogstoreCluster, pool: Pool) -> Snapshot:
        snapshot = cls(clients_s=sum(process_cpu_seconds(a.process.pid) for a in pool.agents))
        for broker in cluster.brokers:
            for part, seconds in thread_cpu_s(broker.pid).items():
                snapshot.parts[part] += seconds
            snapshot.written += written_bytes(broker.pid)
            snapshot.fetches += replica_fetches(broker)
        return snapshot


@dataclass(frozen=True)
class Run:
    factor: int
    records_per_s: float
    ns_per_record: dict[str, float]  # clients, brokers, and each of PARTS
    fetches: int
    mib_per_fetch: float

    def line(self) -> str:
        ns = self.ns_per_record
        parts = ", ".join(f"{part} {ns[part]:.0f}" for part in PARTS)
        fetched = (f"; ReplicaFetch {self.fetches} calls, {self.mib_per_fetch:.2f} MiB/call"
                   if self.factor > 1 else "")
        return (f"factor {self.factor}: {self.records_per_s / 1e6:.2f} M rec/s; CPU ns/rec: "
                f"clients {ns['clients']:.0f}, brokers {ns['brokers']:.0f} ({parts}){fetched}")


def measure(bench: Throughput, factor: int, size: int, records: int, perf: Path | None) -> Run:
    topic = bench.topic(size, factor)
    specs = bench.produce_specs(topic, size, records, "all")
    before: list[Snapshot] = []
    recorder: list[subprocess.Popen[bytes]] = []

    def go() -> None:
        if perf is not None:
            pids = ",".join(str(b.pid) for b in bench.cluster.brokers)
            recorder.append(subprocess.Popen(
                ["perf", "record", "-g", "-F", "999", "-p", pids, "-o", str(perf)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.5)  # perf attaches
        before.append(Snapshot.take(bench.cluster, bench.pool))

    try:
        results = bench.pool.run(specs, bench.timeout_s, before_go=go)
        after = Snapshot.take(bench.cluster, bench.pool)
    finally:
        for process in recorder:
            process.send_signal(2)  # SIGINT: perf writes its file
            process.wait(60)
    bench.cluster.delete_topic(topic)
    seconds = (max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)) / 1e9
    start = before[0]
    ns = {part: (after.parts[part] - start.parts[part]) / records * 1e9 for part in PARTS}
    ns["brokers"] = sum(ns.values())
    ns["clients"] = (after.clients_s - start.clients_s) / records * 1e9
    fetches = int(after.fetches - start.fetches)
    replicated = (after.written - start.written) * (factor - 1) / factor
    return Run(factor, records / seconds, ns, fetches, replicated / max(fetches, 1) / (1 << 20))


def summary(runs: list[Run]) -> list[str]:
    keys = ("clients", "brokers", *PARTS)
    medians: dict[int, dict[str, float]] = {}
    lines = ["", "medians:"]
    for factor in sorted({r.factor for r in runs}):
        mine = [r for r in runs if r.factor == factor]
        medians[factor] = {k: statistics.median(r.ns_per_record[k] for r in mine) for k in keys}
        rate = statistics.median(r.records_per_s for r in mine)
        lines.append(f"  factor {factor}: {rate / 1e6:.2f} M rec/s; CPU ns/rec "
                     + ", ".join(f"{k} {medians[factor][k]:.0f}" for k in keys))
    if {1, 3} <= medians.keys():
        lines.append("  replication (factor 3 - factor 1): "
                     + ", ".join(f"{k} {medians[3][k] - medians[1][k]:+.0f}" for k in keys)
                     + " ns/rec")
    return lines


def perf_top(path: Path, limit: int) -> list[str]:
    answer = subprocess.run(
        ["perf", "report", "-i", str(path), "--stdio", "--no-children", "--sort", "dso,sym",
         "-g", "none", "--percent-limit", "0.5"],
        capture_output=True, text=True, check=False)
    rows = [line for line in answer.stdout.splitlines() if line.strip() and not line.startswith("#")]
    return [f"perf, the 3 brokers during the last factor-3 run ({path}):", *rows[:limit]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records per run")
    parser.add_argument("--size", type=int, default=100, help="record size in bytes")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each factor")
    parser.add_argument("--perf", type=Path, metavar="FILE",
                        help="perf record -g the brokers during the last factor-3 run")
    parser.add_argument("--top", type=int, default=25, help="perf symbols to print")
    parser.add_argument("--transports", default="default",
                        help="followers' fetch transports to compare, comma-separated: grpc, channel "
                        "(LOGSTORE_REPLICA_TRANSPORT); default: as the environment says")
    args = parser.parse_args()
    if args.perf is not None and shutil.which("perf") is None:
        raise SystemExit("perf is not installed (Debian: linux-perf)")
    parent = Path(os.environ.get("LOGSTORE_BENCH_DIR", REPO_ROOT / "bench" / ".data"))
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="cluster-profile-", dir=parent))
    env = child_env()
    transports = [t.strip() for t in args.transports.split(",") if t.strip()] or ["default"]
    runs: dict[str, list[Run]] = {t: [] for t in transports}
    try:
        # with several transports, each repeat starts a fresh cluster per transport in turn, so
        # that the load of a shared box weighs on them alike
        blocks = [(index, t) for index in range(args.repeats) for t in transports] if len(transports) > 1 \
            else [(None, transports[0])]
        for index, transport in blocks:
            block_env = env if transport == "default" else dict(env, LOGSTORE_REPLICA_TRANSPORT=transport)
            repeats = range(args.repeats) if index is None else [index]
            with ClusterServers(root / f"{transport}-{index}", block_env) as servers:
                cluster = servers.start_logstore(metrics=True)
                pool = Pool(block_env, root, size=3)
                try:
                    bench = Throughput(cluster, NatsCluster([]), pool, timeout_s=300)
                    measure(bench, 3, args.size, max(args.records // 10, 30), None)  # warm-up
                    for repeat in repeats:
                        for factor in (1, 3):
                            last = repeat == args.repeats - 1 and factor == 3 and transport == transports[-1]
                            runs[transport].append(measure(bench, factor, args.size, args.records,
                                                           args.perf if last else None))
                            label = "" if len(transports) == 1 else f"[{transport}] "
                            print(label + runs[transport][-1].line(), flush=True)
                finally:
                    pool.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for transport in transports:
        if len(transports) > 1:
            print(f"\ntransport {transport}:", end="")
        print("\n".join(summary(runs[transport])))
    if args.perf is not None:
        print("\n" + "\n".join(perf_top(args.perf, args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
