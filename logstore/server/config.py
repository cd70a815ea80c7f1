"""Server settings: defaults, a TOML config file, and command-line overrides.

Example ``logstore.toml`` (every key optional; the README lists them all)::

    data_dir = "./data"
    listen = "127.0.0.1:7070"
    metrics_listen = "127.0.0.1:7071"   # "" to disable
    grace_period_s = 10
    log_format = "json"                 # or "text"
    log_level = "info"
    tls_cert = ""                       # PEM certificate chain; with tls_key enables TLS
    tls_key = ""
    tls_client_ca = ""                  # PEM CA: require client certificates (mutual TLS)
    security_file = ""                  # tokens and ACLs (see README: Security)

    [limits]
    max_topics = 10000
    max_partitions_per_topic = 1000
    max_request_bytes = 67108864
    max_fetch_bytes = 67108864
    max_subscribe_bytes = 4194304
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
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logstore.broker import BrokerConfig
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
    broker: BrokerConfig = field(default_factory=BrokerConfig)

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
            values.update(document)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)} - {"broker"}
        for key in values:
            if key not in known:
                raise InvalidConfigError(f"unknown server config key {key!r}", key=key)
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
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
