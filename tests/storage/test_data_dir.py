"""data_dir.py: named topics and their partitions in one directory — create, delete, list,
describe, add partitions, alter config, names that cannot escape, reopening, and one owner."""

from __future__ import annotations

import json
import os

import pytest

from logstore.errors import (
    InvalidConfigError,
    InvalidNameError,
    InvalidRequestError,
    LimitExceededError,
    LogClosedError,
    OffsetOutOfRangeError,
    StorageError,
    TopicExistsError,
    UnknownPartitionError,
    UnknownTopicError,
)
from logstore.records import decode_records
from logstore.storage import DataDir, Limits, LogConfig, validate_topic_name
from logstore.storage.data_dir import TOPICS_FILE

from .helpers import batch, value_batch


@pytest.fixture
def data_dir(tmp_path, clock):
    store = DataDir.open(tmp_path / "data", clock=clock, background=False)
    yield store
    store.close()


def reopen(tmp_path, clock, **options) -> DataDir:
    return DataDir.open(tmp_path / "data", clock=clock, background=False, **options)


# -- names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "", "a" * 250, "a\x00b", "caf\u00e9", "\u0442\u043e\u043f\u0438\u043a", "a/b", "/abs",
     ".", "..", "a b", "a\nb", "x\\y", "name\n"],
)
def test_invalid_names_are_rejected(data_dir, name):
    with pytest.raises(InvalidNameError) as caught:
        data_dir.create_topic(name)
    assert caught.value.kind == "topic"
    with pytest.raises(InvalidNameError):
        validate_topic_name(name)
    assert data_dir.list_topics() == []


@pytest.mark.parametrize("name", ["a", "a" * 249, "Orders.v2_eu-1", "...", "-", "_"])
def test_valid_names_are_accepted(data_dir, name):
    data_dir.create_topic(name)
    assert data_dir.list_topics() == [name]


def test_a_name_that_is_not_a_string_is_rejected():
    with pytest.raises(InvalidNameError):
        validate_topic_name(b"bytes")


def test_names_starting_with_two_underscores_are_reserved(data_dir):
    with pytest.raises(InvalidNameError, match="reserved"):
        data_dir.create_topic("__offsets")
    data_dir.create_topic("__offsets", internal=True)
    assert data_dir.list_topics(include_internal=False) == []
    assert data_dir.list_topics() == ["__offsets"]


def test_lookups_of_invalid_names_raise_invalid_name(data_dir):
    with pytest.raises(InvalidNameError):
        data_dir.log("../etc", 0)
    with pytest.raises(UnknownTopicError):
        data_dir.log("fine-but-missing", 0)


# -- topics -----------------------------------------------------------------------------------------


def test_create_describe_and_list(data_dir, tmp_path):
    description = data_dir.create_topic("orders", partitions=3, config={"segment_bytes": "8KiB"})
    assert description.name == "orders" and not description.internal
    assert [p.partition for p in description.partitions] == [0, 1, 2]
    assert description.config.segment_bytes == 8192
    assert data_dir.list_topics() == ["orders"]
    assert data_dir.has_topic("orders") and not data_dir.has_topic("other")
    for p in range(3):
        assert (tmp_path / "data" / f"orders-{p}").is_dir()


def test_creating_an_existing_topic_fails(data_dir):
    data_dir.create_topic("orders")
    with pytest.raises(TopicExistsError) as caught:
        data_dir.create_topic("orders")
    assert caught.value.topic == "orders"


@pytest.mark.parametrize("partitions", [0, -1])
def test_a_topic_needs_a_partition(data_dir, partitions):
    with pytest.raises(LimitExceededError):
        data_dir.create_topic("orders", partitions=partitions)


def test_limits_are_enforced(tmp_path, clock):
    with DataDir.open(tmp_path / "data", clock=clock, background=False,
                      limits=Limits(max_topics=1, max_partitions_per_topic=2)) as store:
        with pytest.raises(LimitExceededError):
            store.create_topic("wide", partitions=3)
        store.create_topic("one", partitions=2)
        with pytest.raises(LimitExceededError) as caught:
            store.create_topic("two")
        assert caught.value.limit_name == "max_topics"
        with pytest.raises(LimitExceededError):
            store.add_partitions("one", 3)


def test_an_invalid_config_fails_creation(data_dir):
    with pytest.raises(InvalidConfigError):
        data_dir.create_topic("orders", config={"flush": "sometimes"})
    assert data_dir.list_topics() == []


