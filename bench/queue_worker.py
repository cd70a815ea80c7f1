"""One worker process of ``bench queue``: takes tasks from logstore, Redis Streams or JetStream,
reads each task's value and acknowledges each, from the harness's "go" (after this worker
printed "ready") until nothing came for ``--idle-s``; then prints one JSON line: {"acked": n,
"first": wall time the first fetch was sent, "last": wall time of the last acknowledgement
answered, "poll_s": [seconds of each fetch that returned tasks], "cpu_s": this process's CPU
seconds from "go" to the last acknowledgement answered, "cpu_total_s": the same to the end (with
the idle tail: ``--idle-s`` of empty polls)}. ``--rate R`` paces the worker to R tasks/s (the latency run).

    python -m bench.queue_worker logstore|redis|nats ADDRESS NAME [--batch N] [--prefetch N] [--rate R]
    python -m bench.queue_worker hold ADDRESS NAME      (acquire one task, say so, wait to be killed)

NAME is the share group (logstore), the stream-name prefix (Redis: NAME-0, NAME-1, group
"workers") or the stream (JetStream: durable pull consumer "workers").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from bench.common import freeze_startup_objects, tune_malloc

PARTITIONS = 2
#: This process's CPU seconds at "go" (the report's ``cpu_s`` counts from there).
CPU_AT_GO = 0.0
#: This process's CPU seconds at the last acknowledgement answered (``done()``).
CPU_AT_LAST = 0.0


def done() -> float:
    """The wall time now, noting the CPU seconds: the last acknowledgement was answered."""
    global CPU_AT_LAST
    CPU_AT_LAST = time.process_time()
    return time.time()


def wait_for() -> None:
    """Freeze the start-up objects (``freeze_startup_objects``), say "ready" (connected,
    imported), then wait for the harness's "go" line on stdin."""
    freeze_startup_objects()
    print("ready", flush=True)
    sys.stdin.readline()
    global CPU_AT_GO, CPU_AT_LAST
    CPU_AT_GO = CPU_AT_LAST = time.process_time()


class Pace:
    """Sleeps so that ``done`` tasks take at least ``done / rate`` seconds (no pacing at 0), the
    schedule shifted by ``phase_s`` (workers of one run start at spread phases, so that their
    polls come as a steady stream rather than all at once). With ``spin_s`` the last
    ``spin_s`` of each wait is a busy loop instead of a sleep (the process stays on its core,
    warm, as a worker busy with its tasks would be)."""

    def __init__(self, rate: float, phase_s: float = 0.0, spin_s: float = 0.0) -> None:
        self.rate = rate
        self.spin_s = spin_s
        self.start = time.perf_counter() + phase_s

    def after(self, done: int) -> None:
        if self.rate:
            until = self.start + done / self.rate
            ahead = until - time.perf_counter()
            if ahead > self.spin_s:
                time.sleep(ahead - self.spin_s)
            while self.spin_s and time.perf_counter() < until:
                pass


def start_pace(args: argparse.Namespace) -> Pace:
    """This worker's pace: ``--rate`` tasks/s, its first poll ``--phase`` of a poll's period late."""
    phase_s = args.phase * args.batch / args.rate if args.rate else 0.0
    paced = Pace(args.rate, phase_s, args.spin_ms / 1000)
    paced.after(0)
    return paced


