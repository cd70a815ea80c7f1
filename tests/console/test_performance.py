"""Pages answer in under 200 ms on a topic with 100 partitions (median of repeated loads,
measured at the HTTP client and, for the topic page, in the browser's navigation timing).
Run with ``-s`` to see the medians."""

from __future__ import annotations

import statistics
import time

import pytest

from logstore.api.v1 import groups_pb2
from tests.console.conftest import TIMEOUT_S, get, url
from tests.server.helpers import create_topic, produce, unique_topic

PARTITIONS = 100
BUDGET_S = 0.200
LOADS = 9


@pytest.fixture(scope="module")
def wide(stub):
    topic = unique_topic("wide")
    create_topic(stub, topic, partitions=PARTITIONS)
    for partition in range(PARTITIONS):
        produce(stub, topic, [b'{"order": %d}' % i for i in range(50)], partition, keys=[b"k"] * 50)
    produce(stub, topic, [b'{"order": %d, "dish": "soup"}' % i for i in range(1000)], 99)  # a full page
    group = unique_topic("wide-cooks")
    stub.CommitOffsets(
        groups_pb2.CommitOffsetsRequest(
            group_id=group,
            offsets=[groups_pb2.OffsetCommit(topic=topic, partition=p, offset=20) for p in range(PARTITIONS)],
        ),
        timeout=TIMEOUT_S,
    )
    return topic, group


def median_load_s(broker, path: str) -> float:
    times = []
    for _ in range(LOADS):
        started = time.perf_counter()
        status, body = get(broker, path)
        times.append(time.perf_counter() - started)
        assert status == 200, body[-500:]
    return statistics.median(times)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/topics",
        "/topics/{topic}",
        "/topics/{topic}/messages?partition=99&from=offset&offset=0&limit=1000",
        "/topics/{topic}/messages?partition=42&contains=order%22%3A+49",
        "/groups",
        "/groups/{group}",
    ],
)
def test_a_page_answers_in_under_200_ms_with_100_partitions(console_broker, wide, path):
    topic, group = wide
    elapsed = median_load_s(console_broker, path.format(topic=topic, group=group))
    print(f"{path}: median {elapsed * 1000:.1f} ms")
    assert elapsed < BUDGET_S


def test_the_browser_has_the_topic_page_in_under_200_ms(page, console_broker, wide):
    """Request start to the last byte of the page, as Chromium's navigation timing sees it.
    (Rendering time is printed, not asserted: on a shared 2-core box it measures the box.)"""
    topic, _ = wide
    received, rendered = [], []
    for _ in range(5):
        page.goto(url(console_broker, f"/topics/{topic}"))
        timing = page.evaluate(
            "(() => { const n = performance.getEntriesByType('navigation')[0];"
            " return [n.responseEnd - n.requestStart, n.domContentLoadedEventEnd - n.startTime]; })()"
        )
        received.append(timing[0])
        rendered.append(timing[1])
    print(f"topic page received: median {statistics.median(received):.1f} ms, "
          f"DOMContentLoaded: median {statistics.median(rendered):.1f} ms")
    assert statistics.median(received) < BUDGET_S * 1000
    assert page.locator("#partitions tbody tr").count() == PARTITIONS
