"""Client settings: the server address, and the options of producers and consumers.

Options are keyword arguments of ``Producer`` and ``Consumer``, validated once here into frozen
dataclasses; nothing on the hot path re-reads them. Names follow Kafka's client configs
(``linger.ms`` -> ``linger_ms``), with byte sizes ending in ``_bytes``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from logstore.api.v1 import common_pb2, records_pb2

#: The address every client (and CLI command) uses unless told otherwise.
DEFAULT_SERVER = "127.0.0.1:7070"
#: Environment variable that overrides ``DEFAULT_SERVER``.
SERVER_ENV = "LOGSTORE_SERVER"

#: gRPC message limit in both directions: requests and fetches of up to 64 MiB.
MAX_MESSAGE_BYTES = 64 << 20
#: Room left in a message for the request's own fields around the batches.
MAX_REQUEST_BYTES = MAX_MESSAGE_BYTES - (64 << 10)
#: Idempotence (and transactions) need ``max_in_flight`` (requests) of at most this.
MAX_IN_FLIGHT_IDEMPOTENT = 5
#: The broker remembers the last 20 batches per producer and partition (``BATCH_CACHE``), so an
#: idempotent producer keeps at most 20 batches of a partition unanswered: at the defaults that
#: is 5 requests of 4 batches of 1 MiB, the whole ``max_in_flight`` window, even when every
#: batch goes to one partition (with 5, one partition had 5 MiB in flight and the broker waited
#: for the client between requests: 1 KiB ``send_batch`` ran ~20 % slower).
MAX_UNANSWERED_BATCHES = 20

ACKS = {
    "0": records_pb2.ACKS_NONE,
    "1": records_pb2.ACKS_LEADER,
    "all": records_pb2.ACKS_ALL,
    "-1": records_pb2.ACKS_ALL,
}
CODECS = ("none", "zstd", "lz4")
OFFSET_RESETS = ("earliest", "latest", "error")
ASSIGNORS = ("", "sticky", "range", "roundrobin")
ISOLATION_LEVELS = {
    "read_uncommitted": common_pb2.READ_UNCOMMITTED,
    "read_committed": common_pb2.READ_COMMITTED,
}


def resolve_server(server: str | None = None) -> str:
    """``server``, else ``$LOGSTORE_SERVER``, else ``DEFAULT_SERVER``. Either may list several
    bootstrap addresses, comma-separated (see ``bootstrap_addresses``)."""
    if server:
        return server
    return os.environ.get(SERVER_ENV) or DEFAULT_SERVER


def bootstrap_addresses(server: str) -> list[str]:
    """``"h1:7070,h2:7070"`` -> ``["h1:7070", "h2:7070"]`` (blanks and repeats dropped); the
    client tries them in order, then round again, until one answers."""
    addresses = list(dict.fromkeys(part.strip() for part in server.split(",") if part.strip()))
    if not addresses:
        raise ValueError(f"no broker address in {server!r}: expected HOST:PORT[,HOST:PORT...]")
    return addresses


def acks_value(acks: int | str) -> int:
    """0, 1, "all" (or -1) -> the wire ``Acks`` enum."""
    try:
        return ACKS[str(acks).lower()]
    except KeyError:
        raise ValueError(f"acks must be 0, 1 or 'all', not {acks!r}") from None


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    #: "all" waits for the topic's flush policy, 1 for the append, 0 for nothing.
    acks: int | str = "all"
    #: How long a batch that is not full waits for more records while a produce request is in
    #: flight (it goes as soon as the answer comes, or after ``linger_ms``, whichever is first).
    #: With nothing in flight a batch is sent at once (Nagle's rule): an idle producer adds no
    #: delay, and a busy one batches for as long as its requests take. When the one request in
    #: flight is late (a request of at most 64 KiB older than twice the recent round trip), the
    #: open batches go as a second request (``client/hold.py``).
    linger_ms: float = 5.0
    #: True: every batch waits ``linger_ms`` even when nothing is in flight (Kafka's
    #: ``linger.ms``): fewer, larger requests at low rates, at the cost of latency. None
    #: (default): True for a transactional producer, whose records nobody reads before the
    #: commit (which sends everything at once: a small transaction is one request), else False.
    linger_when_idle: bool | None = None
    #: A partition's batch is sent once it holds this many bytes.
    batch_bytes: int = 1 << 20
    #: Batches of several partitions share a request up to this size.
    max_request_bytes: int = 4 << 20
    #: Requests sent on the produce stream and not yet answered.
    max_in_flight: int = 5
    #: Compression of each batch's record section: none, zstd or lz4.
    codec: str = "none"
    #: Attempts to re-send after UNAVAILABLE before the records fail.
    retries: int = 10
    retry_backoff_ms: float = 100.0
    retry_backoff_max_ms: float = 2000.0
    #: Records waiting to be sent, in bytes; ``send`` blocks above it.
    buffer_bytes: int = 64 << 20
    #: Metadata (partition counts and leaders) is re-read this often, and at once when a
    #: partition is unknown or a broker answers NOT_LEADER or cannot be reached.
    metadata_max_age_ms: float = 300_000.0
    #: Unary calls (metadata) give up after this long.
    request_timeout_ms: float = 30_000.0
    #: Idempotence: the broker hands out a producer id, batches carry per-partition sequence
    #: numbers, and a retried batch is never appended twice. None (default) = on when
    #: ``acks="all"`` and ``max_in_flight <= 5``; True insists on it (and on those settings).
    enable_idempotence: bool | None = None
    #: Makes the producer transactional (implies idempotence): a stable id per producer
    #: instance; a new instance with the same id fences the old one.
    transactional_id: str | None = None
    #: The broker aborts a transaction open longer than this.
    transaction_timeout_ms: int = 60_000

    def __post_init__(self) -> None:
        acks_value(self.acks)
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, not {self.codec!r}")
        _positive(self, "batch_bytes", "max_request_bytes", "max_in_flight", "buffer_bytes",
                  "transaction_timeout_ms")
        _non_negative(self, "linger_ms", "retries", "retry_backoff_ms", "retry_backoff_max_ms")
        if self.max_request_bytes > MAX_REQUEST_BYTES:
            raise ValueError(f"max_request_bytes must be at most {MAX_REQUEST_BYTES} (a gRPC "
                             f"message is at most {MAX_MESSAGE_BYTES}), not {self.max_request_bytes}")
        if self.batch_bytes > self.max_request_bytes:
            raise ValueError(f"batch_bytes ({self.batch_bytes}) must not exceed max_request_bytes "
                             f"({self.max_request_bytes}): a batch travels in one request")
        if self.enable_idempotence or self.transactional_id:
            what = "a transactional producer" if self.transactional_id else "idempotence"
            if self.enable_idempotence is False:
                raise ValueError("a transactional producer needs enable_idempotence")
            if self.acks_wire != records_pb2.ACKS_ALL:
                raise ValueError(f"{what} needs acks='all', not {self.acks!r}")
            if self.max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT:
                raise ValueError(f"{what} needs max_in_flight <= {MAX_IN_FLIGHT_IDEMPOTENT}, "
                                 f"not {self.max_in_flight}")

    @property
    def acks_wire(self) -> int:
        return acks_value(self.acks)

    @property
    def idempotent(self) -> bool:
        """Whether batches carry a producer id and sequence numbers."""
        if self.transactional_id:
            return True
        if self.enable_idempotence is None:
            return (self.acks_wire == records_pb2.ACKS_ALL
                    and self.max_in_flight <= MAX_IN_FLIGHT_IDEMPOTENT)
        return self.enable_idempotence


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    #: Where to start when a partition has no position, or its position fell out of the log:
    #: "earliest", "latest", or "error" (raise ``OffsetOutOfRangeError``).
    auto_offset_reset: str = "latest"
    #: Join this consumer group with ``subscribe`` (the broker assigns partitions), or commit
    #: offsets for it with manually ``assign``-ed partitions. None: no group.
    group_id: str | None = None
    #: Static membership: a stable id per instance (e.g. a pod name). A static member that
    #: closes keeps its partitions for ``session_timeout_ms``, so a quick restart moves nothing.
    group_instance_id: str | None = None
    #: Commit, at the start of a later ``poll()`` (at most every ``auto_commit_interval_ms``),
    #: before partitions are revoked, and on ``close()``, the positions *after the records that
    #: earlier polls returned*. See ``Consumer`` for what that guarantees.
    enable_auto_commit: bool = True
    auto_commit_interval_ms: float = 5_000.0
    #: The broker evicts the member when no heartbeat arrives for this long.
    session_timeout_ms: int = 10_000
    #: The broker evicts the member when ``poll`` is not called for this long (a stuck
    #: consumer): the group's rebalance timeout.
    max_poll_interval_ms: int = 300_000
    #: "sticky" (the broker's default), "range" or "roundrobin"; "" leaves the group's as is.
    assignor: str = ""
    #: Long-poll: the broker answers a fetch after this long even with less than min bytes.
    fetch_max_wait_ms: int = 500
    fetch_min_bytes: int = 1
    #: Bytes per fetch over all partitions (at least one whole batch is returned anyway).
    fetch_max_bytes: int = 8 << 20
    #: Bytes per partition per fetch; 0 = ``fetch_max_bytes``.
    max_partition_fetch_bytes: int = 0
    #: ``poll()`` returns at most this many records by default.
    max_poll_records: int = 100_000
    isolation_level: str = "read_uncommitted"
    #: Iteration stops after this long without a record; None iterates forever.
    consumer_timeout_ms: float | None = None
    #: How records arrive without a group: "subscribe" (the broker pushes batches over one
    #: ``Subscribe`` stream per partition — the fastest), "fetch" (a long-poll ``Fetch`` per
    #: batch), or "auto" (subscribe for up to ``max_subscribed_partitions`` partitions). Group
    #: members always fetch: their requests carry the member epoch.
    fetch_mode: str = "auto"
    max_subscribed_partitions: int = 32
    #: Consecutive UNAVAILABLE fetches tolerated before ``poll`` raises.
    retries: int = 10
    retry_backoff_ms: float = 100.0
    retry_backoff_max_ms: float = 2000.0
    request_timeout_ms: float = 30_000.0
    #: In a cluster, partition leaders are re-read this often (and at once after NOT_LEADER or
    #: a broken connection).
    metadata_max_age_ms: float = 300_000.0

    def __post_init__(self) -> None:
        if self.auto_offset_reset not in OFFSET_RESETS:
            raise ValueError(
                f"auto_offset_reset must be one of {OFFSET_RESETS}, not {self.auto_offset_reset!r}"
            )
        if self.isolation_level not in ISOLATION_LEVELS:
            raise ValueError(
                f"isolation_level must be one of {sorted(ISOLATION_LEVELS)}, "
                f"not {self.isolation_level!r}"
            )
        if self.fetch_mode not in ("auto", "subscribe", "fetch"):
            raise ValueError(f"fetch_mode must be auto, subscribe or fetch, not {self.fetch_mode!r}")
        if self.group_id is not None and not self.group_id:
            raise ValueError("group_id must not be empty")
        if self.assignor not in ASSIGNORS:
            raise ValueError(f"assignor must be one of {ASSIGNORS}, not {self.assignor!r}")
        _positive(self, "fetch_max_bytes", "max_poll_records", "session_timeout_ms",
                  "max_poll_interval_ms")
        _non_negative(self, "auto_commit_interval_ms", "fetch_max_wait_ms", "fetch_min_bytes", "max_partition_fetch_bytes",
                      "retries", "retry_backoff_ms", "retry_backoff_max_ms")


def build(cls: type[Any], options: dict[str, Any]) -> Any:
    """``cls(**options)`` with a helpful message for an unknown option."""
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(known))}")
    return cls(**options)


def backoff_seconds(attempt: int, base_ms: float, max_ms: float) -> float:
    """Exponential backoff for retry ``attempt`` (1, 2, ...), capped, with +-20% jitter."""
    import random

    delay = min(max_ms, base_ms * (2 ** max(0, attempt - 1)))
    return delay * random.uniform(0.8, 1.2) / 1000.0


def _positive(config: object, *names: str) -> None:
    for name in names:
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, not {getattr(config, name)!r}")


def _non_negative(config: object, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must not be negative, not {getattr(config, name)!r}")


#: Environment variables that supply credentials when no option does.
TOKEN_ENV = "LOGSTORE_TOKEN"
TLS_CA_ENV = "LOGSTORE_TLS_CA"
TLS_CERT_ENV = "LOGSTORE_TLS_CERT"
TLS_KEY_ENV = "LOGSTORE_TLS_KEY"


@dataclass(frozen=True)
class Credentials:
    """How a client proves who it is: TLS (``tls_ca``: PEM file of the CA to trust; with
    ``tls_cert``/``tls_key`` for mutual TLS) and a bearer ``token``. Each falls back to its
    environment variable (``LOGSTORE_TLS_CA``, ``LOGSTORE_TLS_CERT``, ``LOGSTORE_TLS_KEY``,
    ``LOGSTORE_TOKEN``)."""

    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None

    @classmethod
    def take(cls, options: dict[str, Any]) -> Credentials:
        """Pop the credential options out of a client's keyword options."""
        return cls(
            options.pop("tls_ca", None) or os.environ.get(TLS_CA_ENV) or None,
            options.pop("tls_cert", None) or os.environ.get(TLS_CERT_ENV) or None,
            options.pop("tls_key", None) or os.environ.get(TLS_KEY_ENV) or None,
            options.pop("token", None) or os.environ.get(TOKEN_ENV) or None,
        )

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)
