"""Broker settings: limits and defaults that are not per topic. Documented in the README."""

from __future__ import annotations

from dataclasses import dataclass, field

from logstore.storage import LogConfig
from logstore.storage.data_dir import Limits, MaintenanceIntervals

MIB = 1 << 20


@dataclass(frozen=True)
class BrokerConfig:
    #: Defaults for topics created without those keys.
    topic_defaults: LogConfig = field(default_factory=LogConfig)
    limits: Limits = field(default_factory=Limits)
    #: How often the storage maintenance thread checkpoints, applies retention, compacts.
    maintenance: MaintenanceIntervals = field(default_factory=MaintenanceIntervals)
    #: Largest request (and so largest produce payload) the server accepts.
    max_request_bytes: int = 64 * MIB
    #: Largest Fetch response; also the cap on a request's max_bytes.
    max_fetch_bytes: int = 64 * MIB
    #: Largest message a Subscribe stream sends (at least one whole batch anyway).
    max_subscribe_bytes: int = 16 * MIB
    #: Longest long poll a Fetch may ask for.
    max_wait_ms: int = 30_000
    #: Open Subscribe streams per client connection (peer).
    max_subscriptions_per_connection: int = 64
    #: Partitions of the internal __consumer_offsets topic.
    offsets_topic_partitions: int = 4
    #: How often group members are told to heartbeat.
    group_heartbeat_interval_ms: int = 500
    #: How often the broker checks for expired members and timed-out transactions.
    housekeeping_interval_ms: int = 100
    #: How often the coordinators' state (committed offsets, transactions) is snapshotted while
    #: the broker runs, if it changed; a start-up replays only the records after the snapshot.
    state_snapshot_interval_ms: int = 10_000
    #: Produce requests waiting for an fsync (acks=all, flush=always) may hold this many bytes;
    #: more wait (slower acks), and after backpressure_timeout_ms get RESOURCE_EXHAUSTED.
    max_unflushed_bytes: int = 256 * MIB
    #: The same, per partition (so one hot partition cannot take the whole budget).
    max_unflushed_bytes_per_partition: int = 64 * MIB
    #: Produce bytes one client connection may have in the broker at once (being appended or
    #: waiting for an fsync); more wait, then get RESOURCE_EXHAUSTED like the budgets above.
    max_inflight_bytes_per_connection: int = 64 * MIB
    #: Produce request bytes read from the network and not yet answered, all connections
    #: together (Kafka's queued.max.request.bytes): at the cap no more produce requests are read
    #: (see backpressure.QueuedRequests), so the broker's memory follows this, not what clients send.
    max_queued_request_bytes: int = 256 * MIB
    backpressure_timeout_ms: int = 30_000
    #: RPCs served at once (streams included); more are refused with RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 4096
