"""Prometheus metrics, served at ``/metrics`` on ``--metrics-listen`` (by the console's HTTP
server, ``logstore.server.console``, on the event loop).

Counters and histograms are updated by the service per request; per-partition gauges (log start,
log end, bytes) are read from the broker when Prometheus scrapes, so appends pay nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from logstore.broker import Broker

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _PartitionCollector(Collector):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        start = GaugeMetricFamily("logstore_log_start_offset", "First readable offset", labels=["topic", "partition"])
        end = GaugeMetricFamily("logstore_log_end_offset", "Next offset to be assigned", labels=["topic", "partition"])
        size = GaugeMetricFamily("logstore_partition_bytes", "Bytes of segments on disk", labels=["topic", "partition"])
        for topic, partition, log_start, log_end, size_bytes in self.broker.partition_stats():
            labels = [topic, str(partition)]
            start.add_metric(labels, log_start)
            end.add_metric(labels, log_end)
            size.add_metric(labels, size_bytes)
        yield start
        yield end
        yield size
        waits = CounterMetricFamily(
            "logstore_backpressure_waits", "Produce requests that waited for room, by limit", labels=["limit"]
        )
        for limit, count in sorted(self.broker.backpressure.waits.items()):
            waits.add_metric([limit], count)
        yield waits


class _ClusterCollector(Collector):
    """Replication gauges and counters of a clustered broker, read at scrape time."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        replicas = self.cluster.replicas
        yield GaugeMetricFamily(
            "logstore_under_replicated_partitions",
            "Partitions led here whose ISR is smaller than their replica set",
            value=replicas.under_replicated(),
        )
        yield CounterMetricFamily("logstore_isr_shrinks", "ISR shrinks written by this leader",
                                  value=replicas.isr_shrinks)
        yield CounterMetricFamily("logstore_isr_expands", "ISR expands written by this leader",
                                  value=replicas.isr_expands)
        yield CounterMetricFamily("logstore_leader_elections",
                                  "Partitions this broker became the leader of", value=replicas.leader_elections)
        yield GaugeMetricFamily("logstore_controller_active", "1 while this broker is the controller",
                                value=1 if self.cluster.controller.active else 0)
        lag = GaugeMetricFamily("logstore_replica_fetch_lag", "Records a follower is behind this leader",
                                labels=["topic", "partition", "follower"])
        for (topic, partition, follower), records in sorted(replicas.follower_lag().items()):
            lag.add_metric([topic, str(partition), str(follower)], records)
        yield lag
class _ShareCollector(Collector):
    """Per share group, summed over its partitions: available and acquired records (gauges);
    acknowledgements by kind, redeliveries, lock expiries and dead-lettered records (counters
    since the broker started). Read at scrape time on the metrics thread: a value may be one
    event old."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        available = GaugeMetricFamily("logstore_share_available_records",
                                      "Records a share group may acquire now (in its windows)", labels=["group"])
        acquired = GaugeMetricFamily("logstore_share_acquired_records", "Records locked to members", labels=["group"])
        acks = CounterMetricFamily("logstore_share_acknowledged_records", "Records acknowledged, by kind",
                                   labels=["group", "kind"])
        events = {
            name: CounterMetricFamily(f"logstore_share_{name}", help_text, labels=["group"])
            for name, help_text in (("redeliveries", "Deliveries after the first"),
                                    ("lock_expiries", "Locks that ran out"),
                                    ("dead_lettered_records", "Records archived by reject or max_deliveries"))
        }
        totals: dict[str, list[int]] = {}
        kinds: dict[tuple[str, str], int] = {}
        for group, sp in self.broker.shares.stats():
            counts = sp.window.counts()
            row = totals.setdefault(group, [0, 0, 0, 0, 0])
            for i, value in enumerate((int(counts[0]), int(counts[1]), sp.redeliveries,
                                       sp.lock_expiries, sp.dead_lettered)):
                row[i] += value
            for ack_kind, count in sp.acks.items():
                key = (group, ack_kind.name.lower())
                kinds[key] = kinds.get(key, 0) + count
        for group, (avail, held, redelivered, expired, dead) in sorted(totals.items()):
            available.add_metric([group], avail)
            acquired.add_metric([group], held)
            events["redeliveries"].add_metric([group], redelivered)
            events["lock_expiries"].add_metric([group], expired)
            events["dead_lettered_records"].add_metric([group], dead)
        for (group, kind_name), count in sorted(kinds.items()):
            acks.add_metric([group, kind_name], count)
        yield available
        yield acquired
        yield acks
        yield from events.values()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("logstore_requests", "RPCs by method and status code", ["method", "code"], registry=r)
        self.latency = Histogram(
            "logstore_request_seconds", "RPC latency", ["method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.produced_records = Counter("logstore_produced_records", "Records appended", ["topic"], registry=r)
        self.produced_bytes = Counter("logstore_produced_bytes", "Batch bytes appended", ["topic"], registry=r)
        self.fetched_records = Counter(
            "logstore_fetched_records", "Offsets delivered by Fetch and Subscribe", ["topic"], registry=r
        )
        self.fetched_bytes = Counter("logstore_fetched_bytes", "Batch bytes delivered", ["topic"], registry=r)
        self.errors = Counter("logstore_errors", "Errors by reason", ["reason"], registry=r)
        self.subscriptions = Gauge("logstore_subscriptions_open", "Open Subscribe streams", registry=r)
        #: Per topic: [records in, bytes in, records out, bytes out] since start, for the
        #: console's rates (plain ints: reading them costs nothing).
        self.topic_totals: dict[str, list[int]] = {}

    def attach(self, broker: Broker) -> None:
        self.registry.register(_PartitionCollector(broker))
        self.registry.register(_ShareCollector(broker))

    def attach_cluster(self, cluster: Any) -> None:
        self.registry.register(_ClusterCollector(cluster))

    def _totals(self, topic: str) -> list[int]:
        totals = self.topic_totals.get(topic)
        if totals is None:
            totals = self.topic_totals[topic] = [0, 0, 0, 0]
        return totals

    def produced(self, topic: str, records: int, size: int) -> None:
        self.produced_records.labels(topic=topic).inc(records)
        self.produced_bytes.labels(topic=topic).inc(size)
        totals = self._totals(topic)
        totals[0] += records
        totals[1] += size

    def fetched(self, topic: str, records: int, size: int) -> None:
        if records > 0:
            self.fetched_records.labels(topic=topic).inc(records)
        self.fetched_bytes.labels(topic=topic).inc(size)
        totals = self._totals(topic)
        totals[2] += records
        totals[3] += size

    def forget_topic(self, topic: str) -> None:
        self.topic_totals.pop(topic, None)
        for metric in (self.produced_records, self.produced_bytes, self.fetched_records, self.fetched_bytes):
            try:
                metric.remove(topic)
            except KeyError:
                pass

    def exposition(self, accept: str = "", names: list[str] | None = None) -> tuple[bytes, str]:
        """The scrape answer for an ``Accept`` header: (body, content type). Prometheus text
        format unless OpenMetrics is asked for; ``names`` restricts it (``?name[]=``)."""
        encoder, content_type = choose_encoder(accept)
        registry = self.registry.restricted_registry(names) if names else self.registry
        return encoder(registry), content_type
