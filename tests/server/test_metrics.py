"""Prometheus metrics at GET http://<metrics_address>/metrics."""

from __future__ import annotations

import time
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from logstore.api.v1 import admin_pb2, records_pb2, share_pb2
from tests.server.helpers import (
    TIMEOUT_S,
    create_topic,
    expect_failure,
    produce,
    produce_request,
    read_all,
    values_of,
)


def scrape(broker) -> dict[tuple[str, frozenset], float]:
    """Every sample as {(name, frozenset(labels.items())): value}."""
    with urllib.request.urlopen(f"http://{broker.metrics_address}/metrics", timeout=TIMEOUT_S) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_requests_are_counted_by_method_and_code(stub, module_broker, topic):
    create_topic(stub, topic)
    produce(stub, topic, [b"x"])
    expect_failure(
        stub.DescribeTopic,
        admin_pb2.DescribeTopicRequest(name=topic + "-missing"),
        grpc.StatusCode.NOT_FOUND,
    )

    samples = scrape(module_broker)

    assert sample(samples, "logstore_requests_total", method="CreateTopic", code="OK") >= 1
    assert sample(samples, "logstore_requests_total", method="Produce", code="OK") >= 1
    assert sample(samples, "logstore_requests_total", method="DescribeTopic", code="NOT_FOUND") >= 1


def test_produced_records_are_counted_per_topic(stub, module_broker, topic):
    create_topic(stub, topic, partitions=2)
    produce(stub, topic, values_of("a", 4), partition=0)
    produce(stub, topic, values_of("b", 3), partition=1)

    samples = scrape(module_broker)

    assert sample(samples, "logstore_produced_records_total", topic=topic) == 7
    assert sample(samples, "logstore_produced_bytes_total", topic=topic) > 0


def test_log_end_offset_is_reported_per_partition(stub, module_broker, topic):
    create_topic(stub, topic, partitions=2)
    produce(stub, topic, values_of("a", 5), partition=1)

    samples = scrape(module_broker)

    assert sample(samples, "logstore_log_end_offset", topic=topic, partition="0") == 0
    assert sample(samples, "logstore_log_end_offset", topic=topic, partition="1") == 5
    assert sample(samples, "logstore_log_start_offset", topic=topic, partition="1") == 0


def test_request_latency_is_a_histogram_per_method(stub, module_broker, topic):
    create_topic(stub, topic)
    produce(stub, topic, [b"x"])

    samples = scrape(module_broker)

    count = sample(samples, "logstore_request_seconds_count", method="Produce")
    assert count >= 1
    assert sample(samples, "logstore_request_seconds_bucket", method="Produce", le="+Inf") == count
    assert sample(samples, "logstore_request_seconds_bucket", method="Produce", le="0.001") is not None
    assert sample(samples, "logstore_request_seconds_sum", method="Produce") > 0


def test_errors_are_counted_by_reason(stub, module_broker, topic):
    create_topic(stub, topic)
    before = sample(scrape(module_broker), "logstore_errors_total", reason="CORRUPT_BATCH") or 0

    for _ in range(2):
        expect_failure(
            stub.Produce, produce_request(topic, b"garbage" * 20), grpc.StatusCode.INVALID_ARGUMENT, "CORRUPT_BATCH"
        )

    assert sample(scrape(module_broker), "logstore_errors_total", reason="CORRUPT_BATCH") == before + 2


def test_open_subscriptions_are_a_gauge(stub, module_broker, topic):
    create_topic(stub, topic)
    produce(stub, topic, [b"x"])
    before = sample(scrape(module_broker), "logstore_subscriptions_open")
    call = stub.Subscribe(records_pb2.SubscribeRequest(topic=topic), timeout=TIMEOUT_S)
    try:
        next(call)  # the subscription is open server-side once it delivers
        during = sample(scrape(module_broker), "logstore_subscriptions_open")
    finally:
        call.cancel()
    after = _settle(lambda: sample(scrape(module_broker), "logstore_subscriptions_open"), before)

    assert during == before + 1
    assert after == before


def test_a_deleted_topic_leaves_the_metrics(stub, module_broker, topic):
    create_topic(stub, topic)
    produce(stub, topic, [b"x"])

    stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=topic), timeout=TIMEOUT_S)

    samples = scrape(module_broker)
    assert sample(samples, "logstore_produced_records_total", topic=topic) is None
    assert sample(samples, "logstore_log_end_offset", topic=topic, partition="0") is None


def _settle(read, expected, timeout: float = TIMEOUT_S):
    """Read until ``expected`` comes back (a cancelled stream ends asynchronously)."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def test_records_delivered_by_fetch_and_subscribe_are_counted_per_topic(stub, module_broker, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("a", 3))
    read_all(stub, topic)
    call = stub.Subscribe(records_pb2.SubscribeRequest(topic=topic), timeout=TIMEOUT_S)
    try:
        next(call)
    finally:
        call.cancel()

    samples = scrape(module_broker)

    assert sample(samples, "logstore_fetched_records_total", topic=topic) == 6
    assert sample(samples, "logstore_fetched_bytes_total", topic=topic) > 0


def test_share_groups_report_counts_and_acknowledgements(stub, module_broker, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("task", 3))
    group = f"metrics-{topic}"
    stub.ShareFetch(share_pb2.ShareFetchRequest(group_id=group, member_id="m", topics=[topic], max_records=2),
                    timeout=TIMEOUT_S)
    stub.ShareAcknowledge(share_pb2.ShareAcknowledgeRequest(group_id=group, member_id="m", acknowledgements=[
        share_pb2.ShareAcknowledgement(topic=topic, partition=0, first_offset=0, last_offset=0,
                                       kind=share_pb2.ACKNOWLEDGE_ACCEPT),
        share_pb2.ShareAcknowledgement(topic=topic, partition=0, first_offset=1, last_offset=1,
                                       kind=share_pb2.ACKNOWLEDGE_RELEASE, delay_ms=0)]), timeout=TIMEOUT_S)

    samples = scrape(module_broker)

    assert sample(samples, "logstore_share_acquired_records", group=group) == 0
    assert sample(samples, "logstore_share_available_records", group=group) == 1  # the released one
    assert sample(samples, "logstore_share_acknowledged_records_total", group=group, kind="accept") == 1
    assert sample(samples, "logstore_share_acknowledged_records_total", group=group, kind="release") == 1
    assert sample(samples, "logstore_share_lock_expiries_total", group=group) == 0
