"""Where logstore's time goes in one workload: py-spy on the broker and on every client process.

    .venv/bin/python -m bench.peers.profile produce send_batch --size 100 --records 2000000
    .venv/bin/python -m bench.peers.profile consume poll_columns --size 1024 --native

Starts a broker (like the benchmark), runs the workload once untimed, then once more with
``py-spy record`` attached to the broker and to each client process, and prints the rate, the CPU
seconds per record of each process, and each process's top frames by own time (``self``) and by
time including callees (``incl``). ``--native`` adds C frames (grpc core, numpy, the kernel
boundary; py-spy then pauses each process per sample, so rates drop); ``--raw DIR`` keeps py-spy's collapsed stacks (``flamegraph.pl`` or speedscope read
them). py-spy needs ptrace rights: root, or ``kernel.yama.ptrace_scope=0``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT
from bench.paths import folder
from bench.peers.harness import summarize
from bench.peers.plan import FULL, Context, Variant, Workload, workloads
from bench.peers.pool import Pool
from bench.peers.servers import Servers, child_env, process_cpu_seconds


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return found


def top_frames(path: Path, limit: int) -> list[str]:
    if not path.exists():
        log = path.with_suffix(".log")
        reason = log.read_text(errors="replace").strip()[-500:] if log.exists() else ""
        return [f"  py-spy wrote no samples: {reason}"]
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return ["  (no samples)"]
    lines = [f"  {total} samples; self:"]
    lines += [f"    {100 * n / total:5.1f}%  {f[:140]}" for f, n in own.most_common(limit)]
    lines.append("  incl:")
    lines += [f"    {100 * n / total:5.1f}%  {f[:140]}"
              for f, n in inclusive.most_common(2 * limit)]
    return lines


def run_once(pool: Pool, system: Any, workload: Workload, variant: Variant, ctx: Context,
             args: argparse.Namespace, raw_dir: Path | None) -> tuple[list[dict[str, Any]],
                                                                    dict[str, float]]:
    """Run the job; with ``raw_dir``, under py-spy. Returns the results and CPU s per process."""
    job = system.job(workload, variant, ctx)
    for before in job.before:
        pool.run(before.specs, ctx.timeout_s)
    pids = {"broker": system.server.pid}
    pids.update({f"client{i}-{spec['role']}": agent.process.pid
                 for i, (agent, spec) in enumerate(zip(pool.agents, job.specs, strict=False))})
    spies: list[subprocess.Popen[bytes]] = []
    cpu: dict[str, float] = {}

    def attach() -> None:
        if raw_dir is not None:
            for name, pid in pids.items():
                command = [py_spy(), "record", "-p", str(pid), "-r", str(args.rate), "-f", "raw",
                           "-o", str(raw_dir / f"{name}.txt")]
                # --native pauses the process per sample; without it, py-spy need not
                command.append("--native" if args.native else "--nonblocking")
                with open(raw_dir / f"{name}.log", "wb") as log:
                    spies.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
            time.sleep(3.0 if args.native else 1.0)  # py-spy attaches (native: loads symbols)
        cpu.update({name: process_cpu_seconds(pid) for name, pid in pids.items()})

    try:
        results = pool.run(job.specs, ctx.timeout_s, before_go=attach)
        cpu = {name: process_cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(60)
        system.end_run(ctx)
    return results, cpu


def main() -> int:
    from bench.peers.logstore_runner import LogstoreSystem

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", help="produce, produce-4, consume, latency, group-2, ...")
    parser.add_argument("variant", help="send_batch, send, poll_columns, poll, send-poll")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--records", type=int, default=FULL.records)
    parser.add_argument("--tier", choices=("page", "fsync"), default="page")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames)")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--raw", type=folder, help="keep py-spy's collapsed stacks in this directory")
    args = parser.parse_args()

    plan = dataclasses.replace(FULL, records=args.records)
    workload = next((w for w in workloads(plan) if w.key == args.workload), None)
    if workload is None:
        raise SystemExit(f"unknown workload {args.workload!r}")
    parent = Path(os.environ.get("LOGSTORE_BENCH_DIR", REPO_ROOT / "bench" / ".data"))
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="profile-", dir=parent))
    raw_dir = args.raw or work / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    env = child_env()
    try:
        with Servers(work, env) as servers:
            system = LogstoreSystem(servers.start_logstore())
            system.set_tier(args.tier)
            pool = Pool(env, work, size=4)
            try:
                variant = next((v for v in system.variants(workload) if v.key == args.variant), None)
                if variant is None:
                    raise SystemExit(f"{args.workload} has the variants "
                                     f"{[v.key for v in system.variants(workload)]}")
                for run in (1, 2):  # run 1 warms up, run 2 is profiled
                    ctx = Context(args.tier, args.size, args.records, run, plan, timeout_s=600)
                    results, cpu = run_once(pool, system, workload, variant, ctx, args,
                                            raw_dir if run == 2 else None)
                sample = summarize(workload, results, cpu["broker"], args.records)
                print(f"{args.workload} {args.variant}, {args.size} B x {args.records:,} "
                      f"({args.tier} tier): {sample.records / sample.seconds:,.0f} records/s, "
                      f"{sample.records * args.size / sample.seconds / 1e6:,.0f} MB/s")
                for name in cpu:
                    print(f"{name}: {cpu[name] / sample.records * 1e9:,.0f} ns CPU per record")
                    print("\n".join(top_frames(raw_dir / f"{name}.txt", args.top)))
            finally:
                pool.close()
                system.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
