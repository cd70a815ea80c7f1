"""Each console page in a real headless Chromium against a real broker, its numbers checked
against the gRPC API (log end offsets, committed offsets, lag)."""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import expect

from logstore import Admin, Consumer
from tests.console.conftest import url
from tests.server.helpers import create_topic, describe, produce, unique_topic, wait_until

expect.set_options(timeout=10_000)

#: Partition 0's records have timestamps T0, T0 + 1 s, ... (browse by time).
T0 = 1_767_000_000_000
LONG_JSON = {"table": 12, "dishes": ["soup", "salad", "bread"], "note": "no onions, extra pepper please"}


def ordered(records: int, start: int = 0) -> tuple[list[bytes], list[bytes], list[int]]:
    values = [json.dumps({"dish": "soup", "n": i}).encode() for i in range(start, start + records)]
    keys = [f"table{i % 4}".encode() for i in range(start, start + records)]
    stamps = [T0 + i * 1000 for i in range(start, start + records)]
    return values, keys, stamps


@pytest.fixture(scope="module")
def topic(stub):
    name = unique_topic("orders")
    create_topic(stub, name, partitions=3)
    values, keys, stamps = ordered(20)
    produce(stub, name, values, 0, keys=keys, timestamps=stamps)
    produce(stub, name, [b"\x00\x01\xfe\xff", b"plain text", json.dumps(LONG_JSON).encode()], 1)
    return name


def fmt(number: int) -> str:
    return f"{number:,}"


def test_the_overview_lists_topics_and_says_single_node(page, console_broker, stub, topic):
    page.goto(url(console_broker, "/"))

    expect(page.get_by_test_id("cluster-mode")).to_contain_text("single node")
    expect(page.locator('[data-live="health"]')).to_have_text("serving")
    records = sum(p.log_end_offset - p.log_start_offset for p in describe(stub, topic).partitions)
    expect(page.locator(f'[data-live="topic.{topic}.records"]')).to_have_text(fmt(records))


def test_the_topic_page_shows_the_log_end_offsets_the_api_reports(page, console_broker, stub, topic):
    page.goto(url(console_broker, f"/topics/{topic}"))

    for partition in describe(stub, topic).partitions:
        row = page.locator("#partitions tbody tr").nth(partition.partition)
        expect(row.locator(f'[data-live="p{partition.partition}.end"]')).to_have_text(fmt(partition.log_end_offset))
        expect(row.locator(f'[data-live="p{partition.partition}.start"]')).to_have_text(fmt(partition.log_start_offset))
    expect(page.get_by_role("cell", name="retention_ms", exact=True)).to_be_visible()


def test_the_topic_page_follows_new_records_live(page, console_broker, stub, topic):
    page.goto(url(console_broker, f"/topics/{topic}"))
    before = describe(stub, topic).partitions[2].log_end_offset
    expect(page.locator('[data-live="p2.end"]')).to_have_text(fmt(before))

    produce(stub, topic, [b"a", b"b", b"c"], 2)

    expect(page.locator('[data-live="p2.end"]')).to_have_text(fmt(before + 3))
    expect(page.locator('svg[data-chart="throughput"] polyline')).to_have_count(2)


def test_browsing_from_an_offset_shows_those_records(page, console_broker, topic):
    page.goto(url(console_broker, f"/topics/{topic}/messages?partition=0&from=offset&offset=5&limit=3"))

    rows = page.locator("#records tbody tr")
    expect(rows).to_have_count(3)
    assert [rows.nth(i).get_attribute("data-offset") for i in range(3)] == ["5", "6", "7"]
    expect(rows.nth(0).locator("td").nth(2)).to_have_text("table1")
    expect(page.get_by_test_id("log-end")).to_have_text("20")


