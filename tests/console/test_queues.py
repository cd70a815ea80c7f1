"""The share-group pages (/queues, /queues/<group>) against a real broker: their numbers checked
against ``Admin.describe_share_group`` after a member acquired records, acknowledged some and
rejected one; the same page in a real headless Chromium; bad input is an error page."""

from __future__ import annotations

import html
import re
import time

import pytest
from playwright.sync_api import expect

from logstore import Admin, ShareConsumer
from tests.console.conftest import get, raw, url
from tests.console.test_bad_input import assert_clear
from tests.server.helpers import create_topic, produce, unique_topic

expect.set_options(timeout=10_000)

_LIVE = re.compile(r'data-live="([^"]+)">([^<]*)<')
#: (partition, offset) of the records the member accepts; it rejects (1, 5) and holds the rest.
ACCEPTED = {(0, 3), (0, 4), (0, 5), (1, 0), (1, 1)}
CONFIG = {"lock_ms": "60s", "max_deliveries": 3, "backoff": "1s,5s", "max_acquired_records": 100}


def live_values(body: str) -> dict[str, str]:
    return {html.unescape(k): html.unescape(v) for k, v in _LIVE.findall(body)}


def fmt(number: int) -> str:
    return f"{number:,}"


@pytest.fixture(scope="module")
def queue(console_broker, stub):
    """A share group over a 2-partition topic, 6 records each: the member holds all 12, then
    accepts partition 0's last 3, partition 1's first 2 (its start offset moves to 2) and
    rejects partition 1's last (it stays a member, holding the other 6)."""
    topic, group = unique_topic("jobs"), unique_topic("workers")
    create_topic(stub, topic, partitions=2)
    for partition in (0, 1):
        produce(stub, topic, [b"job-%d-%d" % (partition, i) for i in range(6)], partition)
    with Admin(console_broker.address) as admin:
        admin.alter_share_group_config(group, {**CONFIG, "dead_letter_topic": f"{topic}.dlq"})
    consumer = ShareConsumer(console_broker.address, group, [topic])
    held = []
    deadline = time.monotonic() + 10
    while len(held) < 12 and time.monotonic() < deadline:
        held += consumer.poll(timeout=0.5)
    assert len(held) == 12, held
    for record in held:
        if (record.partition, record.offset) in ACCEPTED:
            record.ack()
        elif (record.partition, record.offset) == (1, 5):
            record.reject(error="burnt")
    consumer.commit()
    yield group, topic
    consumer.close()


def described(broker, group):  # type: ignore[no-untyped-def]
    with Admin(broker.address) as admin:
        return admin.describe_share_group(group)


def test_the_queue_page_shows_each_share_partition_as_the_api(console_broker, queue):
    group, topic = queue
    status, body = get(console_broker, f"/queues/{group}")
    assert status == 200
    values = live_values(body)
    info = described(console_broker, group)
    by_partition = {p.partition: p for p in info.partitions}
    assert (by_partition[0].start_offset, by_partition[0].acquired, by_partition[0].acknowledged) == (0, 3, 3)
    assert (by_partition[1].start_offset, by_partition[1].acquired, by_partition[1].archived) == (2, 3, 1)
    assert by_partition[1].dead_lettered == 1
    for p in info.partitions:
        key = f"{topic}.{p.partition}"
        assert values[f"{key}.start"] == fmt(p.start_offset)
        assert values[f"{key}.end"] == fmt(p.log_end_offset)
        for field in ("available", "acquired", "acknowledged", "archived", "redeliveries", "dead_lettered"):
            assert values[f"{key}.{field}"] == fmt(getattr(p, field)), field
        assert values[f"{key}.age"] != "-"  # records are held
    assert values["acquired"] == "6" and values["archived"] == "1" and values["dead_lettered"] == "1"
    config = body[body.index('id="config"'):]
    for key in ("lock_ms", "max_deliveries", "backoff_ms", "dead_letter_topic", "max_acquired_records"):
        assert f"<code>{key}</code></td><td>{html.escape(info.config[key])}</td>" in config
    assert info.config["lock_ms"] == "60000" and info.config["dead_letter_topic"] == f"{topic}.dlq"


def test_the_queue_list_sums_each_group(console_broker, queue):
    group, topic = queue
    status, body = get(console_broker, "/queues")
    assert status == 200
    values = live_values(body)
    info = described(console_broker, group)
    for field in ("available", "acquired", "archived", "redeliveries", "dead_lettered"):
        assert values[f"queue.{group}.{field}"] == fmt(sum(getattr(p, field) for p in info.partitions)), field
    assert values[f"queue.{group}.members"] == "1"
    assert f'href="/queues/{group}"' in body and f'href="/topics/{topic}"' in body
    assert 'href="/queues" aria-current="page"' in body


def test_the_queue_page_in_a_browser_shows_the_counts_live(page, console_broker, stub, queue):
    group, topic = queue
    page.goto(url(console_broker, "/"))
    page.get_by_role("link", name="Share groups").click()
    page.get_by_role("link", name=group).click()
    expect(page.locator("h1")).to_have_text(f"Share group {group}")
    info = described(console_broker, group)
    for p in info.partitions:
        key = f"{topic}.{p.partition}"
        expect(page.locator(f'[data-live="{key}.acquired"]')).to_have_text(fmt(p.acquired))
        expect(page.locator(f'[data-live="{key}.acknowledged"]')).to_have_text(fmt(p.acknowledged))
        expect(page.locator(f'[data-live="{key}.archived"]')).to_have_text(fmt(p.archived))
    expect(page.locator('[data-live="dead_lettered"]')).to_have_text("1")
    # live: a new record is counted available without a reload
    before = next(p.available for p in info.partitions if p.partition == 0)
    produce(stub, topic, [b"late-job"], 0)
    expect(page.locator(f'[data-live="{topic}.0.available"]')).to_have_text(fmt(before + 1))


def test_an_unknown_share_group_is_a_404_page(console_broker):
    status, body = get(console_broker, "/queues/no-such-workers")
    assert status == 404
    assert_clear(body, "UNKNOWN_GROUP", "no-such-workers")


def test_bad_group_names_and_dot_dots_are_error_pages(console_broker):
    status, body, _ = raw(console_broker, "GET", "/queues/%2E%2E")
    assert status == 400
    assert_clear(body, "INVALID_NAME")
    status, body, _ = raw(console_broker, "GET", "/queues/../../etc/passwd")
    assert status == 404
    assert_clear(body, "no page at")


def test_the_queue_page_needs_no_sideways_scrolling_on_a_phone(chromium, console_broker, queue):
    group, _ = queue
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone = context.new_page()
        phone.goto(url(console_broker, f"/queues/{group}"))
        assert phone.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    finally:
        context.close()
