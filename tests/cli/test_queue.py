"""``logstore queue``: consume with each ack kind, describe (table and JSON), list, reset, config."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest

from logstore.client import Producer
from tests.cli.conftest import Run


def group_name() -> str:
    return f"cli-queue-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def tasks(cli: Callable[..., Run], server: str, topic_name: str) -> str:
    assert cli("topic", "create", topic_name).code == 0
    with Producer(server) as producer:
        producer.send_batch(topic_name, [b"task-%d" % i for i in range(5)], partition=0).result(10)
    return topic_name


def test_consume_accepts_what_it_prints(cli: Callable[..., Run], tasks: str) -> None:
    group = group_name()
    first = cli("queue", "consume", tasks, "--group", group, "--max", "3", "--timeout", "1")
    assert first.code == 0, first.stderr
    assert first.lines == [b"task-0", b"task-1", b"task-2"]
    rest = cli("queue", "consume", tasks, "--group", group, "--timeout", "0.5")
    assert rest.lines == [b"task-3", b"task-4"]
    assert cli("queue", "consume", tasks, "--group", group, "--timeout", "0.2").lines == []


def test_consume_with_release_gives_records_back(cli: Callable[..., Run], tasks: str) -> None:
    group = group_name()
    cli("queue", "consume", tasks, "--group", group, "--max", "1", "--ack", "release")
    again = cli("queue", "consume", tasks, "--group", group, "--max", "1", "--format", "json")
    (record,) = [json.loads(line) for line in again.lines]
    assert (record["offset"], record["delivery_count"], record["value"]) == (0, 2, "task-0")


def test_describe_shows_per_partition_state(cli: Callable[..., Run], tasks: str) -> None:
    group = group_name()
    cli("queue", "consume", tasks, "--group", group, "--max", "2", "--ack", "reject")
    described = cli("queue", "describe", group, "--format", "json")
    assert described.code == 0, described.stderr
    (state,) = json.loads(described.stdout)["partitions"]
    assert (state["start_offset"], state["available"], state["archived"], state["dead_lettered"]) == (2, 3, 0, 2)
    table = cli("queue", "describe", group)
    assert b"dead_lettered" in table.stdout and b"max_deliveries=5" in table.stdout
    assert any(line.startswith(group.encode()) for line in cli("queue", "list").lines)


def test_reset_and_config(cli: Callable[..., Run], tasks: str) -> None:
    group = group_name()
    configured = cli("queue", "config", group, "--set", "lock_ms=10s", "--set", "backoff=1s,5s")
    assert configured.code == 0, configured.stderr
    assert b"lock_ms=10000" in configured.lines and b"backoff_ms=1000ms,5000ms" in configured.lines
    reset = cli("queue", "reset", group, "--topic", tasks, "--to", "4")
    assert reset.code == 0, reset.stderr
    assert cli("queue", "consume", tasks, "--group", group, "--timeout", "0.5").lines == [b"task-4"]


def test_unknown_group_is_an_error(cli: Callable[..., Run]) -> None:
    result = cli("queue", "describe", group_name())
    assert result.code == 1 and "UNKNOWN_GROUP" in result.stderr
