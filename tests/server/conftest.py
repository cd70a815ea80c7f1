"""Fixtures of the end-to-end server suite.

- ``stub``: a LogStore stub on the module's shared broker (``module_broker``); use ``topic``.
- ``topic``: a topic name unique to the test (not created).
- ``retained``: a broker holding a topic with tiny segments and ``retention_bytes``, started with
  a config file that runs retention every 200 ms; tests marked ``late`` (run at the end of the
  session) wait for that pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from logstore.api.v1 import logstore_pb2_grpc
from tests.broker_fixture import BrokerProcess
from tests.server.helpers import connect, create_topic, describe, produce, unique_topic, values_of

#: The retained broker's retention pass interval (its config file sets it).
RETENTION_INTERVAL_S = 0.2


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "late: needs the broker's first retention pass; run at the end of the session"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("late") is not None)


@pytest.fixture(scope="module")
def stub(module_broker: BrokerProcess) -> Iterator[logstore_pb2_grpc.LogStoreStub]:
    with connect(module_broker.address) as s:
        yield s


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return unique_topic(request.node.name.removeprefix("test_"))


@dataclass
class Retained:
    broker: BrokerProcess
    topic: str
    started: float  # time.monotonic() when the broker was up
    values: list[bytes]  # values[i] is the value at offset i

    def wait_for_retention(self) -> int:
        """Wait (bounded) until retention has raised log start; returns it."""
        deadline = self.started + RETENTION_INTERVAL_S + 20
        with connect(self.broker.address) as stub:
            while True:
                start = describe(stub, self.topic).partitions[0].log_start_offset
                if start > 0:
                    return start
                assert time.monotonic() < deadline, "retention did not run within 20 s of start"
                time.sleep(0.25)


@pytest.fixture(scope="session", autouse=True)
def retained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retained]:
    """A broker whose retention pass runs every 200 ms."""
    root: Path = tmp_path_factory.mktemp("retention-broker")
    config = root / "logstore.toml"
    config.write_text(f"[maintenance]\nretention_check_interval_ms = {int(RETENTION_INTERVAL_S * 1000)}\n")
    process = BrokerProcess(root / "data", config=config).start()
    started = time.monotonic()
    name = unique_topic("retained")
    written: list[bytes] = []
    with connect(process.address) as stub:
        create_topic(stub, name, segment_bytes="4096", retention_bytes="8192")
        for i in range(40):  # 40 batches of ~1.1 KB: about 11 segments of 4 KiB
            batch_values = values_of(f"r{i}", 10)
            batch_values = [v.ljust(100, b".") for v in batch_values]
            result = produce(stub, name, batch_values)
            assert result.base_offset == len(written)
            written += batch_values
    try:
        yield Retained(process, name, started, written)
    finally:
        process.kill()
