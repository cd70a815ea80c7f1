"""Every limit is configurable (``[limits]`` in the ``--config`` TOML file, ``max_batch_bytes`` per
topic), enforced with the status and reason the README gives, and documented there with its
default.

Limits that refuse say so with RESOURCE_EXHAUSTED / LIMIT_EXCEEDED (metadata ``limit_name``,
``limit``), or INVALID_ARGUMENT / BATCH_TOO_LARGE for a batch; the two that gRPC enforces before
the broker sees the call (``max_request_bytes``, ``max_concurrent_rpcs``) are RESOURCE_EXHAUSTED
without an ErrorInfo. Limits on what the broker sends (``max_fetch_bytes``,
``max_subscribe_bytes``, ``max_wait_ms``) cap the request instead of refusing it, as Kafka does.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from logstore.api.v1 import admin_pb2, records_pb2
from logstore.broker import BrokerConfig
from logstore.records import decode_records
from logstore.storage.data_dir import Limits
from tests.broker_fixture import ROOT, BrokerProcess
from tests.server.helpers import (
    TIMEOUT_S,
    batch,
    connect,
    create_topic,
    describe,
    expect_failure,
    failure,
    fetch_partition,
    produce,
    produce_request,
    read_all,
    unique_topic,
    values,
)

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
KIB = 1 << 10

LIMITS = {
    "max_topics": 3,
    "max_partitions_per_topic": 4,
    "max_request_bytes": 256 * KIB,
    "max_fetch_bytes": 64 * KIB,
    "max_subscribe_bytes": 32 * KIB,
    "max_wait_ms": 300,
    "max_subscriptions_per_connection": 2,
}


def _toml(limits: dict[str, int], topic_defaults: str = "") -> str:
    return "[limits]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items()) + topic_defaults


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    root = tmp_path_factory.mktemp("limits")
    (root / "logstore.toml").write_text(_toml(LIMITS, "[topic_defaults]\nmax_batch_bytes = 8192\n"))
    broker = BrokerProcess(root / "data", config=root / "logstore.toml").start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture(scope="module")
def stub(limited: BrokerProcess) -> Iterator:
    with connect(limited.address) as s:
        yield s


def _limit_exceeded(err_or_call, request=None, *, name: str, limit: int):  # type: ignore[no-untyped-def]
    got = expect_failure(err_or_call, request, RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED")
    assert (got.metadata["limit_name"], got.metadata["limit"]) == (name, str(limit)), got
    return got


# -- the README documents every limit, with the default the code has -------------------------------


def _readme_limits() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n### Limits\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if cells else None
        if match and len(cells) >= 3:
            rows[match.group(1)] = cells[1]
    return rows


DOCUMENTED_LIMITS = [
    "max_topics", "max_partitions_per_topic", "max_request_bytes", "max_batch_bytes",
    "max_fetch_bytes", "max_subscribe_bytes", "max_wait_ms", "max_subscriptions_per_connection",
    "max_unflushed_bytes", "max_unflushed_bytes_per_partition", "max_inflight_bytes_per_connection",
    "backpressure_timeout_ms", "max_concurrent_rpcs",
]


def _default(name: str) -> int:
    from logstore.storage import LogConfig

    for cls in (Limits, BrokerConfig, LogConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name in fields:
            return int(fields[name].default)  # type: ignore[arg-type]
    raise KeyError(name)


def _as_int(text: str) -> int:
    text = text.replace("`", "").replace(",", "").replace(" ", "")
    match = re.fullmatch(r"(\d+)(KiB|MiB|GiB)?(?:\(([\d_]+)\))?", text)
    assert match, text
    factor = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, None: 1}[match.group(2)]
    return int(match.group(1)) * factor


@pytest.mark.parametrize("name", DOCUMENTED_LIMITS)
def test_the_readme_documents_the_limit_and_its_default(name):
    documented = _readme_limits()
    assert name in documented, f"{name} is missing from the README's Limits table"
    assert _as_int(documented[name]) == _default(name), (name, documented[name])


def test_every_limit_the_config_file_accepts_is_documented():
    internal = {"topic_defaults", "limits", "maintenance", "offsets_topic_partitions",
                "group_heartbeat_interval_ms", "housekeeping_interval_ms"}
    accepted = {f.name for f in dataclasses.fields(Limits)} | {
        f.name for f in dataclasses.fields(BrokerConfig) if f.name not in internal
    }
    assert accepted <= set(_readme_limits())


# -- topics and partitions --------------------------------------------------------------------------


def test_max_topics_refuses_one_more_topic_and_internal_topics_do_not_count(stub):
    names = [unique_topic("cap") for _ in range(LIMITS["max_topics"])]
    for name in names:  # __consumer_offsets and __transaction_state exist already
        create_topic(stub, name)
    try:
        _limit_exceeded(stub.CreateTopic, admin_pb2.CreateTopicRequest(name=unique_topic("over"), partitions=1),
                        name="max_topics", limit=LIMITS["max_topics"])
        stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=names.pop()), timeout=TIMEOUT_S)
        names.append(create_topic(stub, unique_topic("again")).name)  # a freed place is usable
    finally:
        for name in names:
            stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=name), timeout=TIMEOUT_S)


def test_max_partitions_per_topic_refuses_create_and_add_partitions(stub):
    limit = LIMITS["max_partitions_per_topic"]
    name = unique_topic("parts")
    _limit_exceeded(stub.CreateTopic, admin_pb2.CreateTopicRequest(name=name, partitions=limit + 1),
                    name="max_partitions_per_topic", limit=limit)
    create_topic(stub, name, partitions=limit - 1)
    try:
        _limit_exceeded(stub.AddPartitions, admin_pb2.AddPartitionsRequest(name=name, total=limit + 1),
                        name="max_partitions_per_topic", limit=limit)
        assert len(describe(stub, name).partitions) == limit - 1
        stub.AddPartitions(admin_pb2.AddPartitionsRequest(name=name, total=limit), timeout=TIMEOUT_S)
        assert len(describe(stub, name).partitions) == limit
    finally:
        stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=name), timeout=TIMEOUT_S)


# -- request and batch sizes ------------------------------------------------------------------------


@pytest.fixture
def topic(stub) -> Iterator[str]:
    name = unique_topic("limits")
    create_topic(stub, name, max_batch_bytes=str(512 * KIB))  # the request limit comes first
    yield name
    stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=name), timeout=TIMEOUT_S)


def test_max_request_bytes_refuses_a_larger_request_before_the_broker_reads_it(stub, topic):
    limit = LIMITS["max_request_bytes"]
    request = produce_request(topic, batch([b"x" * limit]))

    got = expect_failure(stub.Produce, request, RESOURCE_EXHAUSTED)

    assert got.reason == "" and f"vs. {limit}" in got.message, got  # gRPC's own refusal
    assert describe(stub, topic).partitions[0].log_end_offset == 0
    assert produce(stub, topic, [b"x" * (limit - 4 * KIB)]).base_offset == 0  # just below: fine


def test_max_batch_bytes_refuses_a_larger_batch_with_its_size(stub):
    name = unique_topic("batch")
    create_topic(stub, name)  # the [topic_defaults] of the config file: 8192
    try:
        payload = batch([b"y" * 9000])
        got = expect_failure(stub.Produce, produce_request(name, payload),
                             grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE")
        assert (got.metadata["size"], got.metadata["limit"]) == (str(len(payload)), "8192")
        stub.AlterTopicConfig(admin_pb2.AlterTopicConfigRequest(name=name, set={"max_batch_bytes": "16384"}),
                              timeout=TIMEOUT_S)
        assert produce(stub, name, [b"y" * 9000]).base_offset == 0
    finally:
        stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=name), timeout=TIMEOUT_S)


# -- what the broker sends --------------------------------------------------------------------------


def test_max_fetch_bytes_caps_the_response_but_a_larger_batch_still_comes_whole(stub, topic):
    limit = LIMITS["max_fetch_bytes"]
    for i in range(20):  # 20 batches of ~8 KiB: 160 KiB
        produce(stub, topic, [bytes([65 + i]) * 8000])
    big = [b"B" * (200 * KIB)]  # one batch over the limit (under max_request_bytes)
    produce(stub, topic, big)

    fetched = fetch_partition(stub, topic, max_bytes=10 << 20)  # asks for far more

    assert 0 < len(fetched.records) <= limit
    assert fetched.next_offset < 20
    whole = fetch_partition(stub, topic, offset=20, max_bytes=10 << 20)
    assert [r.value for r in decode_records(whole.records)] == big
    assert len(values(read_all(stub, topic))) == 21


def test_max_subscribe_bytes_caps_each_message_but_a_larger_batch_still_comes_whole(stub, topic):
    limit = LIMITS["max_subscribe_bytes"]
    for i in range(10):
        produce(stub, topic, [bytes([65 + i]) * 8000])
    produce(stub, topic, [b"B" * (100 * KIB)])
    call = stub.Subscribe(records_pb2.SubscribeRequest(topic=topic, max_bytes=10 << 20), timeout=TIMEOUT_S)
    sizes, offsets = [], []
    try:
        for message in call:
            sizes.append(len(message.records))
            offsets += [r.offset for r in decode_records(message.records)]
            if message.next_offset >= 11:
                break
    finally:
        call.cancel()
    assert offsets == list(range(11))
    assert all(size <= limit for size in sizes[:-1]) and len(sizes) > 2, sizes
    assert sizes[-1] > limit  # the big batch, alone


def test_max_wait_ms_caps_a_long_poll(stub, topic):
    started = time.monotonic()
    fetched = fetch_partition(stub, topic, max_wait_ms=20_000)
    elapsed = time.monotonic() - started

    assert fetched.records == b""
    assert LIMITS["max_wait_ms"] / 1000 * 0.8 <= elapsed < 5, elapsed


def test_max_subscriptions_per_connection_refuses_one_more(limited, topic):
    limit = LIMITS["max_subscriptions_per_connection"]
    with connect(limited.address, own_connection=True) as own:
        calls = []
        try:
            for _ in range(limit):
                call = own.Subscribe(records_pb2.SubscribeRequest(topic=topic, start=records_pb2.START_LATEST),
                                     timeout=TIMEOUT_S)
                calls.append(call)
            _wait_for_subscriptions(limited, limit)
            extra = own.Subscribe(records_pb2.SubscribeRequest(topic=topic), timeout=TIMEOUT_S)
            with pytest.raises(grpc.RpcError) as raised:
                next(extra)
        finally:
            for call in calls:
                call.cancel()
    got = failure(raised.value)
    assert (got.code, got.reason) == (RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED"), got
    assert got.metadata["limit_name"] == "max_subscriptions_per_connection"


def _wait_for_subscriptions(broker: BrokerProcess, count: int) -> None:
    """Until the broker's metrics show ``count`` open subscriptions (bounded)."""
    import urllib.request

    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://{broker.metrics_address}/metrics", timeout=TIMEOUT_S).read().decode()
        match = re.search(r"^logstore_subscriptions_open (\S+)$", text, re.M)
        if match and float(match.group(1)) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{count} subscriptions not open within {TIMEOUT_S}s")


