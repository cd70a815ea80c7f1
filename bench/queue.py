"""Queue mode (``python -m bench queue``): tasks per second with per-task acknowledgement, in
logstore share groups, Redis Streams and NATS JetStream, the fetch round trip at a paced
10 k tasks/s, and the redelivery delay after a worker's SIGKILL.

- **tasks/s, W workers** (W = 1, 4, 16 processes): ``--tasks`` tasks of 100 B, preloaded (untimed)
  into 2 partitions (logstore: a topic of 2 partitions, batches of 50; Redis: streams NAME-0 and
  NAME-1 with one consumer group; JetStream: a work-queue stream with subjects NAME.0 and NAME.1
  and one durable pull consumer, explicit ack). Every system takes batches of the same size
  (``--batch``, default 1000: logstore ``max_records``, Redis ``XREADGROUP COUNT``, JetStream
  ``fetch(batch=)``); every worker reads each task's value and acknowledges each task on its own
  (logstore ``record.ack()``, the acks riding on the next poll, with ``--prefetch`` fetches in
  flight over its share stream — on the broker's stream port, or with ``--share-grpc`` a gRPC
  ``ShareStream`` call, the A/B rows; Redis one ``XACK`` per task in a pipeline; JetStream
  ``ack()`` per message). logstore's group allows ``workers x batch x (prefetch + 1)`` acquired
  records per partition (``max_acquired_records``; the default 2000 would keep most of 16
  workers waiting). Every worker is connected before the start; timed from the first fetch
  sent to the last acknowledgement answered (with prefetch, a poll's acknowledgements count as
  answered when that poll returns: the broker applies and writes them as it reads the fetch
  they ride on, right after answering the one the poll returns). CPU per task of the workers and of the server
  process is printed below the table, counted to the last acknowledgement answered (each
  worker's own; the server's sampled every 10 ms) and, in brackets, to the end of the run: the
  workers' idle tail (``--idle-s`` of empty long polls before they stop) costs the same for any
  number of tasks, ~12 ms of CPU per logstore worker per second, which at 16 workers and 100,000
  tasks was ~2 us per task of "worker CPU" that was no work. Durability as shipped: logstore writes its share-group
  state to ``__share_group_state`` (``flush=interval``: in the log before answering, fsynced each
  second; one append per event-loop tick for all members); Redis runs with ``appendfsync
  everysec``; JetStream as shipped.
- **fetch+ack round trip at 10 k tasks/s**: 4 logstore workers, each paced to 2,500 tasks/s over a
  backlog, batches of 100, no prefetch: p99 of the polls, each one round trip: the worker sends
  the acknowledgements of its last batch with the fetch of the next and waits for the answer
  (its acknowledgements and the new acquisition durable, the next batch's records in hand). Over
  a backlog no poll waits for records to be produced. The workers start at phases spread over a
  poll's period (worker i at i/4 of it: the broker sees a steady 100 polls/s, not four at once
  every 40 ms; ``--paced-phases aligned`` for bursts); each worker's first poll (which opens its
  share stream) is left out of the percentiles and printed on its own.
- **redelivery after SIGKILL**: a worker acquires a task with a 1 s lock and is SIGKILLed; a
  second member long-polls; measured from the acquisition to the redelivery, minus the lock.

Goals (from the issue): logstore >= 10x Redis and >= 50x JetStream in tasks/s at 16 workers;
redelivery <= lock + 200 ms; p99 fetch+ack round trip <= 5 ms at 10 k tasks/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import Goal, Progress, Result
from bench.peers.servers import Server, Servers, child_env, ensure_installed, process_cpu_seconds

VALUE_BYTES = 100
PARTITIONS = 2
WORKERS = (1, 4, 16)
BATCH = 1000
PREFETCH = 1
PRELOAD_BATCH = 50
LOCK_MS = 1000
SYSTEMS = ("redis", "nats", "logstore")
#: The latency run: workers, each paced to PACED_RATE / PACED_WORKERS tasks/s, batches of PACED_BATCH.
PACED_RATE = 10_000
PACED_WORKERS = 4
PACED_BATCH = 100


@dataclass(frozen=True)
class Plan:
    tasks: int
    paced_tasks: int


QUICK = Plan(tasks=20_000, paced_tasks=10_000)
#: 1,000,000 tasks: at 200,000 the 16 logstore workers had ~12 polls each and a timed window of
#: ~0.19 s, of which each worker's first poll (~7 ms of CPU: fresh heap, first code paths) made a
#: third of the CPU; a million makes it a run of ~0.6 s, the others' of 6-30 s.
FULL = Plan(tasks=1_000_000, paced_tasks=40_000)


@dataclass
class Run:
    """One timed run: seconds from the first fetch to the last ack, every poll's seconds, CPU."""

    seconds: float
    polls: list[float] = field(default_factory=list)
    #: Each worker's first poll (logstore: it opens the worker's ShareStream call), not in ``polls``.
    first_polls: list[float] = field(default_factory=list)
    #: CPU seconds from "go" to the last acknowledgement answered (workers: each its own last).
    worker_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    #: The same to the end of the run (with the workers' idle tail, ``--idle-s`` of empty polls).
    worker_cpu_total_s: float = 0.0
    server_cpu_total_s: float = 0.0
    #: Workers' CPU seconds from "go" to their first poll's answer (a fixed cost per worker).
    first_cpu_s: float = 0.0

    def poll_params(self, tasks: int) -> dict[str, float]:
        """Polls that returned tasks: how many per second (all workers) and tasks per poll."""
        polls = len(self.polls) + len(self.first_polls)
        return {"polls": polls, "polls_per_s": polls / self.seconds,
                "first_poll_s": statistics.median(self.first_polls) if self.first_polls else 0.0,
                "first_cpu_us_per_task": self.first_cpu_s / tasks * 1e6,
                "tasks_per_poll": tasks / max(1, polls)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("queue")
    group.add_argument("--tasks", type=int, help="tasks per run (default 1,000,000; --quick 20,000)")
    group.add_argument("--systems", default=",".join(SYSTEMS),
                       help=f"which systems, comma-separated (default {','.join(SYSTEMS)})")
    group.add_argument("--workers", default=",".join(map(str, WORKERS)),
                       help="worker process counts (default 1,4,16)")
    group.add_argument("--batch", type=int, default=BATCH,
                       help=f"tasks per fetch, the same for every system (default {BATCH})")
    group.add_argument("--prefetch", type=int, default=PREFETCH,
                       help=f"logstore: fetches in flight beyond the polled one (default {PREFETCH})")
    group.add_argument("--paced-tasks", type=int,
                       help="tasks of the paced round-trip run (default 40,000; --quick 10,000)")
    group.add_argument("--paced-phases", choices=("spread", "aligned"), default="spread",
                       help="paced run: workers start at phases spread over a poll's period (a steady "
                            "stream of polls, the default) or all at once (their polls in bursts)")
    group.add_argument("--share-grpc", action="store_true",
                       help="logstore workers poll over a gRPC ShareStream call, not the broker's stream port "
                            "(the A/B rows of the share channel)")
    group.add_argument("--paced-unary", action="store_true",
                       help="paced run: each poll a unary ShareFetch call (ShareConsumer(stream=False)), not a "
                            "ShareStream message")
    group.add_argument("--paced-spin-ms", type=float, default=0.0,
                       help="paced run: each worker busy-waits the last MS of its pause (default 0: sleeps)")


def run(options: argparse.Namespace, progress: Progress) -> list[Result]:
    plan = QUICK if options.quick else FULL
    tasks = options.tasks or plan.tasks
    systems = [s.strip() for s in options.systems.split(",") if s.strip()]
    counts = [int(w) for w in options.workers.split(",") if w.strip()]  # (empty: the latency runs only)
    ensure_installed([b for s, b in (("redis", "redis-server"), ("nats", "nats-server")) if s in systems])
    env = child_env()
    root = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    results: list[Result] = []
    rates: dict[tuple[str, int], float] = {}
    with Servers(root, env) as servers:
        started = {"logstore": servers.start_logstore} if "logstore" in systems else {}
        if "redis" in systems:
            started["redis"] = servers.start_redis
        if "nats" in systems:
            started["nats"] = servers.start_nats
        running = {name: start() for name, start in started.items()}
        progress.add(len(systems) * len(counts) + 2 * ("logstore" in systems))
        for system in [s for s in SYSTEMS if s in systems]:
            for workers in counts:
                progress.start(f"{system}, {workers} workers")
                prefetch = options.prefetch if system == "logstore" else 0
                one = _run_once(system, running[system], workers, tasks, env, options.batch, prefetch,
                                grpc_only=options.share_grpc)
                rates[(system, workers)] = tasks / one.seconds
                goal = None
                if system == "logstore" and workers == 16:
                    floors = [10 * rates[("redis", 16)]] if ("redis", 16) in rates else []
                    floors += [50 * rates[("nats", 16)]] if ("nats", 16) in rates else []
                    if floors:
                        goal = Goal(min_rate=max(floors), label=f">= {max(floors):,.0f}/s (10x Redis, 50x JetStream)")
                label = f"{system}: {workers} worker{'s' if workers > 1 else ''}, batch {options.batch}"
                if prefetch:
                    label += f", prefetch {prefetch}"
                if system == "logstore" and options.share_grpc:
                    label += ", over gRPC"
                results.append(Result("queue", system, label, "run", tasks, tasks * VALUE_BYTES, [one.seconds], goal,
                                      params={"workers": workers, "partitions": PARTITIONS, "batch": options.batch,
                                              "prefetch": prefetch,
                                              "worker_cpu_us_per_task": one.worker_cpu_s / tasks * 1e6,
                                              "server_cpu_us_per_task": one.server_cpu_s / tasks * 1e6,
                                              "worker_cpu_total_us_per_task": one.worker_cpu_total_s / tasks * 1e6,
                                              "server_cpu_total_us_per_task": one.server_cpu_total_s / tasks * 1e6,
                                              **one.poll_params(tasks)}))
                progress.done()
        if "logstore" in systems:
            progress.start(f"logstore: fetch round trip at {PACED_RATE:,} tasks/s")
            paced_tasks = options.paced_tasks or min(plan.paced_tasks, max(tasks, PACED_WORKERS * PACED_BATCH))
            paced = _run_once("logstore", running["logstore"], PACED_WORKERS, paced_tasks, env, PACED_BATCH, 0,
                              rate=PACED_RATE / PACED_WORKERS, spread=options.paced_phases == "spread",
                              spin_ms=options.paced_spin_ms, unary=options.paced_unary,
                              grpc_only=options.share_grpc)
            label = (f"logstore: fetch+ack round trip at {paced_tasks / paced.seconds / 1000:.1f} k tasks/s "
                     f"(paced {PACED_RATE // 1000} k; {PACED_WORKERS} workers, batch {PACED_BATCH}, "
                     f"{options.paced_phases} phases" + (", unary ShareFetch" if options.paced_unary else ""))
            label += f", spin {options.paced_spin_ms:g} ms)" if options.paced_spin_ms else ")"
            results.append(Result(
                "queue", "latency", label,
                "poll", 1, None, paced.polls, Goal(max_seconds=0.005, percentile=99, label="p99 <= 5 ms"),
                params={"rate": paced_tasks / paced.seconds, **paced.poll_params(paced_tasks)}))
            progress.done()
            progress.start("logstore: redelivery after SIGKILL")
            delays = [_redelivery(running["logstore"], env) for _ in range(3)]
            results.append(Result("queue", "latency", f"logstore: redelivery after SIGKILL, past the {LOCK_MS} ms lock",
                                  "task", 1, None, delays, Goal(max_seconds=0.2, label="<= 200 ms")))
            progress.done()
    return results


def print_results(results: list[Result]) -> None:
    from bench.common import print_table

    print_table(results)
    print("\nCPU per task (us; workers: all worker processes together; server: the server process;"
          " to the last acknowledgement, and in brackets to the end, with the workers' idle tail;"
          " polls that returned tasks):")
    for result in results:
        if "worker_cpu_us_per_task" in result.params:
            params = result.params
            print(f"  {result.name:<48} workers {params['worker_cpu_us_per_task']:6.1f}"
                  f" ({params.get('worker_cpu_total_us_per_task', 0.0):5.1f})"
                  f"   server {params['server_cpu_us_per_task']:6.1f}"
                  f" ({params.get('server_cpu_total_us_per_task', 0.0):5.1f})"
                  f"   {params.get('polls_per_s', 0.0):7,.0f} polls/s, {params.get('tasks_per_poll', 0.0):6.0f} tasks/poll"
                  + (f", of the workers' CPU {params['first_cpu_us_per_task']:.2f} to their first answers"
                     if params.get("first_cpu_us_per_task") else ""))
    for result in results:
        if result.group == "latency" and result.op == "poll":
            print(f"\nlogstore fetch+ack round trip (a poll sent with the last batch's acks until its answer:"
                  f" acks and acquisition durable): p50 {statistics.median(result.samples) * 1000:.2f} ms, "
                  f"p90 {result.percentile(90) * 1000:.2f} ms, p99 {result.percentile(99) * 1000:.2f} ms over "
                  f"{len(result.samples)} polls at {result.params['rate']:,.0f} tasks/s (each worker's first"
                  f" poll, which opens its stream, left out: median {result.params['first_poll_s'] * 1000:.1f} ms)")


# -- one run -----------------------------------------------------------------------------------


def _run_once(system: str, server: Server, workers: int, tasks: int, env: dict[str, str], batch: int,
              prefetch: int, rate: float = 0.0, spread: bool = True, spin_ms: float = 0.0,
              unary: bool = False, grpc_only: bool = False) -> Run:
    """``rate``: pace each worker to ``rate`` tasks/s, worker i starting i/workers of a poll's
    period late with ``spread`` (else all at once), busy-waiting the last ``spin_ms`` of each pause;
    ``unary``: logstore workers poll with ShareFetch calls; ``grpc_only``: over gRPC, not the
    stream port."""
    name = f"q{uuid.uuid4().hex[:8]}"
    {"logstore": _preload_logstore, "redis": _preload_redis, "nats": _preload_nats}[system](server, name, tasks)
    if system == "logstore":
        from logstore.client import Admin

        with Admin(server.address) as admin:
            admin.alter_share_group_config(name, {"max_acquired_records": min(
                1_000_000, max(2000, workers * batch * (prefetch + 1)))})
    processes = [
        subprocess.Popen([sys.executable, "-m", "bench.queue_worker", system, server.address, name,
                          "--batch", str(batch), "--prefetch", str(prefetch), "--rate", str(rate),
                          "--idle-s", "3" if system == "nats" else "1",
                          "--phase", str(i / workers if spread else 0.0), "--spin-ms", str(spin_ms),
                          *(["--unary"] if unary else []), *(["--grpc"] if grpc_only else [])],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        for i in range(workers)
    ]
    for process in processes:  # every worker imported and connected
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a {system} worker did not start")
    pid = server.process.pid if server.process is not None else None
    samples = _CpuSamples(pid)
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    reports = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=900)
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        samples.stop()
    acked = sum(r["acked"] for r in reports)
    if acked < tasks:
        raise RuntimeError(f"{system}: {acked} of {tasks} tasks acknowledged")
    if sum(r["bytes"] for r in reports) < tasks * VALUE_BYTES:
        raise RuntimeError(f"{system}: the workers read fewer task bytes than were sent")
    seconds = max(1e-6, max(r["last"] for r in reports) - min(r["first"] for r in reports))
    firsts = [s for r in reports for s in r.get("first_poll_s", [])]
    polls = [s for r in reports for s in r["poll_s"]]
    if not polls:  # (a tiny run: one poll per worker; then those are all there is)
        polls, firsts = firsts, []
    return Run(seconds, polls, firsts,
               sum(r["cpu_s"] for r in reports), samples.at(max(r["last"] for r in reports)),
               sum(r.get("cpu_total_s", r["cpu_s"]) for r in reports), samples.at(time.time()),
               sum(r.get("first_cpu_s", 0.0) for r in reports))


class _CpuSamples:
    """The server process's CPU seconds since "go", sampled every ``every_s`` by a thread, so
    that a run counts the server's CPU up to its last acknowledgement (not the workers' idle
    tail): ``at(wall_time)`` interpolates between the samples around it."""

    def __init__(self, pid: int | None, every_s: float = 0.01) -> None:
        self._pid = pid
        self._start = process_cpu_seconds(pid) if pid else 0.0
        self._times = [time.time()]
        self._cpu = [0.0]
        self._stopped = threading.Event()
        self._every_s = every_s
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if pid:
            self._thread.start()

    def _sample(self) -> None:
        while not self._stopped.wait(self._every_s):
            self._times.append(time.time())
            self._cpu.append(process_cpu_seconds(self._pid) - self._start if self._pid else 0.0)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self._times.append(time.time())
        self._cpu.append(process_cpu_seconds(self._pid) - self._start if self._pid else 0.0)

    def at(self, wall_time: float) -> float:
        return float(np.interp(wall_time, self._times, self._cpu))


def _rows(tasks: int) -> np.ndarray:
    rows = np.zeros((tasks, VALUE_BYTES), np.uint8)
    rows[:, :8] = np.arange(tasks, dtype=np.uint64).view(np.uint8).reshape(tasks, 8)
    return rows


def _preload_logstore(server: Server, name: str, tasks: int) -> None:
    from logstore.client import Admin, Producer

    with Admin(server.address) as admin:
        admin.create_topic(name, PARTITIONS)
    rows = _rows(tasks)
    with Producer(server.address) as producer:
        futures = [producer.send_batch(name, rows[i:i + PRELOAD_BATCH], partition=(i // PRELOAD_BATCH) % PARTITIONS)
                   for i in range(0, tasks, PRELOAD_BATCH)]
        for future in futures:
            future.result(60)


def _preload_redis(server: Server, name: str, tasks: int) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port)
    rows = _rows(tasks)
    for p in range(PARTITIONS):
        client.xgroup_create(f"{name}-{p}", "workers", id="0", mkstream=True)
    pipe = client.pipeline(transaction=False)
    for i in range(tasks):
        pipe.xadd(f"{name}-{i % PARTITIONS}", {"v": rows[i].tobytes()})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    client.close()


def _preload_nats(server: Server, name: str, tasks: int) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

    rows = _rows(tasks)

    async def body() -> None:
        connection = await nats.connect(f"nats://{server.address}")
        js = connection.jetstream()
        await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.*"], retention=RetentionPolicy.WORK_QUEUE))
        # a short ack_wait: messages a timed-out pull fetch left undelivered come back while the
        # workers still run (on a loaded box some fetches time out)
        await js.add_consumer(name, ConsumerConfig(durable_name="workers", ack_policy=AckPolicy.EXPLICIT,
                                                   max_ack_pending=100_000, ack_wait=2))
        for start in range(0, tasks, 500):
            await asyncio.gather(*(js.publish(f"{name}.{i % PARTITIONS}", rows[i].tobytes())
                                   for i in range(start, min(tasks, start + 500))))
        await connection.close()

    asyncio.run(body())


def _redelivery(server: Server, env: dict[str, str]) -> float:
    """Seconds from a killed worker's acquisition to the redelivery, minus the lock."""
    from logstore.client import Admin, Producer, ShareConsumer

    name = f"r{uuid.uuid4().hex[:8]}"
    with Admin(server.address) as admin:
        admin.create_topic(name, 1)
    with Producer(server.address) as producer:
        producer.send(name, b"task", partition=0).result(10)
    holder = subprocess.Popen([sys.executable, "-m", "bench.queue_worker", "hold", server.address, name,
                               "--lock-ms", str(LOCK_MS)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert holder.stdout is not None
        held = json.loads(holder.stdout.readline())["held"]
        holder.kill()
        holder.wait()
        with ShareConsumer(server.address, name, [name]) as other:
            while not other.poll(timeout=5.0):
                pass
            # (at least 1 us: the holder stamps "held" after its poll returned, so on a loaded box
            # the redelivery may come "before" its lock, by that stamp)
            return max(1e-6, time.time() - held - LOCK_MS / 1000)
    finally:
        holder.kill()
