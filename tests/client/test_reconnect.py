"""Producer and consumer across a broker restart, and against no broker at all."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from logstore.client import Admin, Consumer, Producer
from logstore.errors import UnavailableError
from tests.broker_fixture import BrokerProcess, free_port
from tests.client.helpers import read_all


def test_producer_retries_across_a_broker_restart(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("restarts", 1)
    with Producer(broker.address, retries=50, retry_backoff_ms=50, retry_backoff_max_ms=200,
                  acks="all") as producer:
        before = [producer.send("restarts", b"before-%d" % i) for i in range(100)]
        producer.flush()
        broker.stop()
        during = [producer.send("restarts", b"during-%d" % i) for i in range(100)]
        restart = threading.Timer(0.5, broker.start)
        restart.start()
        producer.flush(timeout=60)
        restart.join()
        after = producer.send("restarts", b"after").result(30)
    assert all(f.exception() is None for f in before + during)
    assert after.offset >= 200
    values = [r.value for r in read_all(broker.address, "restarts", 201)]
    expected = [b"before-%d" % i for i in range(100)] + [b"during-%d" % i for i in range(100)]
    assert values[:200] == expected  # at-least-once: nothing lost, in order
    assert values[-1] == b"after"


def test_consumer_carries_on_after_a_broker_restart(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("restarts", 1)
    with Producer(broker.address) as producer:
        producer.send_batch("restarts", [b"a", b"b"], partition=0).result(10)
    with Consumer(broker.address, auto_offset_reset="earliest", retries=50,
                  retry_backoff_ms=50, retry_backoff_max_ms=200, fetch_max_wait_ms=100) as consumer:
        consumer.assign("restarts")
        assert [r.value for r in consumer.poll(timeout=5)] == [b"a", b"b"]
        broker.restart()
        with Producer(broker.address) as producer:
            producer.send("restarts", b"c", partition=0).result(10)
        got: list[bytes | None] = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            got = [r.value for r in consumer.poll(timeout=1)]
    assert got == [b"c"]


def test_no_broker_is_unavailable_for_admin() -> None:
    address = f"127.0.0.1:{free_port()}"
    with Admin(address, timeout=2) as admin, pytest.raises(UnavailableError) as caught:
        admin.list_topics()
    assert address in caught.value.message
    assert caught.value.reason == "UNAVAILABLE"


def test_no_broker_fails_the_records_after_the_retries() -> None:
    address = f"127.0.0.1:{free_port()}"
    with Producer(address, retries=1, retry_backoff_ms=10) as producer, \
            pytest.raises(UnavailableError):
        producer.send("t", b"v")  # the first send to a topic reads its metadata


def test_no_broker_makes_poll_raise_after_the_retries(broker_factory: Callable[..., BrokerProcess]) -> None:
    broker = broker_factory()
    with Admin(broker.address) as admin:
        admin.create_topic("gone", 1)
    with Consumer(broker.address, auto_offset_reset="earliest", retries=2,
                  retry_backoff_ms=10, fetch_max_wait_ms=50) as consumer:
        consumer.assign("gone")
        consumer.poll(timeout=0.2)
        broker.kill()
        with pytest.raises(UnavailableError):
            for _ in range(50):
                consumer.poll(timeout=0.5)
