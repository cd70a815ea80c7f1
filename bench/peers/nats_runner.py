"""NATS JetStream through nats-py: the client roles (run in agents) and ``NatsSystem``.

Used the way nats-py documents for throughput, on uvloop when it is installed (as nats.py's own
benchmark scripts do; the table says which loop ran):

- produce: ``js.publish_async`` for every record (nats-py bounds the unacknowledged publishes at
  ``publish_async_max_pending``, 4,000 by default), then ``publish_async_completed()``; every
  ack is checked afterwards. One stream per partition, file storage;
- consume: a pull consumer (``AckPolicy.NONE``, like the position-only reads of the other
  systems) and ``fetch(batch=FETCH_BATCH)`` until every record arrived;
- latency: ``publish_async`` at the fixed rate; the consumer ``fetch``es batches of
  ``rate / 100`` with a 10 ms timeout (nats-py returns a fetch when its batch is full or its
  timeout passed; smaller batches fall behind at 10 k/s, longer timeouts wait longer);
- consumer group: one stream with a subject per partition (8), one durable pull consumer
  (``AckPolicy.EXPLICIT``) shared by the members, each ``fetch``ing batches and acking every
  message (JetStream's way of sharing work); a member stops when a fetch times out with nothing
  left to deliver.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from bench.peers.clock import Pacer, Timer
from bench.peers.plan import Context, Job, Variant, Workload, expect_count, rows_of
from bench.peers.records import (
    STAMP,
    as_bytes_list,
    filler,
    read_stamp,
    settled_latencies,
    value_rows,
)
from bench.peers.servers import TIERS, Server

FETCH_BATCH = 1_000
#: The latency consumer fetches rate/100 records (100 at 10 k/s) and waits at most this long: the
#: best of the settings tried at 10 k/s (batch rate/1000, rate/100, rate/10; 5 ms to 0.5 s).
LATENCY_FETCH_TIMEOUT_S = 0.01
GROUP_FETCH_TIMEOUT_S = 1.0

Barrier = Callable[[], None]


def event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio (install uvloop for nats.py's own benchmark setting)"
    return "uvloop"


def run_async(main: Awaitable[Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)  # type: ignore[arg-type]
    return uvloop.run(main)  # type: ignore[arg-type]


async def _connect(spec_or_address: dict[str, Any] | str) -> Any:
    import nats

    address = spec_or_address if isinstance(spec_or_address, str) else spec_or_address["server"]
    return await nats.connect(f"nats://{address}", connect_timeout=10, max_reconnect_attempts=3)


async def _wait_barrier(barrier: Barrier) -> None:
    await asyncio.to_thread(barrier)


async def _publish_all(js: Any, subjects_values: list[tuple[str, list[bytes]]]) -> int:
    """publish_async everything, wait for every ack; returns the number of failed publishes."""
    futures = []
    for subject, values in subjects_values:
        for value in values:
            futures.append(await js.publish_async(subject, value))
    await js.publish_async_completed()
    return sum(1 for f in futures if f.cancelled() or f.exception() is not None)


def produce(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    values = as_bytes_list(value_rows(spec["start"], spec["stop"], spec["size"], spec["seed"]))

    async def main() -> dict[str, Any]:
        nc = await _connect(spec)
        try:
            js = nc.jetstream()
            timer = Timer()
            await _wait_barrier(barrier)
            timer.start()
            failed = await _publish_all(js, [(spec["subject"], values)])
            timer.stop()
        finally:
            await nc.close()
        if failed:
            raise RuntimeError(f"{failed:,} publishes were not acknowledged")
        return timer.result(len(values))

    return dict(run_async(main()))


def fill(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    parts = [(subject, as_bytes_list(value_rows(start, stop, spec["size"], spec["seed"])))
             for subject, start, stop in spec["parts"]]

    async def main() -> dict[str, Any]:
        nc = await _connect(spec)
        try:
            timer = Timer()
            await _wait_barrier(barrier)
            timer.start()
            failed = await _publish_all(nc.jetstream(), parts)
            timer.stop()
        finally:
            await nc.close()
        if failed:
            raise RuntimeError(f"{failed:,} publishes were not acknowledged")
        return timer.result(sum(len(values) for _, values in parts))

    return dict(run_async(main()))


async def _pull(js: Any, spec: dict[str, Any], ack_none: bool = True) -> Any:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    config = ConsumerConfig(ack_policy=AckPolicy.NONE if ack_none else AckPolicy.EXPLICIT,
                            deliver_policy=DeliverPolicy.ALL)
    return await js.pull_subscribe(spec["subject"], durable=spec["durable"], stream=spec["stream"],
                                   config=config)


def consume(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    expected = spec["records"]

    async def main() -> dict[str, Any]:
        deadline = time.monotonic() + spec["timeout_s"]
        nc = await _connect(spec)
        seen = 0
        try:
            subscription = await _pull(nc.jetstream(), spec)
            timer = Timer()
            await _wait_barrier(barrier)
            timer.start()
            while seen < expected and time.monotonic() < deadline:
                seen += len(await subscription.fetch(batch=FETCH_BATCH, timeout=5))
            timer.stop()
        finally:
            await nc.close()
        return timer.result(seen)

    return dict(run_async(main()))


def latency_send(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    total = spec["records"]
    tail = filler(spec["size"], spec["seed"])
    pack, now_ns = STAMP.pack, time.time_ns
    pacer = Pacer(spec["rate"], total)

    async def main() -> dict[str, Any]:
        nc = await _connect(spec)
        try:
            js = nc.jetstream()
            subject = spec["subject"]
            futures = []
            timer = Timer()
            await _wait_barrier(barrier)
            timer.start()
            pacer.start()
            sent = 0
            while sent < total:
                due = pacer.due()
                if due <= sent:
                    await asyncio.sleep(pacer.idle_s)
                    continue
                for _ in range(due - sent):
                    futures.append(await js.publish_async(subject, pack(now_ns()) + tail))
                sent = due
            await js.publish_async_completed()
            timer.stop()
        finally:
            await nc.close()
        failed = sum(1 for f in futures if f.cancelled() or f.exception() is not None)
        if failed:
            raise RuntimeError(f"{failed:,} publishes were not acknowledged")
        return timer.result(total)

    return dict(run_async(main()))


def latency_receive(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    import nats.errors

    total = spec["records"]
    batch = max(1, spec["rate"] // 100)

    async def main() -> dict[str, Any]:
        deadline = time.monotonic() + spec["timeout_s"]
        sent = np.zeros(total, dtype=np.int64)
        received = np.zeros(total, dtype=np.int64)
        count = 0
        nc = await _connect(spec)
        try:
            subscription = await _pull(nc.jetstream(), spec)
            timer = Timer()
            await _wait_barrier(barrier)
            timer.start()
            while count < total and time.monotonic() < deadline:
                try:
                    messages = await subscription.fetch(batch=batch,
                                                          timeout=LATENCY_FETCH_TIMEOUT_S)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                now = time.time_ns()
                for message in messages[: total - count]:
                    sent[count] = read_stamp(message.data)
                    received[count] = now
                    count += 1
            timer.stop()
        finally:
            await nc.close()
        return timer.result(count, fetch_batch=batch, latency=settled_latencies(
            sent[:count], received[:count], spec["settle_s"]))

    return dict(run_async(main()))


def group_member(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    import nats.errors

    async def main() -> dict[str, Any]:
        deadline = time.monotonic() + spec["timeout_s"]
        count, first_ns, last_ns, first_batch = 0, 0, 0, 0
        nc = await _connect(spec)
        try:
            subscription = await nc.jetstream().pull_subscribe_bind(
                durable=spec["durable"], stream=spec["stream"])
            timer = Timer()
            await _wait_barrier(barrier)
            timer.start()
            while time.monotonic() < deadline:
                try:
                    messages = await subscription.fetch(batch=FETCH_BATCH,
                                                        timeout=GROUP_FETCH_TIMEOUT_S)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                for message in messages:
                    await message.ack()
                last_ns = time.time_ns()
                if not first_ns:
                    first_ns, first_batch = last_ns, len(messages)
                count += len(messages)
            await nc.flush()
            timer.stop()
        finally:
            await nc.close()
        return timer.result(count, first_ns=first_ns, last_ns=last_ns, first_batch=first_batch)

    return dict(run_async(main()))


ROLES = {
    "produce": produce,
    "fill": fill,
    "consume": consume,
    "latency_send": latency_send,
    "latency_receive": latency_receive,
    "group_member": group_member,
}


# -- the harness's side ------------------------------------------------------------------------


def admin(address: str, action: Callable[[Any], Awaitable[Any]]) -> Any:
    """``await action(jetstream)`` on a fresh connection to ``address``, from synchronous code
    (the harness has no event loop running between calls, so a long-lived connection would miss
    the server's pings)."""

    async def main() -> Any:
        nc = await _connect(address)
        try:
            return await action(nc.jetstream())
        finally:
            await nc.close()

    return run_async(main())


def nats_py_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nats-py")
    except PackageNotFoundError:
        return "?"


class NatsSystem:
    """Admin calls open a fresh connection each (the harness has no event loop running between
    calls, so a long-lived connection would miss the server's pings)."""

    name = "nats"
    tiers: tuple[str, ...] = ("page",)

    def __init__(self, server: Server) -> None:
        self.server = server
        self._variants = {
            "produce": [Variant("publish_async", "publish_async (4,000 pending)")],
            "consume": [Variant("fetch", f"pull fetch({FETCH_BATCH:,}), no acks")],
            "latency": [Variant("publish-fetch", "publish_async -> fetch(rate/100, 10 ms)")],
            "group": [Variant("fetch", f"shared pull consumer, fetch({FETCH_BATCH:,}) + ack")],
        }
        self._streams: dict[str, list[str]] = {}
        self._source: dict[str, tuple[str, str]] = {}  # tag -> (stream, subject)
        self._group_source: dict[str, str] = {}

    def _admin(self, action: Callable[[Any], Awaitable[Any]]) -> Any:
        return admin(self.server.address, action)

    def variants(self, workload: Workload) -> list[Variant]:
        return self._variants[workload.kind]

    def set_tier(self, tier: str) -> None:
        if tier != "page":
            raise ValueError("JetStream 2.9 has no per-message fsync: page tier only")

    def _stream(self, ctx: Context, what: str, subjects: list[str] | None = None) -> str:
        from nats.js.api import StorageType, StreamConfig

        name = f"{ctx.tag}-{what}-{uuid.uuid4().hex[:6]}"
        config = StreamConfig(name=name, subjects=subjects or [f"{name}.v"],
                              storage=StorageType.FILE, num_replicas=1)
        self._admin(lambda js: js.add_stream(config))
        self._streams.setdefault(ctx.tag, []).append(name)
        return name

    def _stored(self, streams: list[str]) -> int:
        async def count(js: Any) -> int:
            return sum([(await js.stream_info(name)).state.messages for name in streams])

        return int(self._admin(count))

    def _spec(self, role: str, ctx: Context, **fields: Any) -> dict[str, Any]:
        return {"system": self.name, "role": role, "server": self.server.address,
                "size": ctx.size, "seed": ctx.plan.seed, "timeout_s": ctx.timeout_s, **fields}

    def job(self, workload: Workload, variant: Variant, ctx: Context) -> Job:
        n = ctx.records
        if workload.kind == "produce":
            producers = ctx.plan.producers if workload.key != "produce" else 1
            streams = [self._stream(ctx, f"{workload.key}-p{i}") for i in range(producers)]
            if producers == 1:
                self._source[ctx.tag] = (streams[0], f"{streams[0]}.v")
            specs = [self._spec("produce", ctx, subject=f"{stream}.v",
                                start=rows_of(n, producers, i)[0], stop=rows_of(n, producers, i)[1])
                     for i, stream in enumerate(streams)]
            return Job(specs, self.server.pid,
                       check=lambda _: expect_count(workload.key, n, self._stored(streams)))
        if workload.kind == "consume":
            before = []
            if ctx.tag not in self._source:
                stream = self._stream(ctx, "consume")
                self._source[ctx.tag] = (stream, f"{stream}.v")
                before.append(Job([self._spec("fill", ctx, parts=[[f"{stream}.v", 0, n]])]))
            stream, subject = self._source[ctx.tag]
            spec = self._spec("consume", ctx, stream=stream, subject=subject, records=n,
                              durable=f"consume-{uuid.uuid4().hex[:6]}")
            return Job([spec], self.server.pid, before=before,
                       check=lambda results: expect_count("consume", n, results[0]["records"]))
        if workload.kind == "latency":
            total = ctx.latency_records(workload.rate)
            stream = self._stream(ctx, workload.key)
            common = {"stream": stream, "subject": f"{stream}.v", "records": total,
                      "rate": workload.rate, "durable": workload.key,
                      "settle_s": min(0.5, ctx.plan.latency_seconds / 10)}
            specs = [self._spec("latency_receive", ctx, **common),
                     self._spec("latency_send", ctx, **common)]
            return Job(specs, self.server.pid,
                       check=lambda results: expect_count("latency", total, results[0]["records"]))
        if workload.kind == "group":
            return self._group_job(workload, ctx)
        raise ValueError(f"unknown workload {workload.key}")

    def _group_job(self, workload: Workload, ctx: Context) -> Job:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        n, partitions = ctx.records, ctx.plan.group_partitions
        members = int(workload.key.rsplit("-", 1)[1])
        before = []
        if ctx.tag not in self._group_source:
            name = f"{ctx.tag}-group-{uuid.uuid4().hex[:6]}"
            stream = self._stream(ctx, "group", subjects=[f"{name}.*"])
            self._group_source[ctx.tag] = stream
            fillers = min(ctx.plan.producers, partitions)
            before.append(Job([
                self._spec("fill", ctx, parts=[[f"{name}.{p}", *rows_of(n, partitions, p)]
                                               for p in range(partitions) if p % fillers == i])
                for i in range(fillers)]))
        stream = self._group_source[ctx.tag]
        durable = f"{workload.key}-{uuid.uuid4().hex[:6]}"
        config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                                deliver_policy=DeliverPolicy.ALL, max_ack_pending=-1)
        self._admin(lambda js: js.add_consumer(stream, config))
        specs = [self._spec("group_member", ctx, stream=stream, durable=durable, member=i)
                 for i in range(members)]

        def check(results: list[dict[str, Any]]) -> None:
            total = sum(r["records"] for r in results)
            if total < n:
                raise RuntimeError(f"nats consumer {durable}: {total:,} of {n:,} delivered")

        return Job(specs, self.server.pid, before=before, check=check)

    def end_run(self, ctx: Context) -> None:
        streams = self._streams.pop(ctx.tag, [])

        async def delete(js: Any) -> None:
            for name in streams:
                await js.delete_stream(name)

        if streams:
            self._admin(delete)
        self._source.pop(ctx.tag, None)
        self._group_source.pop(ctx.tag, None)

    def info(self) -> dict[str, Any]:
        return {
            "server": self.server.info,
            "client": {"nats-py": nats_py_version(), "event_loop": event_loop_name(),
                       "publish_async_max_pending": 4000, "fetch_batch": FETCH_BATCH},
            "tiers": {"page": TIERS["page"]["nats"],
                      "fsync": "not run: JetStream 2.9 cannot fsync each message"},
        }

    def close(self) -> None:
        pass
