"""Committed offsets under a cluster's leadership hook: a partition's state is reloaded from its
log at each new leader epoch, snapshotted only while it is led at the epoch it was loaded at, and
unloaded once it is not led."""

from __future__ import annotations

from pathlib import Path

import pytest

from logstore.broker.internal import OFFSETS_TOPIC, append_entries, encode_key, encode_value
from logstore.errors import NotLeaderError
from logstore.storage import ManualClock

from .helpers import opened, produce, run


def test_a_partition_is_reloaded_at_a_new_leader_epoch_and_snapshotted_only_while_led(
    tmp_path: Path, clock: ManualClock
) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            await produce(broker, "t", 0, *[b"v%d" % i for i in range(10)])
            store = broker.offsets
            led = store.partition_of("g")
            epoch: list[int | None] = [3]

            def leadership(partition: int) -> int:
                if partition != led or epoch[0] is None:
                    raise NotLeaderError(OFFSETS_TOPIC, partition)
                return epoch[0]

            store.leadership = leadership
            assert store.current(led) is True  # loaded at epoch 3
            store.commit("g", [("t", 0, 4, "")])
            # a record the store did not write (as a follower's fetch appends them)
            log = broker.data_dir.log(OFFSETS_TOPIC, led)
            value = encode_value({"offset": 9, "metadata": "", "ts": 0})
            append_entries(log, [(encode_key("offset", "g", "t", 0), value)])
            assert store.current(led) is False  # the same epoch: nothing reloaded
            assert store.get("g", "t", 0).offset == 4  # type: ignore[union-attr]

            epoch[0] = None  # leadership moved away
            assert store.take_snapshots(force=True) == []
            broker.release_unled_groups()  # (housekeeping) unloaded
            assert store.get("g", "t", 0) is None
            with pytest.raises(NotLeaderError):
                store.current(led)

            epoch[0] = 5  # led again, at a new epoch: the log is the truth
            assert store.current(led) is True
            assert store.get("g", "t", 0).offset == 9  # type: ignore[union-attr]
            assert [s.partition_log.partition for s in store.take_snapshots(force=True)] == [led]

    run(body())
