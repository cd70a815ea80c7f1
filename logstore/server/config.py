"""Server settings: defaults, a TOML config file, and command-line overrides.

Example ``logstore.toml`` (every key optional; the README lists them all)::

    data_dir = "./data"
    listen = "127.0.0.1:7070"
    metrics_listen = "127.0.0.1:7071"   # "" to disable (/metrics and the web console)
    console = true                      # the web console beside /metrics (--no-console)
    console_writes = false              # without security_file: allow the console's write actions
    grace_period_s = 10
    log_format = "json"                 # or "text"
    log_level = "info"
    tls_cert = ""                       # PEM certificate chain; with tls_key enables TLS
    tls_key = ""
    tls_client_ca = ""                  # PEM CA: require client certificates (mutual TLS)
    security_file = ""                  # tokens and ACLs (see README: Security)
    stream_port = 0                     # table reads' Subscribe data channel: 0 ephemeral, -1 none

    [limits]
    max_topics = 10000
    max_partitions_per_topic = 1000
    max_request_bytes = 67108864
    max_fetch_bytes = 67108864
    max_subscribe_bytes = 16777216
    max_wait_ms = 30000
    max_subscriptions_per_connection = 64
    max_queued_request_bytes = 268435456  # produce bytes read and not yet answered, in total

    [topic_defaults]                    # defaults for topics created without these keys
    flush = "interval"
    flush_interval_ms = 1000

    [maintenance]                       # how often the storage maintenance thread works
    checkpoint_interval_ms = 10000
    retention_check_interval_ms = 30000
    compaction_interval_ms = 15000

    # a clustered broker (README: Cluster); without `cluster` the broker is a single node
    cluster = "etcd://127.0.0.1:2379"   # etcd endpoints
    broker_id = 1
    advertise = "127.0.0.2:7070"        # the address other brokers and clients use
    cluster_name = "default"
    replica_port = 0                    # followers' data channel: 0 an ephemeral port, -1 none

    [cluster_settings]                  # tunables of a clustered broker (README: Cluster)
    lease_ttl_ms = 3000
    replica_lag_time_ms = 10000
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logstore.broker import BrokerConfig
from logstore.cluster.config import ClusterConfig
from logstore.errors import InvalidConfigError
from logstore.storage import LogConfig
from logstore.storage.data_dir import Limits, MaintenanceIntervals

DEFAULT_LISTEN = "127.0.0.1:7070"
DEFAULT_METRICS_LISTEN = "127.0.0.1:7071"
DEFAULT_DATA_DIR = "./data"


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    listen: str = DEFAULT_LISTEN
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    #: The web console on the metrics listener (docs/console.md).
    console: bool = True
    #: Without a security file: whether the console offers write actions (create/delete topic,
    #: reset offsets, produce a test record). With one, admin rights decide.
    console_writes: bool = False
    grace_period_s: float = 10.0
    log_format: str = "json"
    log_level: str = "info"
    #: TLS: the server's certificate chain and key (PEM files); both or neither.
    tls_cert: str = ""
    tls_key: str = ""
    #: Mutual TLS: clients must present a certificate signed by this CA (PEM).
    tls_client_ca: str = ""
    #: Tokens and ACLs (see ``logstore.server.auth``); empty = no authentication.
    security_file: str = ""
    #: etcd endpoints ("etcd://h1:p1,h2:p2"); empty = a single-node broker.
    cluster: str = ""
    broker_id: int = -1
    #: host:port other brokers and clients reach this broker at (default: the listen address).
    advertise: str = ""
    cluster_name: str = "default"
    #: The replica data channel's port on the advertise host (followers fetch over it instead of
    #: gRPC ReplicaFetch; docs/cluster.md): 0 = an ephemeral port, -1 = none (gRPC only).
    replica_port: int = 0
    #: The Subscribe data channel's port on the listen host (``read_arrow`` and ``iter_arrow``
    #: streams without gRPC's copies; docs/frames.md): 0 = an ephemeral port, -1 = none. Not
    #: opened when the broker has TLS (``tls_cert``): TLS clients read through gRPC.
    stream_port: int = 0
    #: ClusterConfig tunables (lease_ttl_ms, replica_lag_time_ms, ...).
    cluster_settings: dict[str, Any] = field(default_factory=dict)
    broker: BrokerConfig = field(default_factory=BrokerConfig)

    def cluster_config(self, bound_listen: str) -> ClusterConfig | None:
        """The cluster settings, or None for a single-node broker."""
        if not self.cluster:
            return None
        if not 0 <= self.broker_id < 1 << 20:
            raise InvalidConfigError(
                "a clustered broker needs --broker-id between 0 and 1048575", key="broker_id",
                value=self.broker_id,
            )
        known = {f.name for f in dataclasses.fields(ClusterConfig)}
        fixed = {"etcd_endpoints", "broker_id", "advertise", "cluster_name", "replica_address", "stream_port"}
        for key in self.cluster_settings:
            if key not in known - fixed:
                raise InvalidConfigError(f"unknown cluster setting {key!r}", key=key)
        types = {f.name: f.type for f in dataclasses.fields(ClusterConfig)}
        settings: dict[str, Any] = {
            k: (str(v) if types[k] in (str, "str") else int(v)) for k, v in self.cluster_settings.items()
        }
        if not -1 <= self.replica_port < 1 << 16:
            raise InvalidConfigError(
                f"--replica-port must be a port, 0 (ephemeral) or -1 (none), not {self.replica_port}",
                key="replica_port", value=self.replica_port,
            )
        advertise = self.advertise or bound_listen
        if advertise.rpartition(":")[0] in ("0.0.0.0", "", "[::]"):
            raise InvalidConfigError(
                f"--advertise must name an address others can reach, not {advertise!r}", key="advertise"
            )
        return ClusterConfig(
            etcd_endpoints=ClusterConfig.parse_endpoints(self.cluster), broker_id=self.broker_id,
            advertise=advertise, cluster_name=self.cluster_name, **settings,
        )

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> ServerConfig:
        """Defaults, then the TOML file at ``path``, then ``overrides`` (None values ignored)."""
        values: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        maintenance: dict[str, Any] = {}
        topic_defaults: dict[str, Any] = {}
        if path is not None:
            try:
                with open(path, "rb") as file:
                    document = tomllib.load(file)
            except FileNotFoundError:
                raise InvalidConfigError(f"config file {path} does not exist", key="config") from None
            except OSError as exc:
                raise InvalidConfigError(f"config file {path}: {exc.strerror}", key="config") from None
            except tomllib.TOMLDecodeError as exc:
                raise InvalidConfigError(f"config file {path}: {exc}", key="config") from None
            limits = dict(document.pop("limits", {}))
            topic_defaults = dict(document.pop("topic_defaults", {}))
            maintenance = dict(document.pop("maintenance", {}))
            if "cluster_settings" in document:
                values["cluster_settings"] = dict(document.pop("cluster_settings"))
            values.update(document)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)} - {"broker"}
        for key in values:
            if key not in known:
                raise InvalidConfigError(f"unknown server config key {key!r}", key=key)
        for key in ("console", "console_writes"):
            if key in values and not isinstance(values[key], bool):
                raise InvalidConfigError(f"{key} must be true or false, not {values[key]!r}", key=key)
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        port = values.get("stream_port", 0)
        if isinstance(port, bool) or not isinstance(port, int) or not -1 <= port < 1 << 16:
            raise InvalidConfigError(
                f"--stream-port must be a port, 0 (ephemeral) or -1 (none), not {port!r}",
                key="stream_port", value=port,
            )
        broker_fields = {f.name for f in dataclasses.fields(BrokerConfig)} - {"topic_defaults", "limits"}
        limit_fields = {f.name for f in dataclasses.fields(Limits)}
        for key in limits:
            if key not in broker_fields | limit_fields:
                raise InvalidConfigError(f"unknown limit {key!r}", key=key)
        maintenance_fields = {f.name for f in dataclasses.fields(MaintenanceIntervals)}
        for key in maintenance:
            if key not in maintenance_fields:
                raise InvalidConfigError(f"unknown maintenance key {key!r}", key=key)
        broker = BrokerConfig(
            topic_defaults=LogConfig.from_dict(topic_defaults),
            maintenance=MaintenanceIntervals(**{k: int(v) for k, v in maintenance.items()}),
            limits=Limits(**{k: int(v) for k, v in limits.items() if k in limit_fields}),
            **{k: int(v) for k, v in limits.items() if k in broker_fields},
        )
        return cls(**values, broker=broker)


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidConfigError(f"expected HOST:PORT, not {address!r}", key="listen", value=address)
    return host.strip("[]") or "127.0.0.1", int(port)
