"""``logstore topic``: create, list, describe, delete; errors on stderr with the reason."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.cli.conftest import Run


def test_create_list_describe_delete(cli: Callable[..., Run], topic_name: str) -> None:
    created = cli("topic", "create", topic_name, "--partitions", "3",
                  "--config", "retention_ms=60000")
    assert created.code == 0, created.stderr
    assert created.stdout.decode() == f"created topic {topic_name} with 3 partitions\n"

    listed = cli("topic", "list")
    assert f"{topic_name}\t3".encode() in listed.lines

    described = cli("topic", "describe", topic_name)
    text = described.stdout.decode()
    assert described.code == 0
    assert f"topic       {topic_name}" in text and "partitions  3" in text
    assert "retention_ms" in text and "60000" in text

    deleted = cli("topic", "delete", topic_name)
    assert deleted.code == 0
    assert f"{topic_name}\t3".encode() not in cli("topic", "list").lines


def test_describe_as_json(cli: Callable[..., Run], topic_name: str) -> None:
    cli("topic", "create", topic_name, "--partitions", "2")
    document = json.loads(cli("topic", "describe", topic_name, "--format", "json").stdout)
    assert document["name"] == topic_name and document["partition_count"] == 2
    assert [p["log_end_offset"] for p in document["partitions"]] == [0, 0]
    names = [t["name"] for t in json.loads(cli("topic", "list", "--format", "json").stdout)]
    assert topic_name in names


def test_internal_topics_are_listed_on_request(cli: Callable[..., Run]) -> None:
    assert not any(b"__consumer_offsets" in line for line in cli("topic", "list").lines)
    assert any(b"__consumer_offsets" in line for line in cli("topic", "list", "--internal").lines)


def test_creating_an_existing_topic_fails_with_its_reason(cli: Callable[..., Run],
                                                          topic_name: str) -> None:
    cli("topic", "create", topic_name)
    run = cli("topic", "create", topic_name)
    assert run.code == 1
    assert run.stderr == f"logstore: error: topic '{topic_name}' already exists (TOPIC_EXISTS)\n"


def test_an_unknown_topic_fails(cli: Callable[..., Run]) -> None:
    for command in (["describe"], ["delete"]):
        run = cli("topic", *command, "no-such-topic-here")
        assert run.code == 1
        assert run.stderr.startswith("logstore: error: ") and "(UNKNOWN_TOPIC)" in run.stderr


def test_bad_arguments_exit_2(cli: Callable[..., Run], topic_name: str) -> None:
    assert cli("topic", "create", topic_name, "--partitions", "0").code == 2
    assert cli("topic", "create", topic_name, "--config", "novalue").code == 2
    assert cli("topic", "frobnicate").code == 2


def test_an_invalid_config_is_refused_by_the_broker(cli: Callable[..., Run],
                                                    topic_name: str) -> None:
    run = cli("topic", "create", topic_name, "--config", "no_such_key=1")
    assert run.code == 1 and "(INVALID_CONFIG)" in run.stderr


def test_an_unreachable_server_fails(cli: Callable[..., Run]) -> None:
    from tests.broker_fixture import free_port

    run = cli("topic", "list", "--server", f"127.0.0.1:{free_port()}")
    assert run.code == 1 and "(UNAVAILABLE)" in run.stderr
