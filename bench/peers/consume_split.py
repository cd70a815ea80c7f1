"""Where the CPU of a read from the beginning goes, thread by thread, beside the gRPC ceilings.

    .venv/bin/python -m bench.peers.consume_split --size 1024 --records 300000 --rounds 6

Starts a broker and the raw gRPC server (as the peers benchmark does), fills one partition with
``--records`` records of ``--size`` bytes, then runs, in turn and ``--rounds`` times (after one
untimed round), each in a fresh client process: the download ceiling (1 MiB messages of one cached
buffer), the consumer-shaped ceiling (4 MiB messages read from the page cache), and the consumer
(``poll_columns()`` and ``poll()`` over ``Subscribe``) on the same bytes. For each it prints the
medians of MB/s and of CPU ms per MiB: the client process (all threads), split into its main
thread, the ``Subscribe`` stream's reader thread and gRPC's own threads, and the server process.
CPU comes from ``/proc`` (10 ms ticks: runs under ~0.3 s are coarse); rounds alternate, so the
ratios hold on a shared box even when the MB/s do not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.peers import DEFAULT_WORK_DIR, grpc_ceiling, logstore_runner
from bench.peers.servers import Servers, child_env, process_cpu_seconds

VARIANTS = ("download", "consume", "poll_columns", "poll")
#: Thread groups of a client process, in print order.
GROUPS = ("main", "reader", "grpc")


def thread_cpu_seconds() -> dict[str, float]:
    """utime + stime of every thread of this process, by native thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def group_of(native_id: str, python_names: dict[str, str]) -> str:
    """main (the calling thread), reader (a consumer's stream reader) or grpc (the rest: threads
    Python did not start, i.e. gRPC's)."""
    name = python_names.get(native_id)
    if name == "MainThread":
        return "main"
    if name is not None and name.startswith("logstore-subscribe"):
        return "reader"
    return "grpc"


def split(before: dict[str, float], after: dict[str, float], python_names: dict[str, str]
          ) -> dict[str, float]:
    """CPU seconds per thread group between two ``thread_cpu_seconds`` snapshots."""
    out = dict.fromkeys(GROUPS, 0.0)
    for tid, seconds in after.items():
        out[group_of(tid, python_names)] += seconds - before.get(tid, 0.0)
    return out


def _timed(role: Callable[..., dict[str, Any]], spec: dict[str, Any], module: Any) -> dict[str, Any]:
    """Run ``role`` with its module's Timer snapshotting every thread's CPU at start and stop."""
    snapshots: dict[str, Any] = {}
    base = module.Timer

    class Timer(base):  # type: ignore[misc, valid-type]
        def start(self) -> None:
            snapshots["before"] = thread_cpu_seconds()
            super().start()

        def stop(self) -> None:
            super().stop()
            snapshots["after"] = thread_cpu_seconds()
            snapshots["names"] = {str(t.native_id): t.name for t in threading.enumerate()}

    module.Timer = Timer
    try:
        result = role(spec, lambda: None)
    finally:
        module.Timer = base
    result["threads"] = split(snapshots["before"], snapshots["after"], snapshots["names"])
    return result


def client_main(spec: dict[str, Any]) -> dict[str, Any]:
    """One timed run in this (fresh) process."""
    if spec["variant"] in ("download", "consume"):
        return _timed(grpc_ceiling.ROLES[spec["variant"]], spec, grpc_ceiling)
    import logstore.client  # noqa: F401 - imported before the clock starts, as in an agent

    return _timed(logstore_runner.consume, spec, logstore_runner)


def spec_for(variant: str, addresses: dict[str, str], size: int, records: int) -> dict[str, Any]:
    if variant == "download":
        return {"variant": variant, "server": addresses["ceiling"], "timeout_s": 120,
                "messages": max(1, size * records // grpc_ceiling.MESSAGE_BYTES)}
    if variant == "consume":
        return {"variant": variant, "server": addresses["ceiling"], "timeout_s": 120,
                "messages": max(1, size * records // grpc_ceiling.CONSUME_MESSAGE_BYTES)}
    return {"variant": variant, "server": addresses["logstore"], "topic": "split",
            "partitions": [0], "records": records, "timeout_s": 120}


def run_client(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run([sys.executable, "-m", "bench.peers.consume_split", "--client",
                                json.dumps(spec)], env=env, stdout=subprocess.PIPE, check=True)
    result: dict[str, Any] = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    return result


def per_mib(result: dict[str, Any], server_s: float, size: int) -> dict[str, float]:
    nbytes = result.get("bytes") or result["records"] * size
    mib = nbytes / (1 << 20)
    row = {"MB/s": nbytes / result["elapsed_s"] / 1e6, "client": result["client_cpu_s"] * 1e3 / mib}
    row.update({group: seconds * 1e3 / mib for group, seconds in result["threads"].items()})
    row["server"] = server_s * 1e3 / mib
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(client_main(json.loads(args.client))))
        return 0
    env = child_env()
    rows: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    parent = Path(os.environ.get("LOGSTORE_BENCH_DIR", DEFAULT_WORK_DIR))  # a real disk
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="split-", dir=parent) as work, \
            Servers(Path(work), env) as servers:
        broker, ceiling = servers.start_logstore(), servers.start_ceiling()
        from logstore import Admin

        with Admin(broker.address) as admin:
            admin.create_topic("split", partitions=1, config={"flush": "never"})
        logstore_runner.fill({"server": broker.address, "topic": "split", "size": args.size,
                              "seed": 1, "parts": [[0, 0, args.records]]}, lambda: None)
        addresses = {"logstore": broker.address, "ceiling": ceiling.address}
        pids = {"logstore": broker.pid, "ceiling": ceiling.pid}
        for round_ in range(args.rounds + 1):
            for variant in VARIANTS:
                spec = spec_for(variant, addresses, args.size, args.records)
                pid = pids["logstore" if variant in ("poll_columns", "poll") else "ceiling"]
                before = process_cpu_seconds(pid)
                result = run_client(spec, env)
                if round_:  # round 0 warms the page cache, the mappings and the servers
                    rows[variant].append(per_mib(result, process_cpu_seconds(pid) - before, args.size))
    load = os.getloadavg()[0]
    print(f"{args.records:,} records of {args.size} B, medians of {args.rounds} alternating rounds, "
          f"load average {load:.1f}; CPU ms per MiB (client = all its threads)")
    columns = ("MB/s", "client", *GROUPS, "server")
    print(f"{'':14s}" + "".join(f"{c:>9s}" for c in columns))
    labels = {"download": "ceiling 1 MiB", "consume": "ceiling shaped"}
    for variant, samples in rows.items():
        cells = [statistics.median(s[c] for s in samples) for c in columns]
        print(f"{labels.get(variant, variant):14s}" + f"{cells[0]:9.0f}"
              + "".join(f"{cell:9.3f}" for cell in cells[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
