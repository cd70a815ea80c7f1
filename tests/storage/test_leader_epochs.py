"""The leader epoch cache and replica appends: what a follower needs to copy a leader's log and
truncate exactly where the logs diverged."""

from __future__ import annotations

import pytest

from logstore.errors import CorruptBatchError
from logstore.storage.leader_epochs import FILE_NAME, LeaderEpochCache

from .helpers import value_batch


def test_append_assigns_epoch_start_offsets(open_log):
    log = open_log()
    log.append(value_batch(0, records=3), leader_epoch=1)
    log.append(value_batch(1, records=2), leader_epoch=1)
    log.append(value_batch(2, records=2), leader_epoch=4)
    assert log.epochs.entries == [(1, 0), (4, 5)]
    assert log.epochs.end_offset_for(1, log.log_end_offset) == (1, 5)
    assert log.epochs.end_offset_for(3, log.log_end_offset) == (1, 5)
    assert log.epochs.end_offset_for(4, log.log_end_offset) == (4, 7)
    assert log.epochs.end_offset_for(0, log.log_end_offset) == (-1, -1)


def test_epochs_survive_reopen_and_are_cut_with_the_log(open_log):
    log = open_log()
    log.append(value_batch(0, records=3), leader_epoch=1)
    log.append(value_batch(1, records=3), leader_epoch=2)
    log.close()
    log = open_log()
    assert log.epochs.entries == [(1, 0), (2, 3)]
    log.truncate_to(3)
    assert log.epochs.entries == [(1, 0)]


def test_missing_or_damaged_file_is_rebuilt_from_batch_headers(open_log, log_dir):
    log = open_log()
    log.append(value_batch(0, records=2), leader_epoch=3)
    log.append(value_batch(1, records=2), leader_epoch=7)
    log.close()
    (log_dir / FILE_NAME).write_text("0\n5\ngarbage\n")
    log = open_log()
    assert log.epochs.entries == [(3, 0), (7, 2)]
    log.close()
    (log_dir / FILE_NAME).unlink()
    assert open_log().epochs.entries == [(3, 0), (7, 2)]


def test_replica_append_keeps_leader_offsets_and_epochs(open_log, tmp_path):
    leader = open_log()
    leader.append(value_batch(0, records=2), leader_epoch=2)
    leader.append(value_batch(1, records=3), leader_epoch=5)
    data = bytes(leader.read(0, 1 << 20).data)
    from logstore.storage import PartitionLog

    follower = PartitionLog.open(tmp_path / "follower")
    result = follower.append_replica(data)
    assert (result.base_offset, result.log_end_offset) == (0, 5)
    assert bytes(follower.read(0, 1 << 20).data) == data
    assert follower.epochs.entries == [(2, 0), (5, 2)]
    follower.close()


def test_replica_append_refuses_a_gap_and_appends_nothing(open_log, tmp_path):
    leader = open_log()
    leader.append(value_batch(0, records=2), leader_epoch=1)
    leader.append(value_batch(1, records=2), leader_epoch=1)
    second = bytes(leader.read(2, 1 << 20).data)
    from logstore.storage import PartitionLog

    follower = PartitionLog.open(tmp_path / "follower")
    with pytest.raises(CorruptBatchError, match="does not continue the log at 0"):
        follower.append_replica(second)
    assert follower.log_end_offset == 0
    follower.close()


def test_truncate_fully_and_start_at(open_log):
    log = open_log()
    log.append(value_batch(0, records=4), leader_epoch=1)
    log.truncate_fully_and_start_at(100)
    assert (log.log_start_offset, log.log_end_offset) == (100, 100)
    assert log.epochs.entries == []
    assert log.append(value_batch(1), leader_epoch=2).base_offset == 100


def test_cache_refuses_out_of_order_file(tmp_path):
    (tmp_path / FILE_NAME).write_text("0\n2\n5 10\n3 20\n")
    assert LeaderEpochCache.load(tmp_path) is None


def test_a_single_nodes_epoch_zero_appends_never_touch_the_cache(open_log, log_dir):
    log = open_log()
    log.append(value_batch(0, records=3))
    log.append(value_batch(1, records=3), leader_epoch=0)
    log.close()
    assert not (log_dir / FILE_NAME).exists()
    log = open_log()
    assert log.epochs.entries == [] and log.epochs.latest_epoch == -1
