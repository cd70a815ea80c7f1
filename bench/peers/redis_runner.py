"""Redis Streams through redis-py: the client roles (run in agents) and ``RedisSystem``.

Used the way redis-py's documentation recommends for throughput: with the hiredis parser when it
is installed (``redis[hiredis]``; the table says which parser ran) and commands batched in
pipelines (``pipeline(transaction=False)``, no MULTI/EXEC):

- produce: ``XADD key * v <value>``, ``PIPELINE`` commands per pipeline; one stream per partition;
- consume: ``XRANGE key (last COUNT n`` from the start, ``XRANGE_COUNT`` entries per call;
- latency: the producer pipelines the XADDs that are due at each tick of the fixed rate; the
  consumer blocks in ``XREAD BLOCK 1000 COUNT 1000`` after the last id it saw;
- consumer group: one stream per partition (8 streams, written like the partitions of the other
  systems), one consumer group on each, and every member calls ``XREADGROUP ... STREAMS s0..s7
  > ... >`` with ``COUNT`` per stream; the XACK of one batch is pipelined with the XREADGROUP of
  the next (one round trip per batch). A member stops when XREADGROUP returns nothing: every
  entry has been delivered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
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
from bench.peers.servers import REDIS_APPENDFSYNC, TIERS, Server

PIPELINE = 1_000
XRANGE_COUNT = 1_000
XREADGROUP_COUNT = 1_000  # per stream
FIELD = b"v"
AOF_REWRITE_TIMEOUT_S = 120.0

Barrier = Callable[[], None]


def _client(spec: dict[str, Any]) -> Any:
    import redis

    host, port = spec["server"].rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), socket_timeout=spec["timeout_s"])


def _xadd_all(client: Any, keys_values: list[tuple[bytes | str, list[bytes]]]) -> None:
    for key, values in keys_values:
        for start in range(0, len(values), PIPELINE):
            pipe = client.pipeline(transaction=False)
            for value in values[start : start + PIPELINE]:
                pipe.xadd(key, {FIELD: value})
            pipe.execute()


def produce(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    values = as_bytes_list(value_rows(spec["start"], spec["stop"], spec["size"], spec["seed"]))
    client = _client(spec)
    try:
        client.ping()
        timer = Timer()
        barrier()
        timer.start()
        _xadd_all(client, [(spec["key"], values)])
        timer.stop()
    finally:
        client.close()
    return timer.result(len(values))


def fill(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    parts = [(key, as_bytes_list(value_rows(start, stop, spec["size"], spec["seed"])))
             for key, start, stop in spec["parts"]]
    client = _client(spec)
    try:
        timer = Timer()
        barrier()
        timer.start()
        _xadd_all(client, parts)
        timer.stop()
    finally:
        client.close()
    return timer.result(sum(len(values) for _, values in parts))


def consume(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    key, expected = spec["key"], spec["records"]
    deadline = time.monotonic() + spec["timeout_s"]
    client = _client(spec)
    seen = 0
    try:
        client.ping()
        timer = Timer()
        barrier()
        timer.start()
        low = "-"
        while seen < expected and time.monotonic() < deadline:
            entries = client.xrange(key, min=low, count=XRANGE_COUNT)
            if not entries:
                break
            seen += len(entries)
            low = b"(" + entries[-1][0]
        timer.stop()
    finally:
        client.close()
    return timer.result(seen)


def latency_send(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    key, total = spec["key"], spec["records"]
    tail = filler(spec["size"], spec["seed"])
    pack, now_ns, sleep = STAMP.pack, time.time_ns, time.sleep
    pacer = Pacer(spec["rate"], total)
    client = _client(spec)
    try:
        client.ping()
        timer = Timer()
        barrier()
        timer.start()
        pacer.start()
        sent = 0
        while sent < total:
            due = pacer.due()
            if due <= sent:
                sleep(pacer.idle_s)
                continue
            pipe = client.pipeline(transaction=False)
            for _ in range(due - sent):
                pipe.xadd(key, {FIELD: pack(now_ns()) + tail})
            pipe.execute()
            sent = due
        timer.stop()
    finally:
        client.close()
    return timer.result(total)


def latency_receive(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    key, total = spec["key"], spec["records"]
    deadline = time.monotonic() + spec["timeout_s"]
    sent = np.zeros(total, dtype=np.int64)
    received = np.zeros(total, dtype=np.int64)
    count = 0
    client = _client(spec)
    try:
        client.ping()
        timer = Timer()
        barrier()
        timer.start()
        last = b"0-0"
        while count < total and time.monotonic() < deadline:
            reply = client.xread({key: last}, count=1000, block=1000)
            now = time.time_ns()
            for _, entries in reply or ():
                for _entry_id, fields in entries[: total - count]:
                    sent[count] = read_stamp(fields[FIELD])
                    received[count] = now
                    count += 1
                if entries:
                    last = entries[-1][0]
        timer.stop()
    finally:
        client.close()
    return timer.result(count, latency=settled_latencies(sent[:count], received[:count],
                                                         spec["settle_s"]))


def group_member(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    keys, group, consumer = spec["keys"], spec["group"], f"member-{spec['member']}"
    deadline = time.monotonic() + spec["timeout_s"]
    streams = dict.fromkeys(keys, ">")
    client = _client(spec)
    count, first_ns, last_ns, first_batch = 0, 0, 0, 0
    try:
        client.ping()
        timer = Timer()
        barrier()
        timer.start()
        pending: list[tuple[Any, list[Any]]] = []
        while time.monotonic() < deadline:
            pipe = client.pipeline(transaction=False)
            for key, ids in pending:
                pipe.xack(key, group, *ids)
            pipe.xreadgroup(group, consumer, streams, count=XREADGROUP_COUNT)
            reply = pipe.execute()[-1]
            pending = [(key, [entry_id for entry_id, _ in entries])
                       for key, entries in reply or () if entries]
            if not pending:
                break
            last_ns = time.time_ns()
            batch = sum(len(ids) for _, ids in pending)
            if not first_ns:
                first_ns, first_batch = last_ns, batch
            count += batch
        timer.stop()
    finally:
        client.close()
    return timer.result(count, first_ns=first_ns, last_ns=last_ns, first_batch=first_batch)


ROLES = {
    "produce": produce,
    "fill": fill,
    "consume": consume,
    "latency_send": latency_send,
    "latency_receive": latency_receive,
    "group_member": group_member,
}


# -- the harness's side ------------------------------------------------------------------------


def parser_name() -> str:
    from redis.utils import HIREDIS_AVAILABLE

    return "hiredis" if HIREDIS_AVAILABLE else "pure-Python (install redis[hiredis])"


class RedisSystem:
    name = "redis"
    tiers: tuple[str, ...] = ("page", "fsync")

    def __init__(self, server: Server) -> None:
        import redis

        self.server = server
        self.client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=60)
        self._variants = {
            "produce": [Variant("xadd", f"pipelined XADD x{PIPELINE:,}")],
            "consume": [Variant("xrange", f"XRANGE COUNT {XRANGE_COUNT:,}")],
            "latency": [Variant("xadd-xread", "pipelined XADD -> XREAD BLOCK")],
            "group": [Variant("xreadgroup", f"XREADGROUP COUNT {XREADGROUP_COUNT:,} + XACK, "
                                            f"a stream per partition")],
        }
        self._keys: dict[str, list[str]] = {}
        self._source: dict[str, str] = {}
        self._group_source: dict[str, list[str]] = {}

    def variants(self, workload: Workload) -> list[Variant]:
        return self._variants[workload.kind]

    def set_tier(self, tier: str) -> None:
        self.client.config_set("appendfsync", REDIS_APPENDFSYNC[tier])

    def _key(self, ctx: Context, what: str) -> str:
        key = f"{ctx.tag}-{what}-{uuid.uuid4().hex[:6]}"
        self._keys.setdefault(ctx.tag, []).append(key)
        return key

    def _spec(self, role: str, ctx: Context, **fields: Any) -> dict[str, Any]:
        return {"system": self.name, "role": role, "server": self.server.address,
                "size": ctx.size, "seed": ctx.plan.seed, "timeout_s": ctx.timeout_s, **fields}

    def _stored(self, keys: list[str]) -> int:
        return sum(int(self.client.xlen(key)) for key in keys)

    def job(self, workload: Workload, variant: Variant, ctx: Context) -> Job:
        n = ctx.records
        if workload.kind == "produce":
            producers = ctx.plan.producers if workload.key != "produce" else 1
            keys = [self._key(ctx, f"{workload.key}-p{i}") for i in range(producers)]
            if producers == 1:
                self._source[ctx.tag] = keys[0]
            specs = [self._spec("produce", ctx, key=key, start=rows_of(n, producers, i)[0],
                                stop=rows_of(n, producers, i)[1])
                     for i, key in enumerate(keys)]
            return Job(specs, self.server.pid,
                       check=lambda _: expect_count(workload.key, n, self._stored(keys)))
        if workload.kind == "consume":
            before = []
            if ctx.tag not in self._source:
                key = self._source[ctx.tag] = self._key(ctx, "consume")
                before.append(Job([self._spec("fill", ctx, parts=[[key, 0, n]])]))
            spec = self._spec("consume", ctx, key=self._source[ctx.tag], records=n)
            return Job([spec], self.server.pid, before=before,
                       check=lambda results: expect_count("consume", n, results[0]["records"]))
        if workload.kind == "latency":
            total = ctx.latency_records(workload.rate)
            common = {"key": self._key(ctx, workload.key), "records": total,
                      "rate": workload.rate,
                      "settle_s": min(0.5, ctx.plan.latency_seconds / 10)}
            specs = [self._spec("latency_receive", ctx, **common),
                     self._spec("latency_send", ctx, **common)]
            return Job(specs, self.server.pid,
                       check=lambda results: expect_count("latency", total, results[0]["records"]))
        if workload.kind == "group":
            return self._group_job(workload, ctx)
        raise ValueError(f"unknown workload {workload.key}")

    def _group_job(self, workload: Workload, ctx: Context) -> Job:
        n, partitions = ctx.records, ctx.plan.group_partitions
        members = int(workload.key.rsplit("-", 1)[1])
        before = []
        if ctx.tag not in self._group_source:
            keys = [self._key(ctx, f"group-p{p}") for p in range(partitions)]
            self._group_source[ctx.tag] = keys
            fillers = min(ctx.plan.producers, partitions)
            before.append(Job([
                self._spec("fill", ctx, parts=[[keys[p], *rows_of(n, partitions, p)]
                                               for p in range(partitions) if p % fillers == i])
                for i in range(fillers)]))
        keys = self._group_source[ctx.tag]
        group = f"{workload.key}-{uuid.uuid4().hex[:6]}"
        for key in keys:  # untimed, like creating a logstore topic: streams exist once filled
            self.client.xgroup_create(key, group, id="0", mkstream=True)
        specs = [self._spec("group_member", ctx, keys=keys, group=group, member=i)
                 for i in range(members)]

        def check(results: list[dict[str, Any]]) -> None:
            total = sum(r["records"] for r in results)
            if total != n:
                raise RuntimeError(f"redis group {group}: {total:,} of {n:,} entries delivered")

        return Job(specs, self.server.pid, before=before, check=check)

    def end_run(self, ctx: Context) -> None:
        keys = self._keys.pop(ctx.tag, [])
        if keys:
            self.client.delete(*keys)
        self._source.pop(ctx.tag, None)
        self._group_source.pop(ctx.tag, None)
        self._rewrite_aof()

    def _rewrite_aof(self) -> None:
        """Shrink the AOF to the (now empty) data set, and wait: no fork during a timed run."""
        deadline = time.monotonic() + AOF_REWRITE_TIMEOUT_S
        while self.client.info("persistence").get("aof_rewrite_in_progress"):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        self.client.bgrewriteaof()
        while time.monotonic() < deadline:
            info = self.client.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                return
            time.sleep(0.05)

    def info(self) -> dict[str, Any]:
        import redis

        return {
            "server": self.server.info,
            "client": {"redis-py": redis.__version__, "parser": parser_name(),
                       "pipeline": PIPELINE, "xrange_count": XRANGE_COUNT,
                       "xreadgroup_count_per_stream": XREADGROUP_COUNT},
            "tiers": {tier: TIERS[tier]["redis"] for tier in self.tiers},
        }

    def close(self) -> None:
        self.client.close()
