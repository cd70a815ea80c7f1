"""``produce_channel``: a producer's ProduceStream over the broker's stream port, the typed errors
of its refusals, and gRPC when the broker has no stream port."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from logstore.client import Admin, Consumer, Producer, produce_channel
from logstore.errors import NotAuthenticatedError, NotAuthorizedError
from tests.broker_fixture import BrokerProcess
from tests.server.helpers import batch, produce_request
from tests.server.test_security import ADMIN_TOKEN, READER_TOKEN, SECURITY


def served(broker: BrokerProcess, method: str) -> float:
    """Calls of ``method`` the broker counted (its /metrics), whatever their code."""
    with urllib.request.urlopen(f"http://{broker.metrics_address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("logstore_requests_total{") and f'method="{method}"' in line)


def values(broker: BrokerProcess, topic: str, **options: str) -> list[bytes]:
    with Consumer(broker.address, **options) as consumer:
        return list(consumer.read_arrow(topic, isolation_level="read_committed").column("value").to_pylist())


def test_a_producer_writes_over_the_stream_port_and_over_grpc_without_it(
    broker_factory: Callable[..., BrokerProcess], monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = broker_factory()
    with Admin(broker.address) as admin:
        admin.create_topic("orders", 2)
    with Producer(broker.address) as producer:
        futures = [producer.send("orders", b"v%d" % i, partition=i % 2) for i in range(1_000)]
        producer.send_batch("orders", np.full((5_000, 100), 7, np.uint8), partition=0)
        producer.flush()
    assert [f.result(10).offset for f in futures[:4]] == [0, 0, 1, 1]
    assert served(broker, "ProduceChannel") == 1 and served(broker, "ProduceStream") == 0
    monkeypatch.setattr(produce_channel, "CHANNEL_PRODUCE", False)
    with Producer(broker.address) as producer:
        producer.send("orders", b"late", partition=1).result(10)
    assert served(broker, "ProduceStream") == 1
    with Consumer(broker.address) as consumer:
        assert consumer.read_arrow("orders").num_rows == 6_001


def test_idempotent_and_transactional_producers_use_the_channel(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("ledger", 1)
    with Producer(broker.address, enable_idempotence=True) as producer:
        producer.send_batch("ledger", [b"i%d" % i for i in range(100)], partition=0).result(10)
    with Producer(broker.address, transactional_id="ledger-writer") as producer:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send_batch("ledger", [b"kept"], partition=0)
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send_batch("ledger", [b"dropped"], partition=0)
        producer.abort_transaction()
    assert values(broker, "ledger") == [b"i%d" % i for i in range(100)] + [b"kept"]
    assert served(broker, "ProduceChannel") >= 2 and served(broker, "ProduceStream") == 0


def test_a_refused_token_or_write_is_the_typed_error(
    broker_factory: Callable[..., BrokerProcess], tmp_path: Path,
) -> None:
    (tmp_path / "security.toml").write_text(SECURITY)
    broker = broker_factory(args=["--security-file", str(tmp_path / "security.toml")])
    with Admin(broker.address, token=ADMIN_TOKEN) as admin:
        admin.create_topic("guarded", 1)
    with Producer(broker.address, token=ADMIN_TOKEN) as producer:
        producer.send("guarded", b"a", partition=0).result(10)
    with Producer(broker.address, token=READER_TOKEN, retries=0) as producer, \
            pytest.raises(NotAuthorizedError):
        producer.send("guarded", b"b", partition=0).result(10)
    with Producer(broker.address, token="not-a-token", retries=0) as producer, \
            pytest.raises(NotAuthenticatedError):
        producer.send("guarded", b"c", partition=0).result(10)
    # those were refused at the metadata call, through gRPC; on the channel itself:
    with Consumer(broker.address, token=ADMIN_TOKEN) as consumer:
        port = consumer._cluster.stream_port(broker.address)
    request = produce_request("guarded", batch([b"d"])).SerializeToString()

    def first_answer(token: str) -> object:
        method = produce_channel.ChannelMethod(broker.address, None, lambda address, fresh: port, token)
        call = method(iter([request]))
        try:
            return next(call)
        except Exception as exc:  # noqa: BLE001 - the refusal is what is looked at
            return exc
        finally:
            call.cancel()

    assert isinstance(first_answer("not-a-token"), NotAuthenticatedError)
    assert first_answer(READER_TOKEN).error.reason == "NOT_AUTHORIZED"
    assert values(broker, "guarded", token=ADMIN_TOKEN) == [b"a"]


def test_a_stream_port_that_speaks_something_else_leaves_the_producer_on_grpc(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("detour", 1)
    grpc_port = int(broker.address.rpartition(":")[2])  # HTTP/2, not this protocol
    with Producer(broker.address, retry_backoff_ms=10) as producer:
        monkeypatch.setattr(producer._metadata, "stream_port", lambda address, fresh=False: grpc_port)
        assert producer.send("detour", b"a", partition=0).result(20).offset == 0
        assert producer.send("detour", b"b", partition=0).result(20).offset == 1
    assert served(broker, "ProduceStream") == 1