# -- concurrency and backpressure ----------------------------------------------------------------------


def _broker(tmp_path: Path, limits: dict[str, int]) -> BrokerProcess:
    (tmp_path / "logstore.toml").write_text(_toml(limits))
    return BrokerProcess(tmp_path / "data", config=tmp_path / "logstore.toml").start()


def test_max_concurrent_rpcs_refuses_calls_beyond_it(tmp_path):
    broker = _broker(tmp_path, {"max_concurrent_rpcs": 3})
    try:
        with connect(broker.address) as stub:
            name = unique_topic("rpcs")
            create_topic(stub, name)
            long_poll = records_pb2.FetchRequest(partitions=[records_pb2.FetchPartition(topic=name)], max_wait_ms=2000)
            polls = [stub.Fetch.future(long_poll, timeout=TIMEOUT_S) for _ in range(3)]  # every place
            time.sleep(0.3)
            got = expect_failure(stub.DescribeTopic, admin_pb2.DescribeTopicRequest(name=name), RESOURCE_EXHAUSTED)
            assert got.reason == "", got  # gRPC's own refusal, like max_request_bytes
            for poll in polls:
                poll.result()
            assert describe(stub, name).name == name  # the places are free again
    finally:
        broker.kill()


def _hammer(address: str, topic: str, partitions: int, *, own_connections: bool,
            threads: int = 8, rounds: int = 8, size: int = 64 * KIB) -> tuple[list[tuple[int, int]], list]:  # type: ignore[type-arg]
    """Threads producing one-record batches of ``size`` bytes (acks=all) at once; returns the
    (partition, offset) of every acknowledged record and the refusals."""
    acked: list[tuple[int, int]] = []
    refused: list = []  # type: ignore[type-arg]
    lock = threading.Lock()

    def work(n: int) -> None:
        with connect(address, own_connection=own_connections) as stub:
            for r in range(rounds):
                partition = (n + r) % partitions
                request = produce_request(topic, batch([b"z" * size]), partition=partition)
                try:
                    (result,) = stub.Produce(request, timeout=TIMEOUT_S).results
                except grpc.RpcError as err:
                    with lock:
                        refused.append(failure(err))
                    continue
                assert not result.HasField("error"), result.error
                with lock:
                    acked.append((partition, result.base_offset))

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    return acked, refused


