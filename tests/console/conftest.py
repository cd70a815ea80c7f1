"""Fixtures for the web console's tests: a real ``logstore serve`` broker and a real headless
Chromium (Debian's ``/usr/bin/chromium``, installed by scripts/install-peers) driven by
Playwright's Python package. Playwright never downloads a browser here: it is launched with
``executable_path``.

Screenshots: set ``LOGSTORE_CONSOLE_SCREENSHOTS=DIR`` (scripts/console-screenshots does, with
bench/results/console) and the screenshot test writes its PNGs there instead of a temporary dir.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker_fixture import BrokerProcess
from tests.server.helpers import connect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_S = 10.0


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):  # type: ignore[no-untyped-def]
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_S * 1000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture(scope="module")
def console_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker per module whose console offers write actions (no security file)."""
    process = BrokerProcess(tmp_path_factory.mktemp("console") / "data", args=["--console-writes"]).start()
    yield process
    process.kill()


@pytest.fixture(scope="module")
def stub(console_broker: BrokerProcess) -> Iterator[object]:
    with connect(console_broker.address) as grpc_stub:
        yield grpc_stub


def url(broker: BrokerProcess, path: str) -> str:
    return f"http://{broker.metrics_address}{path}"


def get(broker: BrokerProcess, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of a GET, errors included."""
    request = urllib.request.Request(url(broker, path), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def raw(broker: BrokerProcess, method: str, target: str, body: str = "",
        headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    """A request sent exactly as given (no path normalisation): (status, body, headers)."""
    host, port = broker.metrics_address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        connection.request(method, target, body=body.encode(), headers=headers or {})
        reply = connection.getresponse()
        return reply.status, reply.read().decode(errors="replace"), dict(reply.getheaders())
    finally:
        connection.close()


def jsonl(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line]


def screenshot_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get("LOGSTORE_CONSOLE_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory
