"""``share_channel``: a ``ShareConsumer``'s stream over the broker's stream port — the same
deliveries as over gRPC, the typed errors of its refusals, and gRPC when there is no port or it
speaks something else."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from logstore.api.v1 import share_pb2
from logstore.client import Admin, Producer, ShareConsumer, share_channel
from logstore.client.share_channel import ShareChannel
from logstore.errors import NotAuthenticatedError
from tests.broker_fixture import BrokerProcess
from tests.client.test_produce_channel import served
from tests.server.helpers import wait_until
from tests.server.test_security import ADMIN_TOKEN, SECURITY


def drain(address: str, group: str, topic: str, **options: object) -> list[bytes]:
    """Every record the group still has, each acknowledged."""
    got: list[bytes] = []
    with ShareConsumer(address, group, topic, max_records=100, prefetch=1, **options) as consumer:  # type: ignore[arg-type]
        while records := consumer.poll(timeout=0.5):
            got += [r.value for r in records if r.value is not None]
            consumer.acknowledge(records)
        consumer.commit()
    return got


def fill(address: str, topic: str, count: int) -> None:
    with Admin(address) as admin:
        admin.create_topic(topic, 2)
    with Producer(address) as producer:
        for partition in (0, 1):
            producer.send_batch(topic, [b"%d-%d" % (partition, i) for i in range(count)],
                                partition=partition).result(10)


def test_a_share_consumer_polls_over_the_stream_port_and_over_grpc_without_it(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill(broker.address, "jobs", 300)
    with ShareConsumer(broker.address, "g1", "jobs") as consumer:
        consumer.connect(10)
        assert isinstance(consumer._stream, ShareChannel)
    assert sorted(drain(broker.address, "g1", "jobs")) == sorted(b"%d-%d" % (p, i) for p in (0, 1) for i in range(300))
    wait_until(lambda: served(broker, "ShareChannel") == 2)  # (counted when the broker sees it end)
    assert served(broker, "ShareStream") == 0
    monkeypatch.setattr(share_channel, "CHANNEL_SHARE", False)
    assert len(drain(broker.address, "g2", "jobs")) == 600
    wait_until(lambda: served(broker, "ShareStream") == 1)


def test_a_broker_without_a_stream_port_serves_the_share_stream_through_grpc(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    broker = broker_factory(args=["--stream-port", "-1"])
    fill(broker.address, "jobs", 50)
    assert len(drain(broker.address, "g", "jobs")) == 100
    wait_until(lambda: served(broker, "ShareStream") == 1)
    assert served(broker, "ShareChannel") == 0


def test_a_restarted_broker_is_found_on_its_new_stream_port_and_nothing_accepted_comes_back(
    broker: BrokerProcess,
) -> None:
    fill(broker.address, "jobs", 200)
    seen: list[bytes] = []
    with ShareConsumer(broker.address, "g", "jobs", max_records=100) as consumer:
        records = consumer.poll(timeout=5)
        seen += [r.value for r in records if r.value is not None]
        consumer.acknowledge(records)
        consumer.commit()
        broker.restart()  # a new ephemeral stream port; the channel breaks
        for _ in range(50):
            try:
                records = consumer.poll(timeout=0.5)
            except Exception:  # noqa: BLE001 - the broken channel's poll: Unavailable, then on
                continue
            if not records:
                break
            seen += [r.value for r in records if r.value is not None]
            consumer.acknowledge(records)
        consumer.commit()
        assert isinstance(consumer._stream, ShareChannel) and not consumer._stream.broken
    assert sorted(seen) == sorted(b"%d-%d" % (p, i) for p in (0, 1) for i in range(200))  # once each


def test_a_refused_token_on_the_channel_is_the_typed_error(
    broker_factory: Callable[..., BrokerProcess], tmp_path: Path,
) -> None:
    (tmp_path / "security.toml").write_text(SECURITY)
    broker = broker_factory(args=["--security-file", str(tmp_path / "security.toml")])
    with ShareConsumer(broker.address, "g", "t", token=ADMIN_TOKEN) as consumer:
        port = consumer._router.metadata.stream_port(broker.address)
    assert port
    channel = ShareChannel.open(broker.address, port, "not-a-token", broker.address)
    assert channel is not None
    channel.send(share_pb2.ShareFetchRequest(group_id="g", member_id=uuid.uuid4().hex, topics=["t"]))
    with pytest.raises(NotAuthenticatedError):
        channel.receive()
    assert channel.broken


def test_a_stream_port_that_speaks_something_else_leaves_the_consumer_on_grpc(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill(broker.address, "jobs", 20)
    grpc_port = int(broker.address.rpartition(":")[2])  # HTTP/2, not this protocol
    got: list[bytes] = []
    with ShareConsumer(broker.address, "g", "jobs") as consumer:
        monkeypatch.setattr(consumer._router.metadata, "stream_port", lambda address, fresh=False: grpc_port)
        for _ in range(5):
            try:
                records = consumer.poll(timeout=1)
            except Exception:  # noqa: BLE001 - the one poll on the wrong port: Unavailable
                continue
            got += [r.value for r in records if r.value is not None]
            consumer.acknowledge(records)
            if len(got) == 40:
                break
        assert not isinstance(consumer._stream, ShareChannel)
    assert len(got) == 40
