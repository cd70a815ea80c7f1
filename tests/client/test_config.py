"""Client options: the server address and producer/consumer settings."""

from __future__ import annotations

import pytest

from logstore.api.v1 import records_pb2
from logstore.client.config import (
    DEFAULT_SERVER,
    SERVER_ENV,
    ConsumerConfig,
    ProducerConfig,
    acks_value,
    backoff_seconds,
    build,
    resolve_server,
)


def test_the_default_server_is_loopback_7070(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVER_ENV, raising=False)
    assert resolve_server(None) == DEFAULT_SERVER == "127.0.0.1:7070"


def test_the_environment_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVER_ENV, "10.0.0.1:9000")
    assert resolve_server(None) == "10.0.0.1:9000"
    assert resolve_server("host:1") == "host:1"


@pytest.mark.parametrize(("acks", "wire"), [
    (0, records_pb2.ACKS_NONE), ("0", records_pb2.ACKS_NONE), (1, records_pb2.ACKS_LEADER),
    ("all", records_pb2.ACKS_ALL), ("ALL", records_pb2.ACKS_ALL), (-1, records_pb2.ACKS_ALL),
])
def test_acks_values(acks: object, wire: int) -> None:
    assert acks_value(acks) == wire  # type: ignore[arg-type]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        ProducerConfig(acks=2)
    with pytest.raises(ValueError):
        ProducerConfig(codec="gzip")
    with pytest.raises(ValueError):
        ProducerConfig(batch_bytes=0)
    with pytest.raises(ValueError):
        ConsumerConfig(auto_offset_reset="none")
    with pytest.raises(TypeError, match="lingr_ms"):
        build(ProducerConfig, {"lingr_ms": 5})


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    assert 0.08 <= backoff_seconds(1, 100, 1000) <= 0.12
    assert 0.32 <= backoff_seconds(3, 100, 1000) <= 0.48
    assert 0.8 <= backoff_seconds(10, 100, 1000) <= 1.2


@pytest.mark.parametrize("options", [
    {"batch_bytes": 8 << 20},  # above the default max_request_bytes (4 MiB)
    {"max_request_bytes": 64 << 20, "batch_bytes": 1 << 20},  # no room for the message's fields
])
def test_a_batch_must_fit_in_one_request(options: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="batch_bytes|max_request_bytes"):
        ProducerConfig(**options)


def test_a_large_batch_with_a_matching_request_size_is_accepted() -> None:
    config = ProducerConfig(batch_bytes=16 << 20, max_request_bytes=16 << 20)
    assert config.batch_bytes == config.max_request_bytes