def test_browsing_from_a_time_starts_at_the_first_record_that_new(page, console_broker, topic):
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((T0 + 12_000) // 1000)) + "Z"
    page.goto(url(console_broker, f"/topics/{topic}/messages?partition=0&from=time&time={moment}&limit=2"))

    rows = page.locator("#records tbody tr")
    expect(rows).to_have_count(2)
    assert rows.nth(0).get_attribute("data-offset") == "12"


def test_the_browse_form_is_used_with_the_keyboard(page, console_broker, topic):
    page.goto(url(console_broker, f"/topics/{topic}/messages"))

    page.get_by_label("From").select_option("offset")
    page.get_by_label("Offset").fill("17")
    page.get_by_label("Offset").press("Enter")

    expect(page.locator("#records tbody tr").first).to_have_attribute("data-offset", "17")
    expect(page.locator("#records tbody tr")).to_have_count(3)


def test_json_values_are_pretty_printed_and_binary_shown_as_hex(page, console_broker, topic):
    page.goto(url(console_broker, f"/topics/{topic}/messages?partition=0&from=offset&offset=0&limit=1"))
    short = page.locator("#records tbody tr").first.locator("pre.k-json")
    expect(short).to_have_text(json.dumps({"dish": "soup", "n": 0}))  # short JSON stays on one line

    page.goto(url(console_broker, f"/topics/{topic}/messages?partition=1&from=offset&offset=0"))
    rows = page.locator("#records tbody tr")
    expect(rows.nth(0).locator("pre.k-hex")).to_have_text("00 01 fe ff")
    expect(rows.nth(1).locator("pre.k-text")).to_have_text("plain text")
    expect(rows.nth(2).locator("pre.k-json")).to_have_text(json.dumps(LONG_JSON, indent=2))

    page.goto(url(console_broker, f"/topics/{topic}/messages?partition=1&from=offset&offset=1&format=hex"))
    expect(page.locator("#records tbody tr").first.locator("td").nth(3)).to_have_text(b"plain text".hex(" "))


def test_filters_keep_records_by_key_or_substring(page, console_broker, topic):
    page.goto(url(console_broker, f"/topics/{topic}/messages?partition=0&from=offset&offset=0&key=table3"))
    rows = page.locator("#records tbody tr")
    expect(rows).to_have_count(5)
    assert [rows.nth(i).get_attribute("data-offset") for i in range(5)] == ["3", "7", "11", "15", "19"]

    page.goto(url(console_broker, f"/topics/{topic}/messages?partition=0&from=offset&offset=0&contains=%22n%22%3A+14"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-offset", "14")


def test_the_live_tail_follows_a_producer(page, console_broker, stub, topic):
    page.goto(url(console_broker, f"/topics/{topic}/messages?partition=2"))
    end = describe(stub, topic).partitions[2].log_end_offset
    page.get_by_role("button", name="Follow live tail").click()
    expect(page.locator("#tail-status")).to_have_text(f"following · next offset {end}")

    for round_ in range(3):
        produce(stub, topic, [f"live-{round_}-{i}".encode() for i in range(2)], 2)
        expect(page.locator(f'#records tr[data-offset="{end + 2 * round_ + 1}"]')).to_contain_text(f"live-{round_}-1")

    page.get_by_role("button", name="Stop following").click()
    expect(page.get_by_role("button", name="Follow live tail")).to_have_attribute("aria-pressed", "false")


def test_the_download_holds_the_range_as_json_lines(page, console_broker, topic):
    page.goto(url(console_broker, f"/topics/{topic}/messages?partition=0&from=offset&offset=2&limit=4"))
    with page.expect_download() as download:
        page.get_by_role("link", name="Download JSONL").click()
    lines = [json.loads(line) for line in open(download.value.path()).read().splitlines()]

    assert [line["offset"] for line in lines] == [2, 3, 4, 5]
    assert lines[0] == {
        "partition": 0, "offset": 2, "timestamp": T0 + 2000, "key": "table2",
        "value": json.dumps({"dish": "soup", "n": 2}),
    }


def test_the_group_page_shows_committed_offsets_and_lag_as_the_api(page, console_broker, stub, topic):
    group = unique_topic("cooks")
    with Consumer(console_broker.address, group_id=group, auto_offset_reset="earliest",
                  enable_auto_commit=False) as consumer:
        consumer.subscribe(topic)
        deadline = time.monotonic() + 10
        taken = 0
        while taken < 5 and time.monotonic() < deadline:
            taken += len(consumer.poll(timeout=0.5))
        consumer.commit()
        with Admin(console_broker.address) as admin:
            described = admin.describe_group(group)
        page.goto(url(console_broker, f"/groups/{group}"))

        expect(page.locator('[data-live="members"]')).to_have_text("1")
        member = described.members[0].member_id
        expect(page.get_by_text(member).first).to_be_visible()
        for offset in described.offsets:
            key = f"{offset.topic}.{offset.partition}"
            expect(page.locator(f'[data-live="{key}.lag"]')).to_have_text(fmt(offset.lag))
            expect(page.locator(f'[data-live="{key}.end"]')).to_have_text(fmt(offset.log_end_offset))
        assert described.offsets, "the consumer committed nothing"
    page.goto(url(console_broker, "/groups"))
    expect(page.get_by_role("link", name=group)).to_be_visible()


def test_create_produce_and_delete_a_topic_through_the_forms(page, console_broker, stub):
    name = unique_topic("made-in-browser")
    page.goto(url(console_broker, "/topics"))
    page.get_by_label("Name").fill(name)
    page.get_by_label("Partitions").fill("2")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("h1")).to_have_text(f"Topic {name}")
    assert len(describe(stub, name).partitions) == 2

    page.get_by_label("Partition", exact=True).select_option("1")
    page.get_by_label("Key", exact=True).fill("k1")
    page.get_by_label("Value").fill("a test record")
    page.get_by_role("button", name="Produce").click()
    expect(page.locator("#records tbody tr").first.locator("td").nth(3)).to_have_text("a test record")
    assert describe(stub, name).partitions[1].log_end_offset == 1

    page.goto(url(console_broker, f"/topics/{name}"))
    page.get_by_label("Type the topic name to confirm").fill(name)
    page.get_by_role("button", name="Delete topic").click()
    expect(page.locator("h1")).to_have_text("Topics")
    with Admin(console_broker.address) as admin:
        assert name not in [t.name for t in admin.list_topics()]


def test_reset_offsets_moves_an_idle_group(page, console_broker, stub, topic):
    group = unique_topic("idle")
    with Admin(console_broker.address) as admin:
        admin.reset_offsets(group, topic, "latest")
        page.goto(url(console_broker, f"/groups/{group}"))
        page.get_by_label("Topic").fill(topic)
        page.get_by_label("To", exact=True).select_option("earliest")
        page.get_by_role("button", name="Reset").click()
        expect(page.locator(f'[data-live="{topic}.0.committed"]')).to_have_text("0")
        wait_until(lambda: all(o.offset == 0 for o in admin.describe_group(group).offsets))


def test_the_pages_are_keyboard_navigable(page, console_broker, topic):
    page.goto(url(console_broker, "/"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    reached = []
    for _ in range(5):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.textContent"))
    assert "Topics" in reached and "Consumer groups" in reached
    page.get_by_role("link", name="Topics", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Topics")


@pytest.mark.parametrize("path", ["/", "/topics/{topic}", "/topics/{topic}/messages?partition=0&from=offset&offset=0"])
def test_a_phone_screen_needs_no_sideways_scrolling(chromium, console_broker, topic, path):
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone = context.new_page()
        phone.goto(url(console_broker, path.format(topic=topic)))
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
    finally:
        context.close()
