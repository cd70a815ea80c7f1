"""A broker whose data directory is on a tiny filesystem that fills up for real (a 16 MiB tmpfs,
see ``fs.py``): produce is refused with RESOURCE_EXHAUSTED / DISK_FULL and appends nothing,
fetches keep returning every acknowledged record, calls that need to write metadata are refused
the same way and change nothing, deleting a topic frees its space even with not a byte left,
produce works again once space is freed, and after a clean or a crashed restart (on the full disk)
every acknowledged record reads back with nothing cut or quarantined. The broker never dies on the
way: a load or store through a mapping of a sparse file on a full tmpfs would be a SIGBUS.

Space the tests free again is set aside first (``reserve``): a disk filled by produce has less than
a batch left, which the broker's own metadata writes may take before the next produce."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from logstore.api.v1 import admin_pb2, common_pb2, groups_pb2, records_pb2, transactions_pb2
from tests.broker_fixture import BrokerProcess
from tests.faults.fs import SmallFs, small_fs
from tests.server.helpers import (
    TIMEOUT_S,
    batch,
    connect,
    create_topic,
    describe,
    expect_failure,
    produce,
    produce_request,
    read_all,
    values,
)

FS_MIB = 16
VALUE_BYTES = 16 << 10
RESOURCE_EXHAUSTED_CODE = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[SmallFs]:
    with small_fs(tmp_path / "tiny", FS_MIB) as fs:
        yield fs


@pytest.fixture
def full_broker(tiny_fs: SmallFs, tmp_path: Path) -> Iterator[BrokerProcess]:
    config = tmp_path / "logstore.toml"
    # checkpoints often, so the maintenance thread writes while the disk is full too
    config.write_text("[maintenance]\ncheckpoint_interval_ms = 100\n")
    broker = BrokerProcess(tiny_fs.path / "data", config=config)
    broker.log_path = tmp_path / "broker.log"  # the log stays off the small filesystem
    try:
        yield broker.start()
    finally:
        broker.kill()


class Written:
    """What the broker acknowledged, per topic: values in offset order."""

    def __init__(self) -> None:
        self.by_topic: dict[str, list[bytes]] = {}

    def add(self, topic: str, base_offset: int, batch_values: list[bytes]) -> None:
        acked = self.by_topic.setdefault(topic, [])
        assert base_offset == len(acked), f"{topic}: offset {base_offset} after {len(acked)} records"
        acked += batch_values


def _values(tag: str, n: int, size: int = VALUE_BYTES) -> list[bytes]:
    return [f"{tag}-{i}:".encode().ljust(size, bytes([65 + i % 26])) for i in range(n)]


def _try_produce(stub, topic: str, batch_values: list[bytes]) -> records_pb2.PartitionProduceResult:
    response = stub.Produce(produce_request(topic, batch(batch_values)), timeout=TIMEOUT_S)
    (result,) = response.results
    return result


def _produce_until_full(stub, topic: str, written: Written, tag: str, max_batches: int = 400) -> common_pb2.ErrorDetail:
    """Produce 64 KiB batches until one is refused; returns its error."""
    for i in range(max_batches):
        batch_values = _values(f"{tag}{i}", 4)
        result = _try_produce(stub, topic, batch_values)
        if result.HasField("error"):
            return result.error
        written.add(topic, result.base_offset, batch_values)
    raise AssertionError(f"the {FS_MIB} MiB filesystem did not fill up in {max_batches} batches")


def _assert_disk_full(error: common_pb2.ErrorDetail) -> None:
    assert (error.code, error.reason) == (RESOURCE_EXHAUSTED_CODE, "DISK_FULL"), error


def _assert_reads_back(stub, written: Written) -> None:
    for topic, acked in written.by_topic.items():
        assert values(read_all(stub, topic, max_bytes=1 << 20)) == acked, topic


def _quarantined(data_dir: Path) -> list[str]:
    return [name for _, _, files in os.walk(data_dir) for name in files if ".corrupt-at-" in name]


def _log_bytes(data_dir: Path, partition_dir: str) -> int:
    return sum(p.stat().st_size for p in (data_dir / partition_dir).glob("*.log"))


def test_a_full_disk_refuses_produce_keeps_fetch_and_recovers_when_space_is_freed(full_broker, tiny_fs):
    written = Written()
    with connect(full_broker.address) as stub:
        create_topic(stub, "main", segment_bytes=str(1 << 20))  # it rolls while the disk fills
        create_topic(stub, "spare")
        tiny_fs.reserve(1 << 20)  # freed later: more than the pages the broker's own writes take
        for i in range(30):  # ~2 MiB to free later by deleting the topic
            batch_values = _values(f"s{i}", 4)
            written.add("spare", produce(stub, "spare", batch_values).base_offset, batch_values)

        error = _produce_until_full(stub, "main", written, "a")
        _assert_disk_full(error)
        assert error.metadata["errno"] == str(errno.ENOSPC)
        end, size = describe(stub, "main").partitions[0].log_end_offset, _log_bytes(full_broker.data_dir, "main-0")
        for i in range(3):  # refused again: no offset taken, not a byte of a half batch left
            _assert_disk_full(_try_produce(stub, "main", _values(f"again{i}", 4)).error)
        assert describe(stub, "main").partitions[0].log_end_offset == end
        assert _log_bytes(full_broker.data_dir, "main-0") == size
        _assert_reads_back(stub, written)

        tiny_fs.fill()  # not a byte left
        # (a batch smaller than a page could still land in the last page of the .log)
        _assert_disk_full(_try_produce(stub, "main", _values("full", 1)).error)
        _assert_reads_back(stub, written)
        assert full_broker.running

        tiny_fs.free()
        tiny_fs.free("reserve")
        result = produce(stub, "main", [b"after-free"])
        written.add("main", result.base_offset, [b"after-free"])
        stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name="spare"), timeout=TIMEOUT_S)
        del written.by_topic["spare"]
        for i in range(20):  # the deleted topic's space is usable again
            batch_values = _values(f"b{i}", 4)
            written.add("main", produce(stub, "main", batch_values).base_offset, batch_values)
        _assert_reads_back(stub, written)

    assert full_broker.stop() == 0
    full_broker.start()
    with connect(full_broker.address) as stub:
        _assert_reads_back(stub, written)
    assert _quarantined(full_broker.data_dir) == []


def test_calls_that_must_write_on_a_full_disk_are_disk_full_and_change_nothing(full_broker, tiny_fs):
    written = Written()
    with connect(full_broker.address) as stub:
        create_topic(stub, "main", partitions=2)
        for i in range(10):
            batch_values = _values(f"m{i}", 4)
            written.add("main", produce(stub, "main", batch_values).base_offset, batch_values)
        tiny_fs.fill()  # a filler file takes every byte left; removing it frees them all
        listed = stub.ListTopics(admin_pb2.ListTopicsRequest(include_internal=True), timeout=TIMEOUT_S)
        entries = sorted(os.listdir(full_broker.data_dir))

        for call, request in [
            (stub.CreateTopic, admin_pb2.CreateTopicRequest(name="new", partitions=3)),
            (stub.AddPartitions, admin_pb2.AddPartitionsRequest(name="main", total=4)),
            (stub.AlterTopicConfig, admin_pb2.AlterTopicConfigRequest(name="main", set={"retention_ms": "60000"})),
            (stub.CommitOffsets, groups_pb2.CommitOffsetsRequest(
                group_id="g", offsets=[groups_pb2.OffsetCommit(topic="main", partition=0, offset=1)])),
            (stub.InitProducerId, transactions_pb2.InitProducerIdRequest(transactional_id="tx")),
        ]:
            expect_failure(call, request, grpc.StatusCode.RESOURCE_EXHAUSTED, "DISK_FULL")

        assert stub.ListTopics(admin_pb2.ListTopicsRequest(include_internal=True), timeout=TIMEOUT_S) == listed
        assert describe(stub, "main").config["retention_ms"] != "60000"
        assert sorted(os.listdir(full_broker.data_dir)) == entries
        fetched = stub.FetchOffsets(groups_pb2.FetchOffsetsRequest(group_id="g"), timeout=TIMEOUT_S)
        assert list(fetched.offsets) == []
        _assert_reads_back(stub, written)
        assert full_broker.running

        tiny_fs.free()
        create_topic(stub, "new", partitions=3)
        assert [p.partition for p in describe(stub, "new").partitions] == [0, 1, 2]


def test_deleting_a_topic_frees_its_space_even_when_not_a_byte_is_left(full_broker, tiny_fs):
    written = Written()
    with connect(full_broker.address) as stub:
        create_topic(stub, "main")
        create_topic(stub, "spare")
        for i in range(40):  # ~2.6 MiB
            batch_values = _values(f"s{i}", 4)
            produce(stub, "spare", batch_values)
        read_all(stub, "spare", max_bytes=1 << 20)  # its segments are mapped for reading now
        _assert_disk_full(_produce_until_full(stub, "main", written, "a"))
        tiny_fs.fill()  # not a page left for a new topics.json

        stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name="spare"), timeout=TIMEOUT_S)

        for i in range(40):  # the space is free at once (not when a garbage collector runs)
            batch_values = _values(f"b{i}", 4)
            written.add("main", produce(stub, "main", batch_values).base_offset, batch_values)
        listed = stub.ListTopics(admin_pb2.ListTopicsRequest(), timeout=TIMEOUT_S)
        assert [t.name for t in listed.topics] == ["main"]
        _assert_reads_back(stub, written)

    assert full_broker.stop() == 0
    tiny_fs.free()
    full_broker.start()
    with connect(full_broker.address) as stub:
        listed = stub.ListTopics(admin_pb2.ListTopicsRequest(), timeout=TIMEOUT_S)
        assert [t.name for t in listed.topics] == ["main"]
        _assert_reads_back(stub, written)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_nothing_acknowledged_is_lost_or_cut_by_a_restart_after_the_disk_filled(full_broker, tiny_fs, how):
    written = Written()
    with connect(full_broker.address) as stub:
        create_topic(stub, "main", segment_bytes=str(1 << 20), flush="always")
        tiny_fs.reserve(1 << 20)
        _assert_disk_full(_produce_until_full(stub, "main", written, "a"))

    if how == "sigterm":  # a clean shutdown on a full disk (its checkpoints may not be written)
        assert full_broker.stop() == 0
    else:
        full_broker.kill()
    tiny_fs.fill()  # restarted with not a byte left: recovery must cope (and never SIGBUS)
    full_broker.start()
    with connect(full_broker.address) as stub:
        _assert_reads_back(stub, written)
        tiny_fs.fill()  # (starting may have freed a page or two: clean-shutdown markers)
        _assert_disk_full(_try_produce(stub, "main", _values("still-full", 1)).error)
        tiny_fs.free()
        tiny_fs.free("reserve")
        result = produce(stub, "main", [b"after-restart"])
        written.add("main", result.base_offset, [b"after-restart"])
        _assert_reads_back(stub, written)
    assert full_broker.running
    assert _quarantined(full_broker.data_dir) == []
