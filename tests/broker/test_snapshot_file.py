"""The state snapshot frame: used only when whole, of its kind and version, and inside the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from logstore.broker.snapshot_file import HEADER_SIZE, read_snapshot, write_snapshot
from logstore.records import encode_batch
from logstore.storage import PartitionLog


@pytest.fixture
def partition_log(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = PartitionLog.open(tmp_path / "p-0")
    opened.append(encode_batch([b"a", b"b", b"c"], keys=[b"1", b"2", b"3"]))
    yield opened
    opened.close()


def test_a_written_snapshot_reads_back(partition_log: PartitionLog) -> None:
    path = partition_log.directory / "s.snapshot"
    write_snapshot(path, "offsets", 1, 3, b"payload")
    snapshot = read_snapshot(path, "offsets", 1, partition_log)
    assert snapshot is not None
    assert (snapshot.offset, snapshot.payload) == (3, b"payload")


def test_a_missing_snapshot_is_none(partition_log: PartitionLog) -> None:
    assert read_snapshot(partition_log.directory / "none", "offsets", 1, partition_log) is None


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "torn":
        del data[len(data) - 3 :]
    elif how == "header only torn":
        del data[HEADER_SIZE - 5 :]
    elif how == "flipped payload byte":
        data[-1] ^= 0x40
    elif how == "flipped offset byte":
        data[24] ^= 0x01
    elif how == "garbage":
        data[:] = b"not a snapshot at all, just some bytes of garbage"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "how", ["torn", "header only torn", "flipped payload byte", "flipped offset byte", "garbage"]
)
def test_a_damaged_snapshot_is_ignored_and_removed(
    partition_log: PartitionLog, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = partition_log.directory / "s.snapshot"
    write_snapshot(path, "offsets", 1, 3, b"payload")
    damage(path, how)
    with caplog.at_level(logging.WARNING):
        assert read_snapshot(path, "offsets", 1, partition_log) is None
    assert not path.exists()
    assert "ignoring the state snapshot" in caplog.text


@pytest.mark.parametrize("version", [0, 2])
def test_a_snapshot_of_an_older_or_newer_format_is_ignored(partition_log: PartitionLog, version: int) -> None:
    path = partition_log.directory / "s.snapshot"
    write_snapshot(path, "offsets", version, 3, b"payload")
    assert read_snapshot(path, "offsets", 1, partition_log) is None
    assert not path.exists()


def test_a_snapshot_of_another_kind_is_ignored(partition_log: PartitionLog) -> None:
    path = partition_log.directory / "s.snapshot"
    write_snapshot(path, "txns", 1, 3, b"payload")
    assert read_snapshot(path, "offsets", 1, partition_log) is None


def test_a_snapshot_past_the_log_end_is_ignored(partition_log: PartitionLog, caplog: pytest.LogCaptureFixture) -> None:
    """The log was cut below the offset the snapshot covers: its state may hold lost records."""
    path = partition_log.directory / "s.snapshot"
    write_snapshot(path, "offsets", 1, 4, b"payload")
    with caplog.at_level(logging.WARNING):
        assert read_snapshot(path, "offsets", 1, partition_log) is None
    assert "outside the log's [0, 3]" in caplog.text


def test_a_snapshot_below_the_log_start_is_ignored(partition_log: PartitionLog) -> None:
    path = partition_log.directory / "s.snapshot"
    write_snapshot(path, "offsets", 1, 1, b"payload")
    partition_log.append(encode_batch([b"d"]))
    partition_log.roll()
    partition_log.delete_records_before(4)
    assert read_snapshot(path, "offsets", 1, partition_log) is None
