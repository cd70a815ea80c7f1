"""``logstore group``: list, describe (table and JSON), reset-offsets, delete; and
``logstore consume --group`` committing as it goes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest

from logstore.client import Consumer, Producer
from tests.cli.conftest import Run


def group_name() -> str:
    return f"cli-group-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def filled(cli: Callable[..., Run], server: str, topic_name: str) -> str:
    assert cli("topic", "create", topic_name, "--partitions", "2").code == 0
    with Producer(server) as producer:
        for partition in range(2):
            producer.send_batch(topic_name, [b"p%d-%d" % (partition, i) for i in range(5)],
                                partition=partition).result(10)
    return topic_name


def test_consume_with_a_group_commits_as_it_goes(cli: Callable[..., Run], filled: str) -> None:
    group = group_name()
    first = cli("consume", filled, "--group", group)
    assert first.code == 0, first.stderr
    assert sorted(first.lines) == sorted(b"p%d-%d" % (p, i) for p in range(2) for i in range(5))
    second = cli("consume", filled, "--group", group)  # everything is committed
    assert second.code == 0 and second.lines == []


def test_consume_with_a_group_stops_after_max_and_commits_only_what_it_printed(
    cli: Callable[..., Run], filled: str
) -> None:
    group = group_name()
    assert len(cli("consume", filled, "--group", group, "--max", "3").lines) == 3
    rest = cli("consume", filled, "--group", group)
    assert len(rest.lines) == 7


def test_list_and_describe_a_group(cli: Callable[..., Run], server: str, filled: str) -> None:
    group = group_name()
    cli("consume", filled, "--group", group, "--max", "4")
    listed = cli("group", "list")
    assert f"{group}\tempty\t0".encode() in listed.lines
    text = cli("group", "describe", group).stdout.decode()
    assert f"group     {group}" in text and "members   0" in text
    assert "committed" in text and "log_end_offset" in text and "lag" in text
    document = json.loads(cli("group", "describe", group, "--format", "json").stdout)
    assert document["group_id"] == group
    rows = {(o["topic"], o["partition"]): o for o in document["offsets"]}
    assert sum(o["log_end_offset"] - o["offset"] for o in rows.values()) == 6
    assert all(o["lag"] == o["log_end_offset"] - o["offset"] for o in rows.values())
    names = [g["group_id"] for g in json.loads(cli("group", "list", "--format", "json").stdout)]
    assert group in names


def test_describe_shows_the_members_and_who_owns_each_partition(
    cli: Callable[..., Run], server: str, filled: str
) -> None:
    group = group_name()
    with Consumer(server, group_id=group) as consumer:
        consumer.subscribe([filled])
        deadline = time.monotonic() + 10
        while len(consumer.assignment()) < 2 and time.monotonic() < deadline:
            consumer.poll(timeout=0.1)
        member_id = consumer.group_metadata().member_id
        document = json.loads(cli("group", "describe", group, "--format", "json").stdout)
        text = cli("group", "describe", group).stdout.decode()
    (member,) = document["members"]
    assert member["member_id"] == member_id and len(member["assignment"]) == 2
    assert "members   1" in text and member_id in text


@pytest.mark.parametrize(("where", "expected"), [("earliest", 0), ("latest", 5), ("2", 2)])
def test_reset_offsets(cli: Callable[..., Run], filled: str, where: str, expected: int) -> None:
    group = group_name()
    cli("consume", filled, "--group", group, "--max", "1")
    run = cli("group", "reset-offsets", group, "--topic", filled, "--to", where)
    assert run.code == 0, run.stderr
    document = json.loads(cli("group", "describe", group, "--format", "json").stdout)
    assert {o["offset"] for o in document["offsets"]} == {expected}


def test_reset_offsets_to_a_time_and_as_a_dry_run(cli: Callable[..., Run], filled: str) -> None:
    group = group_name()
    cli("consume", filled, "--group", group)
    dry = cli("group", "reset-offsets", group, "--topic", filled, "--to", "@0", "--dry-run")
    assert dry.code == 0 and b"dry run" in dry.stdout
    document = json.loads(cli("group", "describe", group, "--format", "json").stdout)
    assert {o["offset"] for o in document["offsets"]} == {5}  # unchanged
    run = cli("group", "reset-offsets", group, "--topic", filled, "--to", "1970-01-01T00:00:00Z",
              "--partition", "1")
    assert run.code == 0, run.stderr
    document = json.loads(cli("group", "describe", group, "--format", "json").stdout)
    assert sorted((o["partition"], o["offset"]) for o in document["offsets"]) == [(0, 5), (1, 0)]


def test_an_active_group_can_be_neither_reset_nor_deleted(cli: Callable[..., Run], server: str,
                                                          filled: str) -> None:
    group = group_name()
    with Consumer(server, group_id=group) as consumer:
        consumer.subscribe([filled])
        consumer.poll(timeout=0.5)
        reset = cli("group", "reset-offsets", group, "--topic", filled, "--to", "earliest")
        assert reset.code == 1 and "(GROUP_NOT_EMPTY)" in reset.stderr
        deleted = cli("group", "delete", group)
        assert deleted.code == 1 and "(GROUP_NOT_EMPTY)" in deleted.stderr


def test_delete_a_group(cli: Callable[..., Run], filled: str) -> None:
    group = group_name()
    cli("consume", filled, "--group", group, "--max", "2")
    run = cli("group", "delete", group)
    assert run.code == 0 and run.stdout == f"deleted group {group}\n".encode()
    missing = cli("group", "describe", group)
    assert missing.code == 1 and "(UNKNOWN_GROUP)" in missing.stderr


def test_group_arguments_that_do_not_mix_exit_2(cli: Callable[..., Run], filled: str) -> None:
    assert cli("consume", filled, "--group", "g", "--partition", "0").code == 2
    assert cli("consume", filled, "--group", "g", "--from", "3").code == 2
    assert cli("group", "reset-offsets", "g", "--topic", filled).code == 2  # no --to
