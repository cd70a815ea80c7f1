"""The transaction coordinator under a cluster's leadership hook: its state is reloaded from the
``__transaction_state`` log at each new leader epoch, written at that epoch, snapshotted only
while it is led at the epoch it was loaded at, and unloaded once it is not led."""

from __future__ import annotations

from pathlib import Path

import pytest

from logstore.broker.internal import TRANSACTIONS_TOPIC
from logstore.broker.producer_ids import ProducerIdPool
from logstore.broker.transactions import TransactionCoordinator
from logstore.errors import NotLeaderError
from logstore.storage import ManualClock

from .helpers import opened, run


def test_the_state_is_reloaded_at_a_new_leader_epoch_and_snapshotted_only_while_led(
    tmp_path: Path, clock: ManualClock
) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            writer = broker.transactions  # a single node's coordinator writes the log...
            pid, epoch = writer.init_producer_id("tx")
            log = broker.data_dir.log(TRANSACTIONS_TOPIC, 0)
            # ...which a clustered broker's coordinator only reads once it leads the topic
            coordinator = TransactionCoordinator(
                broker.data_dir, clock, broker.offsets, broker._write_markers, clustered=True
            )
            assert coordinator.transactions == {}  # nothing loaded (nor written) at start-up
            leader_epoch: list[int | None] = [None]

            def leadership() -> int:
                if leader_epoch[0] is None:
                    raise NotLeaderError(TRANSACTIONS_TOPIC, 0)
                return leader_epoch[0]

            coordinator.leadership = leadership
            coordinator.id_pool = ProducerIdPool()
            with pytest.raises(NotLeaderError):
                coordinator.current()
            assert coordinator.take_snapshots(force=True) == []

            leader_epoch[0] = 4
            assert coordinator.current() is True
            assert coordinator.current() is False  # the same epoch: nothing reloaded
            assert coordinator.init_producer_id("tx") == (pid, epoch + 1)  # fences the old one
            assert log.epochs.latest_epoch == 4  # written as the leader at epoch 4
            writer.init_producer_id("other")  # a record this coordinator did not write (a fetch)
            assert "other" not in coordinator.transactions

            leader_epoch[0] = None  # leadership moved away
            assert coordinator.take_snapshots(force=True) == []
            assert coordinator.release_unled() is True
            assert coordinator.transactions == {}

            leader_epoch[0] = 7  # led again, at a new epoch: the log is the truth
            assert coordinator.current() is True
            assert coordinator.transactions["tx"].producer_epoch == epoch + 1
            assert "other" in coordinator.transactions
            assert len(coordinator.take_snapshots(force=True)) == 1

    run(body())
