"""The transaction coordinator with a cluster's marker sender (``marker_sender``, the hook
``logstore.cluster.txn_markers`` fills): a transaction stays PREPARE_* until ``finish``, the
same id's next transaction waits (CONCURRENT_TRANSACTIONS), a coordinator loading a PREPARE_*
state sends its markers again, an open one is taken over as it is, and a new instance's
InitProducerId aborts an open transaction at a bumped epoch. Real data directory and log; the
hook records what it is handed instead of sending it to other brokers."""

from __future__ import annotations

from pathlib import Path

import pytest

from logstore.broker import Broker
from logstore.broker.producer_ids import ProducerIdPool
from logstore.broker.transactions import TransactionCoordinator
from logstore.errors import ConcurrentTransactionsError
from logstore.storage import ManualClock

from .helpers import opened, run

Sent = list[tuple[str, int, list[tuple[str, int]], bool]]


def clustered(broker: Broker, clock: ManualClock, leader_epoch: int) -> tuple[TransactionCoordinator, Sent]:
    """A clustered coordinator over the broker's data directory, leading at ``leader_epoch``;
    returns it and the list of (transactional id, producer epoch, partitions, commit) handed to
    its marker sender."""
    sent: Sent = []
    coordinator = TransactionCoordinator(broker.data_dir, clock, broker.offsets, broker._write_markers,
                                         clustered=True)
    coordinator.leadership = lambda: leader_epoch
    coordinator.id_pool = ProducerIdPool()
    coordinator.id_pool.add_block(5000, 6000)
    coordinator.marker_sender = lambda t, commit: sent.append(
        (t.transactional_id, t.producer_epoch, sorted(t.partitions), commit))
    coordinator.current()
    return coordinator, sent


def test_a_transaction_stays_prepared_until_its_markers_are_written(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            coordinator, sent = clustered(broker, clock, 1)
            pid, epoch = coordinator.init_producer_id("tx")
            coordinator.add_partitions("tx", pid, epoch, [("t", 0), ("t", 1)], ["g"])
            coordinator.end("tx", pid, epoch, commit=True)
            offsets_partition = ("__consumer_offsets", broker.offsets.partition_of("g"))
            assert sent == [("tx", epoch, sorted([("t", 0), ("t", 1), offsets_partition]), True)]
            assert coordinator.transactions["tx"].state == "prepare_commit"
            for call in (lambda: coordinator.add_partitions("tx", pid, epoch, [("t", 0)]),
                         lambda: coordinator.end("tx", pid, epoch, commit=True),
                         lambda: coordinator.init_producer_id("tx")):
                with pytest.raises(ConcurrentTransactionsError):
                    call()

            # the coordinator dies before COMPLETE: the next one sends the markers again
            successor, resent = clustered(broker, clock, 2)
            assert resent == sent
            assert successor.finish("tx", pid, epoch, commit=True) is True
            assert successor.transactions["tx"].state == "complete_commit"
            successor.add_partitions("tx", pid, epoch, [("t", 0)])  # the next transaction
            assert successor.transactions["tx"].state == "ongoing"

    run(body())


def test_an_open_transaction_is_taken_over_and_aborted_at_a_bumped_epoch_by_a_new_instance(
    tmp_path: Path, clock: ManualClock
) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            coordinator, _ = clustered(broker, clock, 1)
            pid, epoch = coordinator.init_producer_id("tx")
            coordinator.add_partitions("tx", pid, epoch, [("t", 0)])
            successor, sent = clustered(broker, clock, 2)
            assert sent == [] and successor.transactions["tx"].state == "ongoing"  # taken over
            with pytest.raises(ConcurrentTransactionsError):
                successor.init_producer_id("tx")  # a new instance: the open one is aborted first
            assert sent == [("tx", epoch + 1, [("t", 0)], False)]  # its markers fence epoch
            successor.finish("tx", pid, epoch + 1, commit=False)
            assert successor.init_producer_id("tx") == (pid, epoch + 2)

    run(body())