def test_append_and_read_through_the_data_dir(data_dir):
    data_dir.create_topic("orders", partitions=2)
    result = data_dir.append("orders", 1, batch(b"a", b"b"))
    assert (result.base_offset, result.log_end_offset) == (0, 2)
    records = decode_records(data_dir.read("orders", 1, offset=0).data)
    assert [r.value for r in records] == [b"a", b"b"]
    assert data_dir.read("orders", 0, offset=0).log_end_offset == 0
    assert data_dir.offset_for_timestamp("orders", 1, 0) == 0
    with pytest.raises(UnknownPartitionError) as caught:
        data_dir.append("orders", 2, batch(b"x"))
    assert caught.value.partitions == 2
    with pytest.raises(UnknownTopicError):
        data_dir.read("missing", 0, offset=0)


def test_delete_topic_removes_its_folders(data_dir, tmp_path):
    data_dir.create_topic("orders", partitions=2)
    data_dir.append("orders", 0, batch(b"a"))
    data_dir.delete_topic("orders")
    assert data_dir.list_topics() == []
    assert [n for n in os.listdir(tmp_path / "data") if n.startswith("orders")] == []
    with pytest.raises(UnknownTopicError):
        data_dir.delete_topic("orders")


def test_a_recreated_topic_starts_empty(data_dir):
    data_dir.create_topic("orders")
    data_dir.append("orders", 0, batch(b"a"))
    data_dir.delete_topic("orders")
    data_dir.create_topic("orders")
    assert data_dir.describe_topic("orders").partitions[0].log_end_offset == 0


def test_add_partitions_grows_the_topic(data_dir):
    data_dir.create_topic("orders", partitions=1)
    description = data_dir.add_partitions("orders", 3)
    assert len(description.partitions) == 3
    data_dir.append("orders", 2, batch(b"x"))
    with pytest.raises(InvalidRequestError) as caught:  # partitions are never removed
        data_dir.add_partitions("orders", 3)
    assert caught.value.field == "total"


def test_alter_config_applies_to_every_partition(data_dir):
    data_dir.create_topic("orders", partitions=2)
    config = data_dir.alter_config("orders", {"retention.ms": "3600000", "flush": "always"})
    assert config.retention_ms == 3_600_000 and config.flush == "always"
    assert all(log.config == config for log in data_dir.topic("orders").logs)
    with pytest.raises(InvalidConfigError):
        data_dir.alter_config("orders", {"nope": 1})


def test_describe_reports_offsets_sizes_and_segments(data_dir):
    data_dir.create_topic("orders", config={"segment_bytes": 4096})
    for i in range(30):
        data_dir.append("orders", 0, value_batch(i))
    data_dir.log("orders", 0).delete_records_before(3)
    [partition] = data_dir.describe_topic("orders").partitions
    assert (partition.log_start_offset, partition.log_end_offset) == (3, 30)
    assert partition.segments == 2
    assert partition.size_bytes == data_dir.log("orders", 0).size_bytes
    assert data_dir.describe_topic("orders").size_bytes == partition.size_bytes


# -- reopening ----------------------------------------------------------------------------------------


def test_topics_configs_and_records_survive_reopen(tmp_path, clock):
    with reopen(tmp_path, clock) as store:
        store.create_topic("orders", partitions=2, config={"retention_ms": 1000})
        store.create_topic("__internal", internal=True)
        store.alter_config("orders", {"cleanup_policy": "compact,delete"})
        store.add_partitions("orders", 3)
        store.append("orders", 2, batch(b"kept"))
    with reopen(tmp_path, clock) as store:
        assert store.list_topics() == ["__internal", "orders"]
        assert store.list_topics(include_internal=False) == ["orders"]
        config = store.describe_topic("orders").config
        assert (config.retention_ms, config.cleanup_policy) == (1000, "compact,delete")
        assert len(store.describe_topic("orders").partitions) == 3
        assert [r.value for r in decode_records(store.read("orders", 2, 0).data)] == [b"kept"]


def test_a_config_equal_to_the_builtin_default_survives_reopen_with_other_defaults(tmp_path, clock):
    defaults = LogConfig(flush="always", retention_ms=60_000)
    with reopen(tmp_path, clock, defaults=defaults) as store:
        store.create_topic("plain")
        store.create_topic("orders", config={"flush": "interval", "retention_ms": LogConfig().retention_ms})
    with reopen(tmp_path, clock, defaults=defaults) as store:
        orders = store.describe_topic("orders").config
        assert (orders.flush, orders.retention_ms) == ("interval", LogConfig().retention_ms)
        plain = store.describe_topic("plain").config
        assert (plain.flush, plain.retention_ms) == ("always", 60_000)


def test_records_survive_an_unclean_close(tmp_path, clock):
    store = reopen(tmp_path, clock)
    store.create_topic("orders")
    store.append("orders", 0, batch(b"a", b"b"))
    store._close_logs(clean=False)  # a crash: logs abandoned, nothing flushed or marked clean
    os.close(store._lock_file)
    with reopen(tmp_path, clock) as again:
        assert again.describe_topic("orders").partitions[0].log_end_offset == 2


