"""SIGTERM: nothing acknowledged is lost, the shutdown is marked clean, waiters are let go, and
requests that arrive meanwhile are refused with UNAVAILABLE."""

from __future__ import annotations

import queue
import signal
import threading
import time

import grpc

from logstore.api.v1 import admin_pb2, records_pb2
from tests.server.helpers import (
    TIMEOUT_S,
    batch,
    connect,
    create_topic,
    failure,
    log_ends,
    produce_request,
    read_all,
)

CLEAN_SHUTDOWN_FILE = ".clean_shutdown"


def _produce_until_refused(stub, topic, partition, acked, stop_at):
    """Produce acks=all batches of 5 until the broker refuses; record what it acknowledged."""
    for n in range(100_000):
        if time.monotonic() > stop_at:
            return
        batch_values = [f"{topic}/{partition}/{n}/{i}".encode() for i in range(5)]
        try:
            response = stub.Produce(
                produce_request(topic, batch(batch_values), partition, records_pb2.ACKS_ALL), timeout=TIMEOUT_S
            )
        except grpc.RpcError:
            return
        result = response.results[0]
        if result.HasField("error"):
            return
        acked.append((result.base_offset, batch_values))


def test_sigterm_under_acks_all_load_loses_nothing_acknowledged(broker):
    partitions = {}
    with connect(broker.address) as stub:
        for flush in ("always", "interval"):
            name = f"durable-{flush}"
            create_topic(stub, name, partitions=2, flush=flush)
            for p in range(2):
                partitions[(name, p)] = []
        stop_at = time.monotonic() + 20
        threads = [
            threading.Thread(target=_produce_until_refused, args=(stub, t, p, acked, stop_at))
            for (t, p), acked in partitions.items()
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + TIMEOUT_S
        while min(len(acked) for acked in partitions.values()) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)

        exit_code = broker.stop()

        for thread in threads:
            thread.join(TIMEOUT_S)
        assert not any(thread.is_alive() for thread in threads)

    assert exit_code == 0
    for topic, partition in partitions:
        assert (broker.data_dir / f"{topic}-{partition}" / CLEAN_SHUTDOWN_FILE).exists()
    broker.start()
    with connect(broker.address) as stub:
        for (topic, partition), acked in partitions.items():
            assert len(acked) >= 20
            stored = {r.offset: r.value for r in read_all(stub, topic, partition)}
            for base_offset, batch_values in acked:
                assert [stored.get(base_offset + i) for i in range(5)] == batch_values


class _Requests:
    """A request iterator fed by the test, for a ProduceStream that stays open."""

    def __init__(self) -> None:
        self._queue: queue.Queue[records_pb2.ProduceRequest | None] = queue.Queue()

    def send(self, request: records_pb2.ProduceRequest) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self):
        while (request := self._queue.get(timeout=3 * TIMEOUT_S)) is not None:
            yield request


def test_requests_during_shutdown_are_unavailable(broker):
    with connect(broker.address) as stub:
        create_topic(stub, "t")
        requests = _Requests()
        responses = stub.ProduceStream(iter(requests), timeout=3 * TIMEOUT_S)
        requests.send(produce_request("t", batch([b"before"]), correlation_id=1))
        assert next(responses).results[0].base_offset == 0

        broker.process.send_signal(signal.SIGTERM)
        refused = None
        deadline = time.monotonic() + TIMEOUT_S
        while refused is None and time.monotonic() < deadline:
            try:
                stub.DescribeTopic(admin_pb2.DescribeTopicRequest(name="t"), timeout=1)
            except grpc.RpcError as err:
                refused = failure(err)
            time.sleep(0.01)
        requests.send(produce_request("t", batch([b"during"]), correlation_id=2))
        during = next(responses)
        requests.close()
        assert list(responses) == []

    assert refused is not None and refused.code == grpc.StatusCode.UNAVAILABLE, refused
    assert during.correlation_id == 2
    assert (during.error.code, during.error.reason) == (grpc.StatusCode.UNAVAILABLE.value[0], "SHUTTING_DOWN")
    assert broker.stop() == 0
    broker.start()
    with connect(broker.address) as stub:
        assert log_ends(stub, "t") == [1]


def test_sigterm_ends_open_long_polls_and_subscriptions_at_once(broker):
    with connect(broker.address) as stub:
        create_topic(stub, "idle")
        fetched: list[records_pb2.FetchResponse] = []
        long_poll = threading.Thread(
            target=lambda: fetched.append(
                stub.Fetch(
                    records_pb2.FetchRequest(
                        partitions=[records_pb2.FetchPartition(topic="idle")], max_wait_ms=30_000
                    ),
                    timeout=3 * TIMEOUT_S,
                )
            )
        )
        long_poll.start()
        subscription = stub.Subscribe(records_pb2.SubscribeRequest(topic="idle"), timeout=3 * TIMEOUT_S)
        time.sleep(0.3)  # both are parked on the empty partition

        started = time.monotonic()
        exit_code = broker.stop()
        elapsed = time.monotonic() - started
        long_poll.join(TIMEOUT_S)
        delivered = list(subscription)

    assert exit_code == 0
    assert elapsed < 3, f"shutdown waited {elapsed:.1f}s: the grace period (5 s) instead of the waiters"
    assert len(fetched) == 1 and fetched[0].partitions[0].records == b""
    assert delivered == []
