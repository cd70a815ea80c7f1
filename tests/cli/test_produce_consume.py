"""``logstore produce`` from stdin and ``logstore consume`` back, in each --from form."""

from __future__ import annotations

import base64
import datetime
import json
import time
from collections.abc import Callable

import pytest

from logstore.client import Producer
from tests.cli.conftest import Run


@pytest.fixture
def topic(cli: Callable[..., Run], topic_name: str) -> str:
    assert cli("topic", "create", topic_name, "--partitions", "1").code == 0
    return topic_name


def test_produce_lines_and_consume_them(cli: Callable[..., Run], topic: str) -> None:
    produced = cli("produce", topic, stdin=b"one\ntwo\n\nfour")
    assert produced.code == 0, produced.stderr
    consumed = cli("consume", topic)
    assert consumed.code == 0, consumed.stderr
    assert consumed.stdout == b"one\ntwo\n\nfour\n"


def test_key_separator_splits_at_the_first_separator(cli: Callable[..., Run],
                                                     topic_name: str) -> None:
    cli("topic", "create", topic_name, "--partitions", "3")
    assert cli("produce", topic_name, "--key-separator", ":",
               stdin=b"alice:2:pizzas\nbob:salad\nalice:soup\n").code == 0
    rows = [json.loads(line) for line in cli("consume", topic_name, "--format", "json").lines]
    assert sorted((r["key"], r["value"]) for r in rows) == [
        ("alice", "2:pizzas"), ("alice", "soup"), ("bob", "salad")]
    alice = [r for r in rows if r["key"] == "alice"]
    assert alice[0]["partition"] == alice[1]["partition"]
    assert [r["value"] for r in alice] == ["2:pizzas", "soup"]


def test_a_line_without_the_separator_fails(cli: Callable[..., Run], topic: str) -> None:
    run = cli("produce", topic, "--key-separator", ":", stdin=b"k:v\nno separator\n")
    assert run.code == 1
    assert run.stderr == "logstore: error: line 2 has no key separator ':' (INVALID_REQUEST)\n"


def test_produce_to_a_partition_with_acks(cli: Callable[..., Run], topic_name: str) -> None:
    cli("topic", "create", topic_name, "--partitions", "2")
    for acks in ("0", "1", "all"):
        assert cli("produce", topic_name, "--partition", "1", "--acks", acks,
                   stdin=acks.encode() + b"\n").code == 0
    assert cli("consume", topic_name, "--partition", "0").stdout == b""
    assert cli("consume", topic_name, "--partition", "1").stdout == b"0\n1\nall\n"


def test_produce_to_an_unknown_topic_fails(cli: Callable[..., Run]) -> None:
    run = cli("produce", "no-such-topic-here", stdin=b"x\n")
    assert run.code == 1 and "(UNKNOWN_TOPIC)" in run.stderr


def test_produce_bad_arguments_exit_2(cli: Callable[..., Run], topic: str) -> None:
    assert cli("produce", topic, "--acks", "2").code == 2
    assert cli("produce", topic, "--partition", "-1").code == 2


def test_consume_from_an_offset(cli: Callable[..., Run], topic: str) -> None:
    cli("produce", topic, stdin=b"a\nb\nc\nd\n")
    assert cli("consume", topic, "--from", "2").stdout == b"c\nd\n"
    assert cli("consume", topic, "--from", "earliest", "--max", "3").stdout == b"a\nb\nc\n"
    assert cli("consume", topic, "--from", "latest").stdout == b""


def test_consume_from_a_time(cli: Callable[..., Run], server: str, topic: str) -> None:
    with Producer(server) as producer:
        producer.send_batch(topic, [b"old", b"mid", b"new"], partition=0,
                            timestamps=[1_000_000_000_000, 1_500_000_000_000, 1_800_000_000_000])
    assert cli("consume", topic, "--from", "@1500000000000").stdout == b"mid\nnew\n"
    iso = datetime.datetime.fromtimestamp(1_600_000_000, tz=datetime.UTC).isoformat()
    assert cli("consume", topic, "--from", iso).stdout == b"new\n"
    assert cli("consume", topic, "--from", "2020-09-13T12:26:40Z").stdout == b"new\n"


def test_consume_stops_at_the_end_offsets_seen_at_start(cli: Callable[..., Run], server: str,
                                                        topic_name: str) -> None:
    cli("topic", "create", topic_name, "--partitions", "3")
    values = [b"%d" % i for i in range(3000)]
    with Producer(server) as producer:
        producer.send_batch(topic_name, values, keys=[b"k%d" % i for i in range(3000)]).result(20)
    run = cli("consume", topic_name)
    assert run.code == 0
    assert sorted(run.lines) == sorted(values)


def test_json_carries_every_field_and_base64_for_binary(cli: Callable[..., Run], server: str,
                                                        topic: str) -> None:
    with Producer(server) as producer:
        producer.send(topic, b"text", key=b"k", headers=[("h", b"v"), ("bin", b"\xff")],
                      timestamp=1234, partition=0)
        producer.send(topic, b"\xff\xfe\x00binary", key=b"\x80", partition=0)
        producer.send(topic, None, partition=0)
    rows = [json.loads(line) for line in cli("consume", topic, "--format", "json").lines]
    assert rows[0] == {"topic": topic, "partition": 0, "offset": 0, "timestamp": 1234,
                       "key": "k", "value": "text",
                       "headers": [{"key": "h", "value": "v"},
                                   {"key": "bin", "value": base64.b64encode(b"\xff").decode(),
                                    "value_encoding": "base64"}]}
    assert rows[1]["value_encoding"] == "base64"
    assert base64.b64decode(rows[1]["value"]) == b"\xff\xfe\x00binary"
    assert base64.b64decode(rows[1]["key"]) == b"\x80" and rows[1]["key_encoding"] == "base64"
    assert rows[2]["value"] is None and rows[2]["key"] is None


def test_follow_prints_new_records_until_max(cli: Callable[..., Run], server: str,
                                             topic: str) -> None:
    import threading

    def later() -> None:
        time.sleep(1.0)
        with Producer(server) as producer:
            producer.send_batch(topic, [b"x", b"y"], partition=0)

    thread = threading.Thread(target=later)
    thread.start()
    run = cli("consume", topic, "--from", "latest", "--follow", "--max", "2")
    thread.join()
    assert run.code == 0 and run.stdout == b"x\ny\n"


def test_consume_errors(cli: Callable[..., Run], topic: str) -> None:
    assert "(UNKNOWN_TOPIC)" in cli("consume", "no-such-topic-here").stderr
    bad = cli("consume", topic, "--from", "yesterday")
    assert bad.code == 2 and "--from" in bad.stderr
    assert cli("consume", topic, "--max", "0").code == 2
    assert cli("consume", topic, "--format", "xml").code == 2
    unknown = cli("consume", topic, "--partition", "7")
    assert unknown.code == 1 and "(UNKNOWN_PARTITION)" in unknown.stderr


def test_round_trip_through_the_real_entry_point(logstore_process: Callable[..., Run],
                                                 server: str, topic: str) -> None:
    env = {"LOGSTORE_SERVER": server}
    produced = logstore_process("produce", topic, "--key-separator", "=", stdin=b"a=1\nb=2\n",
                                env=env)
    assert produced.code == 0, produced.stderr
    consumed = logstore_process("consume", topic, "--format", "json", env=env)
    assert [json.loads(line)["value"] for line in consumed.lines] == ["1", "2"]
