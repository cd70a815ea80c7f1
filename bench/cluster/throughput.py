"""Produce and consume throughput on the 3-broker logstore cluster and the 3-node JetStream
cluster, every measurement a set of client processes (``bench.peers.pool``) started together.

One *round* measures, for one record size and in this order: produce to a fresh 3-partition topic
for each ``CONFIGS`` entry (replication factor, acks), produce to three fresh R3 streams, then
consume the factor-1 topic, the factor-3 topic and the R3 streams. Rounds repeat: round 0 warms
up and is dropped (not with ``--quick``), then ``repeats`` timed rounds, so every configuration
is measured side by side as often as every other one and slow drift on a shared box hits them
all alike. The consume sources are what round 0's ``acks=all`` produce wrote (and round 0's
streams); every other produce topic or stream is deleted after its run. Fresh topics and streams
get one untimed record per partition before the clock starts (``roles.PRIME``), so no run pays
for a partition's first replication round trip.

logstore: one client process per partition leader, ``Producer(server=<leader>)`` sending to the
partitions it leads (``bench.cluster.roles``), ``Consumer(server=<leader>)`` reading them; leaders
are read from the ``Metadata`` call before each run. NATS: client process ``i`` connects to node
``i`` and publishes to (or reads) stream ``i``; JetStream forwards to each stream's leader.

A measurement lasts from the first process's start to the last one's end (wall clock); the CPU
time of the server processes (all 3 brokers, or all 3 nats-servers) is summed over it. A change
of any partition's leader epoch during a run is counted in the result's ``leader_changes``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.cluster.roles import PRIME
from bench.cluster.servers import LogstoreCluster, NatsCluster, wait_for
from bench.peers.nats_runner import admin
from bench.peers.plan import rows_of
from bench.peers.pool import Pool
from bench.peers.servers import Server, process_cpu_seconds

PARTITIONS = 3
#: (replication factor, acks) of the produce measurements, in the order of a round.
CONFIGS: tuple[tuple[int, str], ...] = ((1, "1"), (1, "all"), (3, "1"), (3, "all"))
SEED = 7


def topic_config(factor: int) -> dict[str, str]:
    return {"min_insync_replicas": "2"} if factor == 3 else {}


@dataclass
class Series:
    """The timed runs of one workload: seconds per run, records per run."""

    kind: str  # produce or consume
    size: int
    system: str  # logstore or nats
    factor: int
    acks: str
    records: int
    samples: list[float] = field(default_factory=list)
    #: CPU seconds of every server process (brokers, or nats-servers) during each timed run.
    server_cpu_s: list[float] = field(default_factory=list)
    leader_changes: int = 0
    clients: int = 0

    @property
    def key(self) -> tuple[str, int, str, int, str]:
        return self.kind, self.size, self.system, self.factor, self.acks


@dataclass(frozen=True)
class Outcome:
    """One measurement: from the first client's start to the last one's end."""

    seconds: float
    clients: int
    server_cpu_s: float
    leader_changes: int = 0


def _span_s(results: list[dict[str, Any]]) -> float:
    return (max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)) / 1e9


class Throughput:
    def __init__(self, cluster: LogstoreCluster, nats: NatsCluster, pool: Pool,
                 timeout_s: float) -> None:
        self.cluster = cluster
        self.nats = nats
        self.pool = pool
        self.timeout_s = timeout_s

    #: Measurements in one round (for the progress bar).
    per_round = len(CONFIGS) + 1 + 3

    def rounds(self, size: int, records: int, nats_records: int, repeats: int, warmup: bool,
               progress: Any) -> list[Series]:
        series: dict[tuple[str, int, str, int, str], Series] = {}

        def record(kind: str, system: str, factor: int, acks: str, outcome: Outcome,
                   timed: bool) -> None:
            key = (kind, size, system, factor, acks)
            count = nats_records if system == "nats" else records
            entry = series.setdefault(key, Series(kind, size, system, factor, acks, count))
            entry.clients = outcome.clients
            if timed:
                entry.samples.append(outcome.seconds)
                entry.server_cpu_s.append(outcome.server_cpu_s)
                entry.leader_changes += outcome.leader_changes

        sources: dict[int, str] = {}
        streams: list[str] = []
        try:
            for index in range(repeats + warmup):
                timed = index > 0 or not warmup
                for factor, acks in CONFIGS:
                    progress.start(f"{_label(size)} produce, factor {factor}, acks={acks}")
                    topic = self.topic(size, factor)
                    record("produce", "logstore", factor, acks,
                           self._produce(topic, size, records, acks), timed)
                    if index == 0 and acks == "all":
                        sources[factor] = topic
                    else:
                        self.cluster.delete_topic(topic)
                    progress.done()
                progress.start(f"{_label(size)} produce, JetStream R3")
                names = self._streams(size)
                record("produce", "nats", 3, "ack", self._publish(names, size, nats_records),
                       timed)
                if index == 0:
                    streams = names
                else:
                    self._delete_streams(names)
                progress.done()
                for factor in (1, 3):
                    progress.start(f"{_label(size)} consume, factor {factor}")
                    record("consume", "logstore", factor, "",
                           self._consume(sources[factor], records), timed)
                    progress.done()
                progress.start(f"{_label(size)} consume, JetStream R3")
                record("consume", "nats", 3, "", self._fetch(streams, nats_records), timed)
                progress.done()
        finally:
            for topic in sources.values():
                self.cluster.delete_topic(topic)
            if streams:
                self._delete_streams(streams)
        return list(series.values())

    # -- logstore ------------------------------------------------------------------------------

    def topic(self, size: int, factor: int) -> str:
        """A fresh 3-partition topic, every replica in sync."""
        name = f"bc-{size}-f{factor}-{uuid.uuid4().hex[:6]}"
        self.cluster.create_topic(name, PARTITIONS, factor, topic_config(factor))
        return name

    def _measure(self, specs: list[dict[str, Any]], servers: list[Server],
                 topic: str | None = None) -> tuple[list[dict[str, Any]], Outcome]:
        """Run ``specs`` together; the servers' CPU is read when every client is ready (to go)
        and again once all are done, the leader epochs of ``topic`` before and after."""
        before = self.cluster.leader_epochs(topic) if topic else []
        started: list[float] = []

        def cpu_s() -> float:
            return sum(process_cpu_seconds(s.pid) for s in servers if s.process is not None)

        results = self.pool.run(specs, self.timeout_s, before_go=lambda: started.append(cpu_s()))
        cpu = cpu_s() - started[0]
        after = self.cluster.leader_epochs(topic) if topic else []
        changes = sum(a != b for a, b in zip(before, after, strict=True))
        return results, Outcome(_span_s(results), len(specs), cpu, changes)

    def produce_specs(self, topic: str, size: int, records: int, acks: str) -> list[dict[str, Any]]:
        """One client process per partition leader, each sending to the partitions it leads."""
        specs = []
        for broker_id, led in sorted(self.cluster.leaders(topic).items()):
            parts = [[p, *rows_of(records, PARTITIONS, p)] for p in led]
            specs.append({"system": "cluster", "role": "produce", "topic": topic, "acks": acks,
                          "server": self.cluster.broker(broker_id).address, "parts": parts,
                          "size": size, "seed": SEED})
        return specs

    def _produce(self, topic: str, size: int, records: int, acks: str) -> Outcome:
        specs = self.produce_specs(topic, size, records, acks)
        return self._measure(specs, list(self.cluster.brokers), topic)[1]

    def _consume(self, topic: str, records: int) -> Outcome:
        specs = []
        for broker_id, led in sorted(self.cluster.leaders(topic).items()):
            count = sum(rows_of(records, PARTITIONS, p)[1] - rows_of(records, PARTITIONS, p)[0]
                        for p in led)
            specs.append({"system": "logstore", "role": "consume", "variant": "poll_columns",
                          "server": self.cluster.broker(broker_id).address, "topic": topic,
                          "partitions": led, "records": count, "timeout_s": self.timeout_s})
        results, outcome = self._measure(specs, list(self.cluster.brokers), topic)
        for spec, result in zip(specs, results, strict=True):
            if result["records"] < spec["records"]:
                raise RuntimeError(f"consumer of {topic} {spec['partitions']} at "
                                   f"{spec['server']} read {result['records']:,} of "
                                   f"{spec['records']:,} records")
        return outcome

    # -- NATS JetStream -----------------------------------------------------------------------

    def _admin(self, action: Any) -> Any:
        return admin(self.nats.addresses[0], action)

    def _streams(self, size: int) -> list[str]:
        from nats.js.api import StorageType, StreamConfig

        names = [f"bc-{size}-r3-{uuid.uuid4().hex[:6]}-{i}" for i in range(PARTITIONS)]

        async def add(js: Any) -> bool:
            for name in names:  # the same config again is no error: retrying is harmless
                await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.v"],
                                                 storage=StorageType.FILE, num_replicas=3))
            return True

        async def prime(js: Any) -> None:
            for name in names:
                await js.publish(f"{name}.v", PRIME)

        # right after start JetStream may still be electing its meta leader: retried
        wait_for(lambda: self._admin(add), "JetStream creating R3 streams",
                 servers=tuple(self.nats.servers))
        self._admin(prime)  # each stream's raft group has worked before the clock starts
        return names

    def _stored(self, names: list[str]) -> int:
        async def count(js: Any) -> int:
            return sum([(await js.stream_info(name)).state.messages for name in names])

        return int(self._admin(count))

    def _delete_streams(self, names: list[str]) -> None:
        async def delete(js: Any) -> None:
            for name in names:
                await js.delete_stream(name)

        self._admin(delete)

    def _publish(self, names: list[str], size: int, records: int) -> Outcome:
        specs = [{"system": "nats", "role": "produce", "server": self.nats.addresses[i],
                  "subject": f"{name}.v", "start": rows_of(records, PARTITIONS, i)[0],
                  "stop": rows_of(records, PARTITIONS, i)[1], "size": size, "seed": SEED}
                 for i, name in enumerate(names)]
        outcome = self._measure(specs, list(self.nats.servers))[1]
        stored = self._stored(names) - len(names)  # without the primes
        if stored != records:
            raise RuntimeError(f"JetStream streams {names} hold {stored:,} of {records:,} records")
        return outcome

    def _fetch(self, names: list[str], records: int) -> Outcome:
        specs = []
        for i, name in enumerate(names):
            start, stop = rows_of(records, PARTITIONS, i)
            specs.append({"system": "nats", "role": "consume", "server": self.nats.addresses[i],
                          "stream": name, "subject": f"{name}.v", "records": stop - start,
                          "durable": f"read-{uuid.uuid4().hex[:6]}", "timeout_s": self.timeout_s})
        results, outcome = self._measure(specs, list(self.nats.servers))
        for spec, result in zip(specs, results, strict=True):
            if result["records"] < spec["records"]:
                raise RuntimeError(f"JetStream consumer of {spec['stream']} read "
                                   f"{result['records']:,} of {spec['records']:,}")
        return outcome


def _label(size: int) -> str:
    return f"{size} B" if size < 1024 else f"{size // 1024} KiB"
