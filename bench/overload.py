"""Overload against a real broker (``python -m bench overload``), measuring its memory.

Starts a broker (``logstore serve``) with backpressure budgets, then:

- **flood**: producers faster than the disk — each on its own connection, keeping several
  ``acks=all`` Produce calls of large batches in flight against a ``flush=always`` topic. They meet
  backpressure: acks slow down (``logstore_backpressure_waits_total``) or calls are refused with
  RESOURCE_EXHAUSTED / LIMIT_EXCEEDED, and nothing refused is appended.
- **crowd**: 1,000 idle gRPC connections (each its own TCP connection, kept open) plus slow
  consumers (Subscribe streams that stop reading after one message), while a normal producer /
  consumer pair must keep making progress.

The broker's memory is sampled from ``/proc/PID/status`` every 20 ms: ``VmRSS`` (everything
resident, including mapped segment pages, which are page cache) and ``RssAnon`` (heap: what the
broker itself holds). The test suite runs the same workloads, smaller (``tests/overload/``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Progress, Result

MIB = 1 << 20
START_TIMEOUT_S = 30.0


# -- the broker and its memory ----------------------------------------------------------------------


def memory(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of a process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class MemorySampler:
    """Samples a process's memory on a thread; ``peak`` holds the largest value of each key."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = memory(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.samples += 1
            for key, value in now.items():
                self.peak[key] = max(self.peak.get(key, 0), value)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """``logstore serve`` in a temporary directory with a config file's ``[limits]``."""

    def __init__(self, limits: dict[str, int], directory: Path | None = None) -> None:
        self.directory = Path(directory or tempfile.mkdtemp(prefix="logstore-bench-overload-"))
        self.owns_directory = directory is None
        config = self.directory / "logstore.toml"
        config.write_text("[limits]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items()))
        self.address = f"127.0.0.1:{free_port()}"
        self.metrics_address = f"127.0.0.1:{free_port()}"
        self.log_path = self.directory / "broker.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "logstore", "serve", "--data-dir", str(self.directory / "data"),
                 "--listen", self.address, "--metrics-listen", self.metrics_address,
                 "--config", str(config), "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_ready(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + START_TIMEOUT_S
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the broker exited with {self.process.returncode}: {self.log()}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        return
                except grpc.RpcError:
                    time.sleep(0.05)
        raise RuntimeError(f"the broker did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def metric(self, name: str) -> dict[str, float]:
        """The samples of a Prometheus metric, by their label text."""
        url = f"http://{self.metrics_address}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        found = {}
        for line in text.splitlines():
            if line.startswith(name):
                key, _, value = line.rpartition(" ")
                found[key[len(name):]] = float(value)
        return found

    def sockets(self) -> int:
        """Open sockets of the broker process."""
        count = 0
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                count += os.readlink(f"/proc/{self.pid}/fd/{fd}").startswith("socket:")
            except OSError:
                pass
        return count

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def create_topic(address: str, name: str, partitions: int, **config: str) -> None:
    import grpc

    from logstore.api.v1 import admin_pb2, logstore_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        logstore_pb2_grpc.LogStoreStub(channel).CreateTopic(
            admin_pb2.CreateTopicRequest(name=name, partitions=partitions, config=config), timeout=10
        )


def _stub(address: str) -> tuple[Any, Any]:
    """A channel with its own TCP connection, and a stub on it."""
    import grpc

    from logstore.api.v1 import logstore_pb2_grpc

    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    return channel, logstore_pb2_grpc.LogStoreStub(channel)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- flood: producers faster than the disk ------------------------------------------------------------


@dataclass
class Flood:
    seconds: float = 0.0
    acked_batches: int = 0
    acked_bytes: int = 0
    latencies: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # "CODE/REASON/limit_name" -> count
    acked_offsets: dict[int, list[int]] = field(default_factory=dict)  # partition -> base offsets


def flood(address: str, topic: str, *, partitions: int, producers: int, in_flight: int,
          batch_bytes: int, seconds: float) -> Flood:
    """``producers`` threads, each on its own connection, each keeping ``in_flight`` Produce
    calls of one ``batch_bytes`` batch outstanding (acks=all) for ``seconds``."""
    import grpc

    from logstore.api.v1 import records_pb2
    from logstore.records import encode_batch

    result = Flood()
    lock = threading.Lock()
    records = 16
    payload = encode_batch([b"o" * (batch_bytes // records)] * records)
    deadline = time.monotonic() + seconds

    def request(partition: int) -> records_pb2.ProduceRequest:
        return records_pb2.ProduceRequest(
            acks=records_pb2.ACKS_ALL,
            partitions=[records_pb2.PartitionRecords(topic=topic, partition=partition, records=payload)],
        )

    def settle(future: Any, started: float, partition: int) -> None:
        try:
            response = future.result()
        except grpc.RpcError as err:
            with lock:
                result.refused[_refusal(err)] += 1
            return
        (outcome,) = response.results
        with lock:
            if outcome.HasField("error"):
                result.refused[f"partition/{outcome.error.reason}"] += 1
                return
            result.latencies.append(time.monotonic() - started)
            result.acked_batches += 1
            result.acked_bytes += len(payload)
            result.acked_offsets.setdefault(partition, []).append(outcome.base_offset)

    def produce(n: int) -> None:
        channel, stub = _stub(address)
        # connected first, so the broker's stream limit is known before calls pile up
        grpc.channel_ready_future(channel).result(timeout=30)
        pending: list[tuple[Any, float, int]] = []
        sent = 0
        try:
            while time.monotonic() < deadline or pending:
                while time.monotonic() < deadline and len(pending) < in_flight:
                    partition = (n + sent) % partitions
                    pending.append((stub.Produce.future(request(partition), timeout=60), time.monotonic(), partition))
                    sent += 1
                future, started, partition = pending.pop(0)
                settle(future, started, partition)
        finally:
            channel.close()

    started = time.monotonic()
    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    result.seconds = time.monotonic() - started
    return result


def _refusal(err: Any) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(err)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return f"{err.code().name}/{info.reason}/{info.metadata.get('limit_name', '')}"
    return f"{err.code().name}//{err.details()}"


# -- crowd: idle connections, slow consumers, and a pair that must make progress ---------------------------

_IDLE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import grpc

    async def main(address, count):
        options = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel
        channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(count)]
        for start in range(0, count, 100):
            await asyncio.wait_for(
                asyncio.gather(*(c.channel_ready() for c in channels[start:start + 100])), 60)
        print("ready", len(channels), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
        await asyncio.gather(*(c.close() for c in channels))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


@contextmanager
def idle_connections(address: str, count: int) -> Iterator[subprocess.Popen[str]]:
    """``count`` connected, idle gRPC channels held by a child process until the block ends."""
    child = subprocess.Popen(
        [sys.executable, "-c", _IDLE_SCRIPT, address, str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"idle connections not ready: {line!r} {child.stderr.read() if child.stderr else ''}")
        yield child
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextmanager
def slow_consumers(address: str, topic: str, count: int) -> Iterator[int]:
    """``count`` Subscribe streams, each on its own connection, that read one message and then
    stop reading (the broker's sends block on flow control). Yields how many got a message."""
    from logstore.api.v1 import records_pb2

    opened = []
    got = 0
    try:
        for _ in range(count):
            channel, stub = _stub(address)
            call = stub.Subscribe(records_pb2.SubscribeRequest(topic=topic, max_bytes=1 << 20), timeout=600)
            opened.append((channel, call))
            next(call)
            got += 1
        yield got
    finally:
        for channel, call in opened:
            call.cancel()
            channel.close()


@dataclass
class Pair:
    seconds: float
    records: int
    consumed: int
    produce_latencies: list[float]


def pair(address: str, topic: str, *, batches: int, records_per_batch: int, timeout: float) -> Pair:
    """A producer (acks=all, one batch at a time) and a consumer (Fetch long polls) on their own
    connections; returns once the consumer has every record, or at ``timeout``."""
    from logstore.api.v1 import records_pb2
    from logstore.records import decode_records, encode_batch

    total = batches * records_per_batch
    latencies: list[float] = []
    consumed = 0
    deadline = time.monotonic() + timeout
    started = time.monotonic()

    def produce() -> None:
        channel, stub = _stub(address)
        try:
            for b in range(batches):
                if time.monotonic() > deadline:
                    return
                payload = encode_batch([b"pair-%d-%d" % (b, r) for r in range(records_per_batch)])
                t = time.monotonic()
                stub.Produce(records_pb2.ProduceRequest(
                    partitions=[records_pb2.PartitionRecords(topic=topic, records=payload)]), timeout=30)
                latencies.append(time.monotonic() - t)
        finally:
            channel.close()

    producer = threading.Thread(target=produce)
    producer.start()
    channel, stub = _stub(address)
    offset = 0
    try:
        while consumed < total and time.monotonic() < deadline:
            response = stub.Fetch(records_pb2.FetchRequest(
                partitions=[records_pb2.FetchPartition(topic=topic, offset=offset)], max_wait_ms=200), timeout=30)
            (fetched,) = response.partitions
            consumed += sum(1 for r in decode_records(fetched.records) if r.offset >= offset)
            offset = max(offset, fetched.next_offset)
    finally:
        channel.close()
        producer.join(timeout + 30)
    return Pair(time.monotonic() - started, total, consumed, latencies)


# -- the suite ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    producers: int
    in_flight: int
    batch_bytes: int
    flood_seconds: float
    idle: int
    slow: int
    pair_batches: int


QUICK = Plan(producers=4, in_flight=4, batch_bytes=1 * MIB, flood_seconds=3, idle=1000, slow=8, pair_batches=100)
FULL = Plan(producers=16, in_flight=8, batch_bytes=4 * MIB, flood_seconds=20, idle=2000, slow=32, pair_batches=1000)


#: The broker's memory while flooded may pass its idle size by at most the queued request cap
#: plus this (gRPC's buffers per connection that sends, the copy of each request being read,
#: heap not yet reused); README "Memory under overload" states it.
FLOOD_OVERHEAD_BYTES = 128 * MIB


def flood_limits(batch_bytes: int) -> dict[str, int]:
    """Budgets small next to what the producers offer (several batches per connection), so that
    they wait; ``max_queued_request_bytes`` keeps the rest of their requests unread."""
    return {
        "max_queued_request_bytes": 8 * batch_bytes,
        "max_request_bytes": 2 * batch_bytes,
        "max_inflight_bytes_per_connection": 2 * batch_bytes,
        "max_unflushed_bytes_per_partition": 4 * batch_bytes,
        "max_unflushed_bytes": 8 * batch_bytes,
        "backpressure_timeout_ms": 5000,
    }

#: Enough calls for the crowd: the idle connections make none, the slow consumers one each.
CROWD_LIMITS = {"max_subscriptions_per_connection": 4}

_REPORT: dict[str, Any] = {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("overload")
    group.add_argument("--idle", type=int, metavar="N", help="idle connections (default 1000, full 2000)")
    group.add_argument("--producers", type=int, metavar="N", help="flooding producers")


def run(options: argparse.Namespace, progress: Progress) -> list[Result]:
    plan = QUICK if options.quick else FULL
    if options.idle:
        plan = Plan(**{**plan.__dict__, "idle": options.idle})
    if options.producers:
        plan = Plan(**{**plan.__dict__, "producers": options.producers})
    results = []
    progress.add(2)
    progress.start("flood: producers faster than the disk")
    results.append(run_flood(plan))
    progress.done()
    progress.start(f"crowd: {plan.idle} idle connections, {plan.slow} slow consumers")
    results.append(run_crowd(plan))
    progress.done()
    return results


def run_flood(plan: Plan) -> Result:
    limits = flood_limits(plan.batch_bytes)
    broker = Broker(limits)
    try:
        create_topic(broker.address, "flood", 4, flush="always")
        baseline = memory(broker.pid)
        with MemorySampler(broker.pid) as sampler:
            outcome = flood(broker.address, "flood", partitions=4, producers=plan.producers,
                            in_flight=plan.in_flight, batch_bytes=plan.batch_bytes, seconds=plan.flood_seconds)
        waits = broker.metric("logstore_backpressure_waits_total")
        _REPORT["flood"] = {
            "offered_in_flight_bytes": plan.producers * plan.in_flight * plan.batch_bytes,
            "acked_batches": outcome.acked_batches,
            "refused": dict(outcome.refused),
            "backpressure_waits": waits,
            "ack_p50_s": percentile(outcome.latencies, 0.5),
            "ack_p99_s": percentile(outcome.latencies, 0.99),
            "baseline": baseline,
            "peak": sampler.peak,
            "limits": limits,
        }
        return Result(
            "overload", "flood",
            f"flood: {plan.producers} producers x {plan.in_flight} in flight x {plan.batch_bytes // MIB} MiB, flush=always",
            "batch", 16, plan.batch_bytes, [outcome.seconds / max(outcome.acked_batches, 1)],
            params=_REPORT["flood"],
        )
    finally:
        broker.stop()


def run_crowd(plan: Plan) -> Result:
    broker = Broker(CROWD_LIMITS)
    try:
        create_topic(broker.address, "backlog", 1)
        create_topic(broker.address, "pair", 1)
        payload_topic_fill(broker.address, "backlog", 32 * MIB)
        baseline = memory(broker.pid)
        with MemorySampler(broker.pid) as sampler:
            with idle_connections(broker.address, plan.idle), slow_consumers(broker.address, "backlog", plan.slow):
                sockets = broker.sockets()
                with_idle = memory(broker.pid)
                outcome = pair(broker.address, "pair", batches=plan.pair_batches, records_per_batch=20, timeout=120)
        _REPORT["crowd"] = {
            "idle_connections": plan.idle,
            "broker_sockets": sockets,
            "slow_consumers": plan.slow,
            "pair_seconds": outcome.seconds,
            "pair_consumed": outcome.consumed,
            "pair_records": outcome.records,
            "produce_p50_s": percentile(outcome.produce_latencies, 0.5),
            "produce_p99_s": percentile(outcome.produce_latencies, 0.99),
            "baseline": baseline,
            "with_idle_connections": with_idle,
            "peak": sampler.peak,
        }
        return Result(
            "overload", "crowd",
            f"pair beside {plan.idle} idle connections and {plan.slow} slow consumers",
            "batch", 20, None, [outcome.seconds / max(plan.pair_batches, 1)], params=_REPORT["crowd"],
        )
    finally:
        broker.stop()


def payload_topic_fill(address: str, topic: str, nbytes: int) -> None:
    from logstore.api.v1 import records_pb2
    from logstore.records import encode_batch

    channel, stub = _stub(address)
    try:
        payload = encode_batch([b"b" * (64 << 10)] * 16)
        for _ in range(max(1, nbytes // len(payload))):
            stub.Produce(records_pb2.ProduceRequest(
                partitions=[records_pb2.PartitionRecords(topic=topic, records=payload)]), timeout=30)
    finally:
        channel.close()


def _mib(value: float) -> str:
    return f"{value / MIB:,.0f} MiB"


def print_results(results: list[Result]) -> None:
    flood_report, crowd = _REPORT.get("flood"), _REPORT.get("crowd")
    if flood_report:
        print("flood (producers faster than the disk, flush=always, acks=all)")
        print(f"  offered in flight      {_mib(flood_report['offered_in_flight_bytes'])}")
        print(f"  acked batches          {flood_report['acked_batches']:,}   ack p50 "
              f"{flood_report['ack_p50_s'] * 1000:.0f} ms, p99 {flood_report['ack_p99_s'] * 1000:.0f} ms")
        print(f"  backpressure waits     {json.dumps(flood_report['backpressure_waits'])}")
        print(f"  refused                {json.dumps(flood_report['refused'])}")
        print(f"  broker RSS             baseline {_mib(flood_report['baseline']['VmRSS'])}, peak "
              f"{_mib(flood_report['peak'].get('VmRSS', 0))} (heap peak {_mib(flood_report['peak'].get('RssAnon', 0))})")
        cap = flood_report["limits"]["max_queued_request_bytes"]
        grown = flood_report["peak"].get("VmRSS", 0) - flood_report["baseline"]["VmRSS"]
        print(f"  queued request cap     {_mib(cap)}: peak - baseline {_mib(grown)} = cap + "
              f"{_mib(grown - cap)} (stated overhead {_mib(FLOOD_OVERHEAD_BYTES)})")
    if crowd:
        print(f"crowd ({crowd['idle_connections']:,} idle connections, {crowd['slow_consumers']} slow consumers)")
        print(f"  broker sockets         {crowd['broker_sockets']:,}")
        print(f"  pair                   {crowd['pair_consumed']:,}/{crowd['pair_records']:,} records in "
              f"{crowd['pair_seconds']:.1f} s; produce p50 {crowd['produce_p50_s'] * 1000:.1f} ms, "
              f"p99 {crowd['produce_p99_s'] * 1000:.1f} ms")
        print(f"  broker RSS             baseline {_mib(crowd['baseline']['VmRSS'])}, with idle connections "
              f"{_mib(crowd['with_idle_connections']['VmRSS'])}, peak {_mib(crowd['peak'].get('VmRSS', 0))} "
              f"(heap peak {_mib(crowd['peak'].get('RssAnon', 0))})")


def describe(results: list[Result]) -> dict[str, Any]:
    return {"overload": _REPORT}


__all__ = ["Broker", "MemorySampler", "flood", "idle_connections", "memory", "pair", "slow_consumers"]
