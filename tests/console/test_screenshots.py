"""Screenshots of each console page over a small restaurant: waiters (producers) hang orders on
the rail (topic ``orders``), a kitchen team (group ``kitchen``) cooks them with some lag.

``scripts/console-screenshots`` runs this with LOGSTORE_CONSOLE_SCREENSHOTS=bench/results/console
to regenerate the PNGs the README shows; in the normal suite they go to a temporary directory.
"""

from __future__ import annotations

import json
import os
import threading
import time

from playwright.sync_api import expect

from logstore import Admin, Consumer, Producer, ShareConsumer
from tests.console.conftest import screenshot_dir, url
from tests.server.helpers import create_topic

expect.set_options(timeout=10_000)

DISHES = ["soup", "salad", "pizza", "pasta", "curry", "bread"]


def _waiters(address: str, stop: threading.Event) -> None:
    """About 400 orders a second, in bursts, keyed by table."""
    with Producer(address) as producer:
        n = 0
        while not stop.is_set():
            burst = 40 + (n % 5) * 30
            orders = [{"table": (n + i) % 30 + 1, "dish": DISHES[(n + i) % 6], "count": (n + i) % 3 + 1}
                      for i in range(burst)]
            for order in orders:
                producer.send("orders", json.dumps(order).encode(), key=f"table-{order['table']}".encode())
            producer.flush()
            n += 1
            stop.wait(0.25)


def _kitchen(address: str, stop: threading.Event) -> None:
    """Slower than the waiters: the lag grows."""
    with Consumer(address, group_id="kitchen", auto_offset_reset="earliest",
                  enable_auto_commit=False, max_poll_records=60) as cooks:
        cooks.subscribe("orders")
        while not stop.is_set():
            if cooks.poll(timeout=0.2):
                cooks.commit()
            stop.wait(0.2)


def _ticket_spike(address: str) -> ShareConsumer:
    """Share group ``spike`` on ``orders``: a cook takes tickets, spikes most done, throws out a
    few burnt ones (dead-lettered) and still holds the rest (the caller closes it)."""
    with Admin(address) as admin:
        admin.alter_share_group_config("spike", {"dead_letter_topic": "orders.burnt", "backoff": "1s,5s,30s",
                                                 "lock_ms": "2m"})
    cook = ShareConsumer(address, "spike", ["orders"], max_records=120)
    for round_ in range(4):
        for index, ticket in enumerate(cook.poll(timeout=1.0)):
            if index % 40 == 7:
                ticket.reject(error="burnt")
            elif round_ < 3 and index % 5:
                ticket.ack()
    cook.commit()
    return cook


def test_screenshots_of_every_page(chromium, console_broker, stub, tmp_path):
    directory = screenshot_dir(tmp_path)
    create_topic(stub, "orders", partitions=6)
    create_topic(stub, "payments", partitions=2)
    stop = threading.Event()
    workers = [threading.Thread(target=role, args=(console_broker.address, stop)) for role in (_waiters, _kitchen)]
    for worker in workers:
        worker.start()
    shots = {
        "overview": "/",
        "topic": "/topics/orders",
        "messages": "/topics/orders/messages?partition=1&limit=12",
        "group": "/groups/kitchen",
        "queue": "/queues/spike",
    }
    cook = None
    try:
        # some history for the charts: longer when the PNGs are being regenerated for the README
        time.sleep(6 if os.environ.get("LOGSTORE_CONSOLE_SCREENSHOTS") else 2)
        cook = _ticket_spike(console_broker.address)
        context = chromium.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        for name, path in shots.items():
            page.goto(url(console_broker, path))
            page.wait_for_timeout(1200)  # a live update or two
            page.screenshot(path=str(directory / f"{name}.png"))
        page.goto(url(console_broker, "/topics/orders/messages?partition=1&from=offset&offset=999999"))
        page.screenshot(path=str(directory / "error.png"))
        context.close()
        phone = chromium.new_context(viewport={"width": 390, "height": 760}, is_mobile=True, has_touch=True)
        tab = phone.new_page()
        tab.goto(url(console_broker, "/topics/orders"))
        tab.wait_for_timeout(1200)
        tab.screenshot(path=str(directory / "phone.png"))
        phone.close()
    finally:
        if cook is not None:
            cook.close()
        stop.set()
        for worker in workers:
            worker.join()

    for name in [*shots, "error", "phone"]:
        assert (directory / f"{name}.png").stat().st_size > 10_000
