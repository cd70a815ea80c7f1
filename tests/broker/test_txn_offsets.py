"""Transactional offsets staged at the group coordinator (a cluster's ``TxnOffsetCommit``), on
the ``OffsetStore`` of a real data directory: staged until the marker, committed or dropped by
it, kept across a reload, never in a snapshot, fenced below a marker's epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from logstore.broker.groups.offsets import OffsetStore
from logstore.broker.internal import partition_for
from logstore.errors import ProducerFencedError
from logstore.storage import DataDir, ManualClock

PARTITIONS = 2


def store(path: Path, clock: ManualClock) -> tuple[DataDir, OffsetStore]:
    data_dir = DataDir.open(path, background=False)
    if not data_dir.has_topic("t"):
        data_dir.create_topic("t", 2)
    return data_dir, OffsetStore(data_dir, clock, PARTITIONS)


def test_staged_offsets_wait_for_the_commit_marker(tmp_path: Path, clock: ManualClock) -> None:
    data_dir, offsets = store(tmp_path, clock)
    offsets.stage("g", 7, 0, [("t", 0, 3, "")])
    offsets.stage("g", 7, 0, [("t", 1, 5, "m")])  # a second call of the transaction merges
    assert offsets.committed("g") == {}
    assert offsets.staged_partitions("g") == {("t", 0), ("t", 1)}
    offsets.complete_staged(partition_for("g", PARTITIONS), 7, 0, commit=True)
    assert {tp: (c.offset, c.metadata) for tp, c in offsets.committed("g").items()} == {
        ("t", 0): (3, ""), ("t", 1): (5, "m")}
    assert offsets.staged_partitions("g") == set()
    offsets.complete_staged(partition_for("g", PARTITIONS), 7, 0, commit=True)  # sent again: no-op
    data_dir.close()


def test_an_abort_marker_drops_them_and_fences_the_older_epoch(tmp_path: Path, clock: ManualClock) -> None:
    data_dir, offsets = store(tmp_path, clock)
    offsets.stage("g", 7, 0, [("t", 0, 3, "")])
    offsets.complete_staged(partition_for("g", PARTITIONS), 7, 1, commit=False)  # bumped epoch
    assert offsets.committed("g") == {} and offsets.staged_partitions("g") == set()
    with pytest.raises(ProducerFencedError):
        offsets.stage("g", 7, 0, [("t", 0, 4, "")])  # the zombie, after the abort
    data_dir.close()


def test_staged_offsets_survive_a_reload_and_block_the_partition_snapshot(tmp_path: Path, clock: ManualClock) -> None:
    data_dir, offsets = store(tmp_path, clock)
    offsets.commit("other", [("t", 0, 1, "")])
    offsets.stage("g", 7, 2, [("t", 1, 9, "")])
    staged_partition = partition_for("g", PARTITIONS)
    snapshots = offsets.take_snapshots(force=True)
    assert staged_partition not in {s.partition_log.partition for s in snapshots}
    for snapshot in snapshots:
        snapshot.write()
    data_dir.close()
    data_dir, reloaded = store(tmp_path, clock)
    assert reloaded.staged_partitions("g") == {("t", 1)}
    reloaded.complete_staged(staged_partition, 7, 2, commit=True)
    assert reloaded.get("g", "t", 1).offset == 9  # type: ignore[union-attr]
    data_dir.close()