@pytest.mark.parametrize(
    "limit_name, partitions, own_connections",
    [
        ("max_unflushed_bytes", 4, True),
        ("max_unflushed_bytes_per_partition", 1, True),
        ("max_inflight_bytes_per_connection", 4, False),  # the threads share one connection
        ("max_queued_request_bytes", 4, True),  # refused before its request is read
    ],
)
def test_backpressure_refuses_after_the_timeout_and_a_refused_batch_is_not_appended(
    tmp_path, limit_name, partitions, own_connections
):
    limits = {"max_unflushed_bytes": 1 << 30, "max_unflushed_bytes_per_partition": 1 << 30,
              "max_inflight_bytes_per_connection": 1 << 30, "max_queued_request_bytes": 1 << 40,
              "backpressure_timeout_ms": 1}
    limits[limit_name] = 1  # one request at a time; the others wait 1 ms, then are refused
    broker = _broker(tmp_path, limits)
    try:
        with connect(broker.address) as stub:
            name = unique_topic("bp")
            create_topic(stub, name, partitions=partitions, flush="always")
            acked: list[tuple[int, int]] = []
            refused: list = []  # type: ignore[type-arg]
            for _ in range(10):  # bounded: concurrent waits for an fsync overlap within a few rounds
                more_acked, more_refused = _hammer(broker.address, name, partitions, own_connections=own_connections)
                acked += more_acked
                refused += more_refused
                if refused:
                    break
            assert refused, "no request was ever refused"
            for got in refused:
                assert (got.code, got.reason) == (RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED"), got
                assert got.metadata["limit_name"] == limit_name, got
            # the log holds exactly the acknowledged records: a refused request appended nothing
            for partition, end in enumerate(p.log_end_offset for p in describe(stub, name).partitions):
                assert sorted(offset for p, offset in acked if p == partition) == list(range(end))
    finally:
        broker.kill()