def test_a_second_open_of_the_same_directory_fails(tmp_path, clock, data_dir):
    with pytest.raises(StorageError, match="in use"):
        reopen(tmp_path, clock)


def test_the_directory_can_be_opened_again_after_close(tmp_path, clock):
    reopen(tmp_path, clock).close()
    reopen(tmp_path, clock).close()


def test_a_closed_data_dir_refuses_changes(tmp_path, clock):
    store = reopen(tmp_path, clock)
    store.close()
    with pytest.raises(LogClosedError):
        store.create_topic("orders")
    store.close()  # twice is harmless


def test_stray_partition_folders_are_removed_on_open(tmp_path, clock):
    with reopen(tmp_path, clock) as store:
        store.create_topic("orders", partitions=1)
    root = tmp_path / "data"
    (root / "orders-5").mkdir()
    (root / "ghost-0").mkdir()
    (root / "old-0.1234abcd.deleting").mkdir()
    (root / "notes").mkdir()  # not a partition folder: left alone
    with reopen(tmp_path, clock) as store:
        assert store.list_topics() == ["orders"]
    assert sorted(os.listdir(root)) == [".lock", "notes", "orders-0", TOPICS_FILE]


def test_without_a_topics_file_partition_folders_are_adopted(tmp_path, clock):
    with reopen(tmp_path, clock) as store:
        store.create_topic("orders", partitions=2)
        store.append("orders", 1, batch(b"x"))
    os.unlink(tmp_path / "data" / TOPICS_FILE)
    with reopen(tmp_path, clock) as store:
        assert store.list_topics() == ["orders"]
        assert store.describe_topic("orders").partitions[1].log_end_offset == 1
    table = json.loads((tmp_path / "data" / TOPICS_FILE).read_text())
    assert table["topics"]["orders"]["partitions"] == 2


# -- maintenance ------------------------------------------------------------------------------------


def test_maintenance_applies_retention(tmp_path, clock):
    with reopen(tmp_path, clock) as store:
        store.create_topic("orders", config={"segment_bytes": 4096, "retention_bytes": 0})
        for i in range(30):
            store.append("orders", 0, value_batch(i))
        report = store.run_maintenance()
        assert report["retention"][0].deleted_segments == 1
        with pytest.raises(OffsetOutOfRangeError):
            store.read("orders", 0, offset=0)


def test_maintenance_flushes_interval_topics(tmp_path, clock):
    with reopen(tmp_path, clock) as store:
        store.create_topic("orders", config={"flush": "interval", "flush_interval_ms": 10})
        store.append("orders", 0, batch(b"x"))
        assert store.log("orders", 0).recovery_point == 0
        clock.advance(20)
        assert store.run_maintenance()["flushed"] == 1
        assert store.log("orders", 0).recovery_point == 1


def test_maintenance_compacts_compacted_topics(tmp_path, clock):
    from logstore.records import encode_batch

    with reopen(tmp_path, clock) as store:
        store.create_topic("state", config={"segment_bytes": 4096, "cleanup_policy": "compact"})
        for i in range(60):
            store.append("state", 0, encode_batch([b"v%d" % i + b"." * 100], [b"k%d" % (i % 3)], clock.now_ms()))
        [result] = store.run_maintenance()["compaction"]
        assert result.records_removed > 0


def test_the_background_thread_flushes_and_stops_on_close(tmp_path):
    import time

    from logstore.storage import MaintenanceIntervals

    store = DataDir.open(tmp_path / "data", intervals=MaintenanceIntervals(tick_ms=5))
    try:
        store.create_topic("orders", config={"flush": "interval", "flush_interval_ms": 10})
        store.append("orders", 0, batch(b"x"))
        partition_log = store.log("orders", 0)
        deadline = time.monotonic() + 10
        while partition_log.recovery_point < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert partition_log.recovery_point == 1
    finally:
        store.close()
    assert not store.maintenance.running
    assert partition_log.closed


def test_a_maintenance_job_on_a_topic_deleted_meanwhile_is_dropped_quietly(tmp_path, caplog):
    import logging
    import shutil

    store = DataDir.open(tmp_path / "data", background=False)
    try:
        store.create_topic("orders")
        store.append("orders", 0, batch(b"x"))
        partition_log = store.log("orders", 0)
        shutil.rmtree(partition_log.directory)  # as delete_topic does while a pass runs
        with caplog.at_level(logging.WARNING, logger="logstore.storage.maintenance"):
            assert store.maintenance._guard(partition_log.checkpoint, partition_log) is None
        assert not caplog.records
    finally:
        store.close()
