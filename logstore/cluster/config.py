"""Cluster settings of one broker (``logstore serve --cluster ...``)."""

from __future__ import annotations

from dataclasses import dataclass

from logstore.errors import InvalidConfigError

DEFAULT_CLUSTER_NAME = "default"


@dataclass(frozen=True)
class ClusterConfig:
    #: etcd endpoints, "host:port,host:port" (the etcd:// prefix of --cluster stripped).
    etcd_endpoints: str
    broker_id: int
    #: host:port other brokers and clients use to reach this broker.
    advertise: str
    cluster_name: str = DEFAULT_CLUSTER_NAME
    #: The membership lease: a broker that misses renewals for this long is dead.
    lease_ttl_ms: int = 3000
    #: A follower that has not caught up with the leader's log end for this long leaves the ISR.
    replica_lag_time_ms: int = 10_000
    #: Long poll of a follower's fetch.
    replica_fetch_max_wait_ms: int = 500
    replica_fetch_max_bytes: int = 8 << 20
    #: Copies of each partition when CreateTopic leaves replication_factor at 0 (capped by the
    #: number of live brokers).
    default_replication_factor: int = 3
    #: SIGTERM: how long the broker waits for the controller to move its leaderships away.
    controlled_shutdown_timeout_ms: int = 10_000
    #: Bearer token this broker presents to the others (a principal with the replica right).
    inter_broker_token: str = ""
    #: CA (PEM) to verify other brokers' TLS certificates; "" = plaintext between brokers.
    inter_broker_tls_ca: str = ""
    #: host:port of this broker's replica data channel, advertised in its registration ("" =
    #: none: its followers fetch over gRPC). Set by the server once the channel listens.
    replica_address: str = ""
    #: The port of this broker's Subscribe data channel on its advertise host, advertised in
    #: its registration (0 = none). Set by the server once the channel listens.
    stream_port: int = 0

    @property
    def prefix(self) -> str:
        return f"/logstore/{self.cluster_name}/"

    @classmethod
    def parse_endpoints(cls, url: str) -> str:
        """'etcd://h1:p1,h2:p2' (or without the scheme) -> 'h1:p1,h2:p2'."""
        rest = url.removeprefix("etcd://")
        endpoints = [e.strip() for e in rest.split(",") if e.strip()]
        for endpoint in endpoints:
            host, sep, port = endpoint.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise InvalidConfigError(
                    f"--cluster expects etcd://HOST:PORT[,HOST:PORT...], not {url!r}", key="cluster", value=url
                )
        if not endpoints:
            raise InvalidConfigError("--cluster names no etcd endpoint", key="cluster", value=url)
        return ",".join(endpoints)