def run_logstore(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from logstore.client import ShareConsumer

    options: dict[str, Any] = {"prefetch": args.prefetch} if args.prefetch else {}  # (older clients: no prefetch)
    if args.grpc:
        from logstore.client import share_channel

        share_channel.CHANNEL_SHARE = False
    if args.unary:
        options["stream"] = False
    consumer = ShareConsumer(args.address, args.name, [args.name], max_records=args.batch, **options)
    # connected before "go", as the others (and, where the client can, its stream opened: as a
    # JetStream worker's pull subscription is made before "go")
    if hasattr(consumer, "connect"):
        consumer.connect(30)
    else:  # (older clients)
        grpc.channel_ready_future(consumer._channel).result(timeout=30)
    wait_for()
    pace = start_pace(args)
    first = time.time()
    acked, last, idle_since, polls, got, size = 0, time.time(), time.monotonic(), [], args.batch, 0
    first_cpu_s = 0.0
    while True:
        carried = consumer.pending
        if carried and got < args.batch and not args.rate:  # draining: send the acks now, not after a long poll
            consumer.commit(raise_refused=False)
            acked += carried
            last = done()
            carried = 0
        started = time.perf_counter()
        records = consumer.poll(timeout=0.2)
        elapsed = time.perf_counter() - started
        if carried:
            acked += carried
            last = done()
        got = len(records)
        if records:
            if not polls:
                first_cpu_s = time.process_time() - CPU_AT_GO
            polls.append(elapsed)
            idle_since = time.monotonic()
            for record in records:
                size += len(record.value or b"")  # the task's payload, as a worker would read it
                record.ack()  # per record; sent with the next poll
            pace.after(acked + got)
        elif time.monotonic() - idle_since > args.idle_s:
            break
    consumer.close()
    return {"acked": acked, "first": first, "last": last, "poll_s": polls[1:], "first_poll_s": polls[:1],
            "first_cpu_s": first_cpu_s, "bytes": size}


def run_redis(args: argparse.Namespace) -> dict[str, Any]:
    import redis

    host, port = args.address.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    streams = {f"{args.name}-{p}": ">" for p in range(PARTITIONS)}
    consumer = f"c-{time.monotonic_ns()}"
    client.ping()  # connected before "go"
    wait_for()
    pace = start_pace(args)
    first = time.time()
    acked, last, idle_since, polls, size = 0, time.time(), time.monotonic(), [], 0
    while True:
        started = time.perf_counter()
        reply = client.xreadgroup("workers", consumer, streams, count=args.batch, block=200)
        if reply:
            polls.append(time.perf_counter() - started)
            idle_since = time.monotonic()
            pipe = client.pipeline(transaction=False)
            count = 0
            for stream, entries in reply:
                for entry_id, fields in entries:
                    size += len(fields[b"v"])
                    pipe.xack(stream, "workers", entry_id)  # one XACK per task, pipelined
                    count += 1
            pipe.execute()
            acked += count
            last = done()
            pace.after(acked)
        elif time.monotonic() - idle_since > args.idle_s:
            break
    client.close()
    return {"acked": acked, "first": first, "last": last, "poll_s": polls, "bytes": size}


def run_nats(args: argparse.Namespace) -> dict[str, Any]:
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    async def body() -> dict[str, Any]:
        connection = await nats.connect(f"nats://{args.address}")
        js = connection.jetstream()
        subscription = await js.pull_subscribe(f"{args.name}.*", durable="workers", stream=args.name)
        wait_for()
        pace = start_pace(args)
        first = time.time()
        acked, last, idle_since, polls, size = 0, time.time(), time.monotonic(), [], 0
        while True:
            started = time.perf_counter()
            try:
                messages = await subscription.fetch(batch=args.batch, timeout=0.2)
            except (TimeoutError, NatsTimeout):
                messages = []
            if messages:
                polls.append(time.perf_counter() - started)
                idle_since = time.monotonic()
                for message in messages:
                    size += len(message.data)
                    await message.ack()  # explicit ack, one per task
                await connection.flush()
                acked += len(messages)
                last = done()
                pace.after(acked)
            elif time.monotonic() - idle_since > args.idle_s:
                break
        await connection.close()
        return {"acked": acked, "first": first, "last": last, "poll_s": polls, "bytes": size}

    return asyncio.run(body())


def hold(args: argparse.Namespace) -> None:
    from logstore.client import ShareConsumer

    consumer = ShareConsumer(args.address, args.name, [args.name], max_records=1, lock_ms=args.lock_ms)
    while not consumer.poll(timeout=1.0):
        pass
    print(json.dumps({"held": time.time()}), flush=True)
    time.sleep(3600)  # until SIGKILLed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=["logstore", "redis", "nats", "hold"])
    parser.add_argument("address")
    parser.add_argument("name")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--prefetch", type=int, default=1, help="logstore: fetches in flight beyond the polled one")
    parser.add_argument("--rate", type=float, default=0.0, help="pace to this many tasks/s (0: as fast as it goes)")
    parser.add_argument("--phase", type=float, default=0.0,
                        help="with --rate: start this fraction (0..1) of a poll's period late")
    parser.add_argument("--spin-ms", type=float, default=0.0,
                        help="with --rate: busy-wait the last MS of each pause instead of sleeping")
    parser.add_argument("--unary", action="store_true", help="logstore: a ShareFetch call per poll, not ShareStream")
    parser.add_argument("--grpc", action="store_true", help="logstore: the ShareStream over gRPC, not the stream port")
    parser.add_argument("--idle-s", type=float, default=1.0)
    parser.add_argument("--lock-ms", type=int, default=1000)
    args = parser.parse_args()
    tune_malloc()
    if args.system == "hold":
        hold(args)
        return 0
    runner = {"logstore": run_logstore, "redis": run_redis, "nats": run_nats}[args.system]
    report = runner(args)
    report["cpu_s"] = CPU_AT_LAST - CPU_AT_GO
    report["cpu_total_s"] = time.process_time() - CPU_AT_GO
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
