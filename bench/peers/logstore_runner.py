"""logstore through its Python client: the client roles (run in agents) and ``LogstoreSystem``.

Producers are ``Producer(server, acks="all")`` with the defaults (idempotent, ``linger_ms=5``,
1 MiB batches, up to 5 requests in flight on one ``ProduceStream``), in two variants:

- ``send_batch``: the records as one 2-D uint8 array, ``send_batch(...).result()``;
- ``send``: ``send()`` per record from a list of ``bytes``, then ``flush()``.

Consumers are ``Consumer(server, auto_offset_reset="earliest")`` with ``assign`` and the
defaults (one fetch of up to 8 MiB always in flight): ``poll_columns()`` (numpy columns, values
as zero-copy views) or ``poll()`` (a ``ConsumerRecord`` per record). The latency producer sends
with the defaults too (Nagle-style batching: a record goes at once while no request is in
flight, records batch while one is, ``linger_ms=5`` bounds that wait; ``linger_ms=0`` instead
made every record its own gRPC message) and the latency consumer uses ``poll()`` over its
``Subscribe`` stream (records pushed at the append).

Consumer groups: ``Consumer(server, group_id=...)`` + ``subscribe([topic])`` where the client
supports it; a client without group support raises ``NotImplementedError`` there, and the members
fall back to ``assign`` of disjoint partition sets (member i of m takes partitions p with
p % m == i), which the table then says.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.peers.clock import Pacer, Timer
from bench.peers.plan import (
    Context,
    Job,
    Variant,
    Workload,
    expect_count,
    rows_of,
)
from bench.peers.records import (
    STAMP,
    as_bytes_list,
    filler,
    read_stamp,
    settled_latencies,
    value_rows,
)
from bench.peers.servers import LOGSTORE_FLUSH, TIERS, Server

LATENCY_PRODUCER: dict[str, Any] = {}  # the defaults (see the module docs)
#: A group member stops once its partitions are at their end and nothing came for this long.
GROUP_IDLE_S = 0.5

Barrier = Callable[[], None]


# -- client roles (in an agent process) ------------------------------------------------------


def _producer(spec: dict[str, Any]) -> Any:
    from logstore import Producer

    return Producer(spec["server"], acks="all", **spec.get("options", {}))


def _consumer(spec: dict[str, Any], **options: Any) -> Any:
    from logstore import Consumer

    return Consumer(spec["server"], auto_offset_reset="earliest", **options)


def produce(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    topic, partition = spec["topic"], spec["partition"]
    rows = value_rows(spec["start"], spec["stop"], spec["size"], spec["seed"])
    values = as_bytes_list(rows) if spec["variant"] == "send" else []
    timer = Timer()
    with _producer(spec) as producer:
        producer.partitions_for(topic)  # metadata before the clock starts
        barrier()
        timer.start()
        if spec["variant"] == "send":
            send = producer.send
            for value in values:
                send(topic, value, partition=partition)
            producer.flush()
        else:
            producer.send_batch(topic, rows, partition=partition).result()
        timer.stop()
    return timer.result(len(rows))


def fill(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    """Untimed: ``send_batch`` rows [start, stop) into each listed partition."""
    timer = Timer()
    with _producer(spec) as producer:
        barrier()
        timer.start()
        futures = [producer.send_batch(spec["topic"],
                                       value_rows(start, stop, spec["size"], spec["seed"]),
                                       partition=partition)
                   for partition, start, stop in spec["parts"]]
        for future in futures:
            future.result()
        timer.stop()
    return timer.result(sum(stop - start for _, start, stop in spec["parts"]))


def consume(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    topic, expected = spec["topic"], spec["records"]
    deadline = time.monotonic() + spec["timeout_s"]
    timer = Timer()
    seen = 0
    with _consumer(spec) as consumer:
        consumer.assign([(topic, p) for p in spec["partitions"]])
        for p in spec["partitions"]:
            consumer.position((topic, p))  # ListOffsets before the clock starts
        barrier()
        timer.start()
        if spec["variant"] == "poll_columns":
            while seen < expected and time.monotonic() < deadline:
                for columns in consumer.poll_columns(timeout=1.0).values():
                    seen += len(columns)
        else:
            while seen < expected and time.monotonic() < deadline:
                seen += len(consumer.poll(timeout=1.0))
        timer.stop()
    return timer.result(seen)


def latency_send(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    topic, total = spec["topic"], spec["records"]
    tail = filler(spec["size"], spec["seed"])
    pack, now_ns, sleep = STAMP.pack, time.time_ns, time.sleep
    pacer = Pacer(spec["rate"], total)
    timer = Timer()
    with _producer(spec) as producer:
        producer.partitions_for(topic)
        send = producer.send
        barrier()
        timer.start()
        pacer.start()
        sent = 0
        while sent < total:
            due = pacer.due()
            if due <= sent:
                sleep(pacer.idle_s)
                continue
            for _ in range(due - sent):
                send(topic, pack(now_ns()) + tail, partition=0)
            sent = due
        producer.flush()
        timer.stop()
    return timer.result(total)


def latency_receive(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    topic, total = spec["topic"], spec["records"]
    deadline = time.monotonic() + spec["timeout_s"]
    sent = np.zeros(total, dtype=np.int64)
    received = np.zeros(total, dtype=np.int64)
    count = 0
    timer = Timer()
    with _consumer(spec) as consumer:
        consumer.assign([(topic, 0)])
        consumer.position((topic, 0))
        barrier()
        timer.start()
        while count < total and time.monotonic() < deadline:
            records = consumer.poll(timeout=0.5)
            now = time.time_ns()
            for record in records[: total - count]:
                sent[count] = read_stamp(record.value)
                received[count] = now
                count += 1
        timer.stop()
    return timer.result(count, latency=settled_latencies(sent[:count], received[:count],
                                                         spec["settle_s"]))


def group_member(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    topic, index, members = spec["topic"], spec["member"], spec["members"]
    ends = {p: int(e) for p, e in enumerate(spec["end_offsets"])}
    deadline = time.monotonic() + spec["timeout_s"]
    try:
        consumer = _consumer(spec, group_id=spec["group"])
        mode = "group"
    except NotImplementedError:
        consumer = _consumer(spec)
        mode = "assign"
    count, first_ns, last_ns, first_batch = 0, 0, 0, 0
    timer = Timer()
    with consumer:
        if mode == "group":
            consumer.subscribe([topic])
        else:
            consumer.assign([(topic, p) for p in ends if p % members == index])
            for tp in consumer.assignment():
                consumer.position(tp)
        barrier()
        timer.start()
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            records = consumer.poll(timeout=0.2)
            if records:
                last_ns = time.time_ns()
                if not first_ns:
                    first_ns, first_batch = last_ns, len(records)
                count += len(records)
                idle_since = time.monotonic()
                continue
            idle = time.monotonic() - idle_since
            if idle >= GROUP_IDLE_S and _drained(consumer, ends) or idle >= 10 * GROUP_IDLE_S:
                break
        timer.stop()
        assigned = [tp.partition for tp in consumer.assignment()]
    return timer.result(count, first_ns=first_ns, last_ns=last_ns, first_batch=first_batch,
                        mode=mode, assigned=assigned)


def _drained(consumer: Any, ends: dict[int, int]) -> bool:
    assigned = consumer.assignment()
    return bool(assigned) and all(consumer.position(tp) >= ends[tp.partition] for tp in assigned)


ROLES = {
    "produce": produce,
    "fill": fill,
    "consume": consume,
    "latency_send": latency_send,
    "latency_receive": latency_receive,
    "group_member": group_member,
}


# -- the harness's side ------------------------------------------------------------------------


def groups_supported(address: str) -> bool:
    """Whether this client has consumer groups (a client without raises NotImplementedError)."""
    from logstore import Consumer

    try:
        Consumer(address, group_id=f"bench-probe-{uuid.uuid4().hex[:6]}").close()
    except NotImplementedError:
        return False
    return True


class LogstoreSystem:
    name = "logstore"
    tiers: tuple[str, ...] = ("page", "fsync")

    def __init__(self, server: Server) -> None:
        from logstore import Admin

        self.server = server
        self.admin = Admin(server.address)
        self.tier = "page"
        self.groups = groups_supported(server.address)
        group_api = ("group_id + subscribe()" if self.groups
                     else "assign() (the client has no groups)")
        self._variants = {
            "produce": [Variant("send_batch", "send_batch() 2-D array"),
                        Variant("send", "send() per record")],
            "consume": [Variant("poll_columns", "poll_columns()"), Variant("poll", "poll() records")],
            "latency": [Variant("send-poll", "send() -> poll()")],
            "group": [Variant("poll", f"poll() records, {group_api}")],
        }
        self._topics: dict[str, list[str]] = {}
        self._source: dict[str, str] = {}  # run tag -> the 1-partition topic produce filled
        self._group_source: dict[str, tuple[str, list[int]]] = {}

    def variants(self, workload: Workload) -> list[Variant]:
        return self._variants[workload.kind]

    def set_tier(self, tier: str) -> None:
        self.tier = tier

    def _topic(self, ctx: Context, what: str, partitions: int) -> str:
        name = f"{ctx.tag}-{what}-{uuid.uuid4().hex[:6]}"
        self.admin.create_topic(name, partitions=partitions,
                                config={"flush": LOGSTORE_FLUSH[self.tier]})
        self._topics.setdefault(ctx.tag, []).append(name)
        return name

    def _spec(self, role: str, ctx: Context, **fields: Any) -> dict[str, Any]:
        return {"system": self.name, "role": role, "server": self.server.address,
                "size": ctx.size, "seed": ctx.plan.seed, "timeout_s": ctx.timeout_s, **fields}

    def _stored(self, topic: str) -> int:
        return sum(self.admin.list_offsets(topic, "latest").values())

    def job(self, workload: Workload, variant: Variant, ctx: Context) -> Job:
        n = ctx.records
        if workload.kind == "produce":
            producers = ctx.plan.producers if workload.key != "produce" else 1
            topic = self._topic(ctx, f"{workload.key}-{variant.key}", producers)
            if producers == 1 and variant.key == "send_batch":
                self._source[ctx.tag] = topic
            specs = [self._spec("produce", ctx, topic=topic, partition=i, variant=variant.key,
                                start=rows_of(n, producers, i)[0], stop=rows_of(n, producers, i)[1])
                     for i in range(producers)]
            return Job(specs, self.server.pid,
                       check=lambda _: expect_count(topic, n, self._stored(topic)))
        if workload.kind == "consume":
            before = []
            if ctx.tag not in self._source:
                topic = self._source[ctx.tag] = self._topic(ctx, "consume", 1)
                before.append(Job([self._spec("fill", ctx, topic=topic, parts=[[0, 0, n]])]))
            topic = self._source[ctx.tag]
            spec = self._spec("consume", ctx, topic=topic, partitions=[0], records=n,
                              variant=variant.key)
            return Job([spec], self.server.pid, before=before,
                       check=lambda results: expect_count(topic, n, results[0]["records"]))
        if workload.kind == "latency":
            total = ctx.latency_records(workload.rate)
            topic = self._topic(ctx, workload.key, 1)
            common = {"topic": topic, "records": total, "rate": workload.rate,
                      "settle_s": min(0.5, ctx.plan.latency_seconds / 10)}
            specs = [self._spec("latency_receive", ctx, **common),
                     self._spec("latency_send", ctx, options=LATENCY_PRODUCER, **common)]
            return Job(specs, self.server.pid,
                       check=lambda results: expect_count(topic, total, results[0]["records"]))
        if workload.kind == "group":
            return self._group_job(workload, ctx)
        raise ValueError(f"unknown workload {workload.key}")

    def _group_job(self, workload: Workload, ctx: Context) -> Job:
        n, partitions = ctx.records, ctx.plan.group_partitions
        members = int(workload.key.rsplit("-", 1)[1])
        before = []
        if ctx.tag not in self._group_source:
            topic = self._topic(ctx, "group", partitions)
            ends = [rows_of(n, partitions, p)[1] - rows_of(n, partitions, p)[0]
                    for p in range(partitions)]
            self._group_source[ctx.tag] = (topic, ends)
            fillers = min(ctx.plan.producers, partitions)
            before.append(Job([
                self._spec("fill", ctx, topic=topic,
                           parts=[[p, *rows_of(n, partitions, p)]
                                  for p in range(partitions) if p % fillers == i])
                for i in range(fillers)]))
        topic, ends = self._group_source[ctx.tag]
        group = f"{ctx.tag}-{workload.key}-{uuid.uuid4().hex[:6]}"
        specs = [self._spec("group_member", ctx, topic=topic, group=group, member=i,
                            members=members, end_offsets=ends)
                 for i in range(members)]

        def check(results: list[dict[str, Any]]) -> None:
            total = sum(r["records"] for r in results)
            if total < n:
                raise RuntimeError(f"group {group}: {total:,} of {n:,} records consumed")

        return Job(specs, self.server.pid, before=before, check=check)

    def end_run(self, ctx: Context) -> None:
        for topic in self._topics.pop(ctx.tag, []):
            self.admin.delete_topic(topic)
        self._source.pop(ctx.tag, None)
        self._group_source.pop(ctx.tag, None)

    def info(self) -> dict[str, Any]:
        return {
            "server": self.server.info,
            "client": {"producer": _producer_settings(),
                       "latency_producer": f"Producer(acks='all', {LATENCY_PRODUCER or 'defaults'})",
                       "consumer": "Consumer(auto_offset_reset='earliest') + assign(), defaults",
                       "consumer_groups": self.groups},
            "tiers": {tier: TIERS[tier]["logstore"] for tier in self.tiers},
        }

    def close(self) -> None:
        self.admin.close()


def _producer_settings() -> str:
    """What the produce rows measure: the producer's defaults (read from ``ProducerConfig``)."""
    from logstore.client.config import ProducerConfig

    config = ProducerConfig()
    return (f"Producer(acks='all'), defaults otherwise (idempotent, linger_ms={config.linger_ms:g} "
            f"while a request is in flight, batch_bytes={config.batch_bytes >> 20} MiB, "
            f"max_request_bytes={config.max_request_bytes >> 20} MiB, "
            f"max_in_flight={config.max_in_flight})")
