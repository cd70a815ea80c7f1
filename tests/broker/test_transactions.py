"""Transactions through the broker: markers, last stable offset, aborts, fencing, timeouts,
transactional offsets, deleted topics, and restarts in the middle of a transaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logstore.broker import Broker, FetchItem, Isolation, ListOffsetsItem, OffsetSpec, ProduceItem
from logstore.broker.internal import TRANSACTIONS_TOPIC
from logstore.broker.producer_state import ABORT_MARKER, COMMIT_MARKER
from logstore.broker.transactions import (
    COMPLETE_ABORT,
    COMPLETE_COMMIT,
    ONGOING,
    PREPARE_ABORT,
    PREPARE_COMMIT,
)
from logstore.errors import (
    InvalidRequestError,
    InvalidTransactionStateError,
    ProducerFencedError,
    TransactionAbortedError,
    UnknownTransactionalIdError,
    UnstableOffsetCommitError,
)
from logstore.records import decode_records, encode_batch
from logstore.storage import ManualClock

from .helpers import LIGHT, committed_records, crash, open_broker, opened, produce, run

TID = "tx"


class SimulatedCrash(Exception):
    pass


class TxProducer:
    """A transactional producer as a client drives the API."""

    def __init__(self, broker: Broker, transactional_id: str = TID, timeout_ms: int = 0) -> None:
        self.broker = broker
        self.transactional_id = transactional_id
        self.pid, self.epoch = broker.init_producer_id(transactional_id, timeout_ms)
        self.sequences: dict[tuple[str, int], int] = {}

    def add(self, *partitions: tuple[str, int]) -> None:
        self.broker.add_partitions_to_txn(self.transactional_id, self.pid, self.epoch, list(partitions))

    async def send(self, topic: str, partition: int, *values: bytes) -> int:
        """Produce one transactional batch; returns its base offset."""
        seq = self.sequences.get((topic, partition), 0)
        outcome = await produce(
            self.broker, topic, partition, *values,
            producer_id=self.pid, producer_epoch=self.epoch, base_sequence=seq, transactional=True,
        )
        self.sequences[(topic, partition)] = seq + len(values)
        return outcome.base_offset

    def commit(self) -> None:
        self.broker.end_txn(self.transactional_id, self.pid, self.epoch, True)

    def abort(self) -> None:
        self.broker.end_txn(self.transactional_id, self.pid, self.epoch, False)

    def end_after_batches(self, sequences: dict[tuple[str, int], int]) -> None:
        self.broker.end_txn_after_batches(
            self.transactional_id, self.pid, self.epoch, True,
            [(topic, partition, sequence) for (topic, partition), sequence in sequences.items()],
        )


async def visible(broker: Broker, topic: str = "t", partition: int = 0) -> list[bytes | None]:
    return [r.value for r in await committed_records(broker, topic, partition)]


def markers(broker: Broker, topic: str = "t", partition: int = 0) -> list[bytes | None]:
    data = broker.data_dir.log(topic, partition).read(0, 1 << 30).data
    return [r.key for r in decode_records(data, skip_control=False) if r.key in (COMMIT_MARKER, ABORT_MARKER)]


def lso(broker: Broker, topic: str = "t", partition: int = 0) -> int:
    return broker.last_stable_offset(broker.data_dir.log(topic, partition))


def log_end(broker: Broker, topic: str = "t", partition: int = 0) -> int:
    return broker.data_dir.log(topic, partition).log_end_offset


def test_commit_writes_a_commit_marker_and_makes_the_records_visible(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            await produce(broker, "t", 0, b"plain")
            tx = TxProducer(broker)
            tx.add(("t", 0), ("t", 1))
            first = await tx.send("t", 0, b"a", b"b")
            await tx.send("t", 1, b"c")
            await tx.send("t", 0, b"d")
            assert await visible(broker) == [b"plain"]
            assert await visible(broker, "t", 1) == []
            assert lso(broker) == first == 1
            assert lso(broker, "t", 1) == 0
            (listed,) = broker.list_offsets([ListOffsetsItem("t", 0, OffsetSpec.LATEST)], Isolation.READ_COMMITTED)
            assert listed.offset == 1
            uncommitted = await committed_records(broker, "t", 0, Isolation.READ_UNCOMMITTED)
            assert [r.value for r in uncommitted] == [b"plain", b"a", b"b", b"d"]
            tx.commit()
            assert markers(broker, "t", 0) == markers(broker, "t", 1) == [COMMIT_MARKER]
            assert await visible(broker) == [b"plain", b"a", b"b", b"d"]
            assert await visible(broker, "t", 1) == [b"c"]
            assert lso(broker) == log_end(broker) == 5  # plain, a, b, d, marker
            assert broker.transactions.transactions[TID].state == COMPLETE_COMMIT

    run(body())


@pytest.mark.parametrize("flush", ["always", "never"])
def test_a_commit_fsyncs_only_what_the_flush_policy_asks(tmp_path: Path, clock: ManualClock, flush: str) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock, LIGHT) as broker:
            broker.create_topic("t", 2, {"flush": flush})
            partition_log = broker.data_dir.log("t", 0)
            state_log = broker.data_dir.log(TRANSACTIONS_TOPIC, 0)
            tx = TxProducer(broker)
            await tx.send("t", 0, b"a")
            await tx.send("t", 1, b"b")  # two partitions: a PREPARE record
            state_durable = state_log.recovery_point
            tx.commit()
            assert markers(broker, "t", 0) == markers(broker, "t", 1) == [COMMIT_MARKER]
            if flush == "always":  # the markers and the PREPARE record are on disk
                assert partition_log.recovery_point == log_end(broker) == 2
                assert state_log.recovery_point > state_durable
            else:  # neither waited for: the log's flush policy decides when
                assert partition_log.recovery_point == 0
                assert state_log.recovery_point == state_durable

    run(body())


def test_the_last_stable_offset_holds_back_later_non_transactional_records(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker)
            tx.add(("t", 0))
            await tx.send("t", 0, b"tx")
            await produce(broker, "t", 0, b"after")
            assert lso(broker) == 0
            assert await visible(broker) == []
            tx.commit()
            assert await visible(broker) == [b"tx", b"after"]

    run(body())


def test_abort_lists_the_aborted_range_and_read_committed_drops_it(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker)
            tx.add(("t", 0))
            first = await tx.send("t", 0, b"x1", b"x2")
            await produce(broker, "t", 0, b"plain")  # another producer, inside the range
            await tx.send("t", 0, b"x3")
            tx.abort()
            assert markers(broker) == [ABORT_MARKER]
            assert lso(broker) == log_end(broker)
            (outcome,) = await broker.fetch([FetchItem("t", 0, 0)], isolation=Isolation.READ_COMMITTED)
            assert [(a.producer_id, a.first_offset, a.last_offset) for a in outcome.aborted] == [
                (tx.pid, first, log_end(broker) - 1)
            ]
            assert await visible(broker) == [b"plain"]
            # the next transaction of the same producer is not affected by the abort
            tx.add(("t", 0))
            await tx.send("t", 0, b"y")
            tx.commit()
            assert await visible(broker) == [b"plain", b"y"]

    run(body())


def test_a_second_init_aborts_the_open_transaction_and_fences_the_old_epoch(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            old = TxProducer(broker)
            old.add(("t", 0))
            await old.send("t", 0, b"zombie")
            new = TxProducer(broker)
            assert (new.pid, new.epoch) == (old.pid, old.epoch + 1)
            assert markers(broker) == [ABORT_MARKER]
            assert lso(broker) == log_end(broker)
            with pytest.raises(ProducerFencedError):
                old.add(("t", 0))
            with pytest.raises(ProducerFencedError):
                await old.send("t", 0, b"zombie2")
            with pytest.raises(ProducerFencedError):
                old.commit()
            end = log_end(broker)
            new.add(("t", 0))
            await new.send("t", 0, b"fresh")
            new.commit()
            assert log_end(broker) == end + 2
            assert await visible(broker) == [b"fresh"]

    run(body())


def test_a_timed_out_transaction_is_aborted_and_its_producer_fenced(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker, timeout_ms=5_000)
            tx.add(("t", 0))
            await tx.send("t", 0, b"slow")
            clock.advance(5_000)
            assert broker.transactions.expire() == 0
            clock.advance(1)
            assert broker.transactions.expire() == 1
            assert markers(broker) == [ABORT_MARKER]
            assert await visible(broker) == []
            assert lso(broker) == log_end(broker)
            with pytest.raises(ProducerFencedError):
                await tx.send("t", 0, b"late")
            with pytest.raises(ProducerFencedError):
                tx.commit()
            again = TxProducer(broker)
            again.add(("t", 0))
            await again.send("t", 0, b"retry")
            again.commit()
            assert await visible(broker) == [b"retry"]

    run(body())


def test_offsets_sent_to_a_transaction_become_visible_only_on_commit(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            broker.create_topic("in", 1)
            await produce(broker, "in", 0, b"1", b"2", b"3")
            for commit in (False, True):
                tx = TxProducer(broker)
                tx.add(("t", 0))
                await tx.send("t", 0, b"out")
                broker.txn_offset_commit(TID, tx.pid, tx.epoch, "g", "", -1, [("in", 0, 3, "m")])
                (info,) = broker.fetch_offsets("g", [("in", 0)])
                assert info.offset == -1
                with pytest.raises(UnstableOffsetCommitError):
                    broker.fetch_offsets("g", [("in", 0)], require_stable=True)
                if commit:
                    tx.commit()
                else:
                    tx.abort()
                (info,) = broker.fetch_offsets("g", [("in", 0)], require_stable=True)
                assert (info.offset, info.metadata) == ((3, "m") if commit else (-1, ""))

    run(body())


def test_a_transaction_touching_a_deleted_topic_aborts_cleanly(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            broker.create_topic("doomed", 1)
            tx = TxProducer(broker)
            tx.add(("t", 0), ("doomed", 0))
            await tx.send("t", 0, b"a")
            await tx.send("doomed", 0, b"b")
            broker.txn_offset_commit(TID, tx.pid, tx.epoch, "g", "", -1, [("t", 0, 0, "")])
            broker.delete_topic("doomed")
            assert lso(broker) == log_end(broker)
            with pytest.raises(TransactionAbortedError):
                tx.commit()
            assert markers(broker) == [ABORT_MARKER]
            assert await visible(broker) == []
            assert broker.fetch_offsets("g") == []
            # the producer carries on with its next transaction
            tx.add(("t", 0))
            await tx.send("t", 0, b"c")
            tx.commit()
            assert await visible(broker) == [b"c"]

    run(body())


def test_a_restarted_producer_can_transact_after_its_topic_was_deleted(tmp_path: Path, clock: ManualClock) -> None:
    """The broker aborted the transaction for a deleted topic; the producer then restarts
    (InitProducerId) without ever hearing about it — its new transactions must not fail."""
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            broker.create_topic("doomed", 1)
            old = TxProducer(broker)
            old.add(("doomed", 0))
            await old.send("doomed", 0, b"b")
            broker.delete_topic("doomed")
            new = TxProducer(broker)
            new.add(("t", 0))
            await new.send("t", 0, b"c")
            new.commit()
            assert await visible(broker) == [b"c"]

    run(body())


def test_a_transactional_batch_adds_its_partition_to_the_transaction(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            tx = TxProducer(broker)
            await tx.send("t", 0, b"a")  # no AddPartitionsToTxn: the batch begins the transaction
            await tx.send("t", 1, b"b")
            assert lso(broker, "t", 0) == 0 and lso(broker, "t", 1) == 0
            tx.commit()  # a marker goes to both partitions
            assert markers(broker, "t", 0) == markers(broker, "t", 1) == [COMMIT_MARKER]
            assert await visible(broker, "t", 0) == [b"a"] and await visible(broker, "t", 1) == [b"b"]
            await tx.send("t", 0, b"c")  # the next batch begins the next transaction
            tx.abort()
            assert markers(broker, "t", 0) == [COMMIT_MARKER, ABORT_MARKER]
            assert await visible(broker, "t", 0) == [b"a"]

    run(body())


def test_a_request_adding_several_partitions_writes_no_state_record(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock, LIGHT) as broker:
            broker.create_topic("t", 3)
            tx = TxProducer(broker)
            state_log = broker.data_dir.log(TRANSACTIONS_TOPIC, 0)
            before = state_log.log_end_offset
            stamp = {"producer_id": tx.pid, "producer_epoch": tx.epoch, "base_sequence": 0,
                     "transactional": True}
            outcomes = await broker.produce(
                [ProduceItem("t", p, encode_batch([b"v"], **stamp)) for p in range(3)])
            assert all(outcome.error is None for outcome in outcomes)
            assert state_log.log_end_offset == before  # the partitions' producer state knows
            assert broker.transactions.transactions[TID].partitions == {("t", 0), ("t", 1), ("t", 2)}
            tx.commit()
            assert state_log.log_end_offset == before + 2  # PREPARE, COMPLETE: 3 markers
            assert [markers(broker, "t", p) for p in range(3)] == [[COMMIT_MARKER]] * 3

    run(body())


def test_an_end_behind_the_batches_aborts_a_transaction_with_a_partition_not_counted(
    tmp_path: Path, clock: ManualClock
) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            tx = TxProducer(broker)
            tx.end_after_batches({})  # nothing sent: nothing to end
            await tx.send("t", 0, b"a")
            await tx.send("t", 1, b"b")
            with pytest.raises(TransactionAbortedError, match="t/1 has records in the transaction"):
                tx.end_after_batches({("t", 0): 1})  # the producer lost count of partition 1
            assert markers(broker, "t", 1) == [ABORT_MARKER]
            assert broker.transactions.transactions[TID].state == COMPLETE_ABORT
            await tx.send("t", 0, b"c")
            tx.end_after_batches({("t", 0): 2})
            assert await visible(broker, "t", 0) == [b"c"]

    run(body())


def test_an_end_sent_again_is_not_answered_as_committed_when_recovery_aborted_the_batches(
    tmp_path: Path, clock: ManualClock
) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker)
            await tx.send("t", 0, b"a")
            tx.end_after_batches({("t", 0): 1})
            await tx.send("t", 0, b"b")
            # the ONGOING record is lost (a power loss): the coordinator still says the last
            # transaction committed, and the partition's orphan is aborted when its state loads
            transaction = broker.transactions.transactions[TID]
            transaction.state, transaction.partitions = COMPLETE_COMMIT, set()
            broker.forget_producer_state("t", 0)
            broker.producer_state(broker.data_dir.log("t", 0))
            with pytest.raises(TransactionAbortedError, match="last records in t/0 were aborted"):
                tx.end_after_batches({("t", 0): 2})
            assert await visible(broker) == [b"a"]

    run(body())


def test_a_transaction_over_one_partition_writes_one_state_record(
    tmp_path: Path, clock: ManualClock
) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock, LIGHT) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker)
            state_log = broker.data_dir.log(TRANSACTIONS_TOPIC, 0)
            written = []
            for _ in range(2):
                before = state_log.log_end_offset
                await tx.send("t", 0, b"v")  # a request of its own, then the end
                await tx.send("t", 0, b"w")
                tx.end_after_batches(dict(tx.sequences))
                written.append(state_log.log_end_offset - before)
            assert written == [1, 1]  # COMPLETE_COMMIT alone: the marker is the commit point
            assert markers(broker) == [COMMIT_MARKER, COMMIT_MARKER]
            assert await visible(broker) == [b"v", b"w", b"v", b"w"]

    run(body())


@pytest.mark.parametrize("marker", [False, True], ids=["before_the_marker", "after_the_marker"])
def test_a_crash_ending_a_one_partition_transaction_keeps_it_whole(
    tmp_path: Path, clock: ManualClock, marker: bool
) -> None:
    """No ONGOING nor PREPARE record: stopped before its marker the transaction is an orphan
    the restart aborts; stopped after it, it stays committed."""
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker)
            await tx.send("t", 0, b"a")
            tx.end_after_batches(dict(tx.sequences))
            await tx.send("t", 0, b"b", b"c")
            write_markers = broker.transactions.write_markers

            def crash_around_marker(pid: int, epoch: int, partitions: list[tuple[str, int]], commit: bool) -> None:
                if marker:
                    write_markers(pid, epoch, partitions, commit)
                raise SimulatedCrash()

            broker.transactions.write_markers = crash_around_marker
            with pytest.raises(SimulatedCrash):
                tx.end_after_batches(dict(tx.sequences))
            crash(broker)
        async with opened(tmp_path, clock) as broker:
            assert await visible(broker) == ([b"a", b"b", b"c"] if marker else [b"a"])
            assert markers(broker) == [COMMIT_MARKER, COMMIT_MARKER if marker else ABORT_MARKER]
            assert lso(broker) == log_end(broker)

    run(body())


def test_a_restart_aborts_a_transaction_its_batches_began_and_the_producer_goes_on(
    tmp_path: Path, clock: ManualClock
) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker)
            await tx.send("t", 0, b"a")  # no state record: the partition knows
            crash(broker)
        async with opened(tmp_path, clock) as broker:
            tx.broker = broker
            assert lso(broker) == log_end(broker)  # its producer state loads: the orphan is aborted
            assert markers(broker) == [ABORT_MARKER]
            with pytest.raises(TransactionAbortedError, match="last records in t/0 were aborted"):
                tx.end_after_batches(dict(tx.sequences))
            await tx.send("t", 0, b"b")  # the same epoch: the next transaction
            tx.end_after_batches(dict(tx.sequences))
            assert await visible(broker) == [b"b"]

    run(body())


def test_a_transactional_batch_needs_a_transactional_id(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            pid, epoch = broker.init_producer_id()  # idempotent only: no transactions
            with pytest.raises(InvalidTransactionStateError):
                await produce(broker, "t", 0, b"x", producer_id=pid, producer_epoch=epoch,
                              base_sequence=0, transactional=True)
            assert log_end(broker, "t", 0) == 0

    run(body())


def test_a_transactional_retry_is_deduplicated(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker)
            tx.add(("t", 0))
            data = encode_batch([b"once"], producer_id=tx.pid, producer_epoch=tx.epoch,
                                base_sequence=0, transactional=True)
            (first,) = await broker.produce([ProduceItem("t", 0, data)])
            (again,) = await broker.produce([ProduceItem("t", 0, data)])
            assert again.duplicate and again.base_offset == first.base_offset
            tx.commit()
            assert await visible(broker) == [b"once"]

    run(body())


def test_ending_an_empty_transaction_writes_nothing(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker)
            tx.commit()
            tx.abort()
            assert log_end(broker) == 0

    run(body())


def test_bad_transactional_ids_and_timeouts_are_refused(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            with pytest.raises(UnknownTransactionalIdError):
                broker.add_partitions_to_txn("never-initialised", 1, 0, [("t", 0)])
            with pytest.raises(InvalidRequestError):
                broker.init_producer_id(TID, timeout_ms=-5)
            with pytest.raises(InvalidRequestError):
                broker.init_producer_id(TID, timeout_ms=24 * 3600 * 1000)

    run(body())


# -- restarts in the middle ------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["clean", "crash"])
def test_a_restart_aborts_an_ongoing_transaction(tmp_path: Path, clock: ManualClock, stop: str) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 2)
            broker.create_topic("in", 1)
            await produce(broker, "in", 0, b"1")
            tx = TxProducer(broker)
            tx.add(("t", 0), ("t", 1))
            await tx.send("t", 0, b"a")
            await tx.send("t", 1, b"b")
            broker.txn_offset_commit(TID, tx.pid, tx.epoch, "g", "", -1, [("in", 0, 1, "")])
            assert broker.transactions.transactions[TID].state == ONGOING
            if stop == "crash":
                crash(broker)
        async with opened(tmp_path, clock) as broker:
            tx.broker = broker
            assert broker.transactions.transactions[TID].state == COMPLETE_ABORT
            for partition in (0, 1):
                assert markers(broker, "t", partition) == [ABORT_MARKER]
                assert await visible(broker, "t", partition) == []
                assert lso(broker, "t", partition) == log_end(broker, "t", partition)
            assert broker.fetch_offsets("g") == []
            with pytest.raises(ProducerFencedError):
                await tx.send("t", 0, b"zombie")
            with pytest.raises(ProducerFencedError):
                tx.commit()

    run(body())


@pytest.mark.parametrize("commit", [True, False], ids=["prepare_commit", "prepare_abort"])
def test_a_crash_while_writing_markers_is_finished_on_restart(tmp_path: Path, clock: ManualClock, commit: bool) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 3)
            broker.create_topic("in", 1)
            await produce(broker, "in", 0, b"1", b"2")
            tx = TxProducer(broker)
            tx.add(("t", 0), ("t", 1), ("t", 2))
            for partition in range(3):
                await tx.send("t", partition, b"p%d" % partition)
            broker.txn_offset_commit(TID, tx.pid, tx.epoch, "g", "", -1, [("in", 0, 2, "")])
            write_markers = broker.transactions.write_markers

            def first_then_crash(pid: int, epoch: int, partitions: list[tuple[str, int]], commit: bool) -> None:
                write_markers(pid, epoch, partitions[:1], commit)
                raise SimulatedCrash()

            broker.transactions.write_markers = first_then_crash
            with pytest.raises(SimulatedCrash):
                broker.end_txn(TID, tx.pid, tx.epoch, commit)
            state = broker.transactions.transactions[TID].state
            assert state == (PREPARE_COMMIT if commit else PREPARE_ABORT)
            assert await visible(broker, "t", 0) == ([b"p0"] if commit else [])
            assert await visible(broker, "t", 1) == []  # half visible — until the restart
            crash(broker)
        async with opened(tmp_path, clock) as broker:
            assert broker.transactions.transactions[TID].state == (COMPLETE_COMMIT if commit else COMPLETE_ABORT)
            for partition in range(3):
                expected = [b"p%d" % partition] if commit else []
                assert await visible(broker, "t", partition) == expected
                assert lso(broker, "t", partition) == log_end(broker, "t", partition)
                assert set(markers(broker, "t", partition)) == {COMMIT_MARKER if commit else ABORT_MARKER}
            assert [o.offset for o in broker.fetch_offsets("g")] == ([2] if commit else [])

    run(body())


def test_a_crash_after_the_prepare_record_before_any_marker_is_finished_on_restart(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker)
            tx.add(("t", 0))
            await tx.send("t", 0, b"x")

            def crash_now(*_: object) -> None:
                raise SimulatedCrash()

            broker.transactions.write_markers = crash_now
            with pytest.raises(SimulatedCrash):
                tx.commit()
            assert await visible(broker) == []
            crash(broker)
        async with opened(tmp_path, clock) as broker:
            assert await visible(broker) == [b"x"]
            # a new instance of the producer starts cleanly
            again = TxProducer(broker)
            again.add(("t", 0))
            await again.send("t", 0, b"y")
            again.commit()
            assert await visible(broker) == [b"x", b"y"]

    run(body())


def test_a_failed_marker_write_is_finished_by_the_next_init(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            tx = TxProducer(broker)
            tx.add(("t", 0))
            await tx.send("t", 0, b"x")
            write_markers = broker.transactions.write_markers

            def fail(*_: object) -> None:
                raise SimulatedCrash()

            broker.transactions.write_markers = fail
            with pytest.raises(SimulatedCrash):
                tx.commit()
            with pytest.raises(InvalidTransactionStateError):
                tx.commit()  # it is PREPARE_COMMIT now: only finishing it is possible
            broker.transactions.write_markers = write_markers
            TxProducer(broker)
            assert await visible(broker) == [b"x"]
            assert broker.transactions.transactions[TID].state == "empty"

    run(body())


def test_transaction_state_survives_compaction_of_its_topic(tmp_path: Path, clock: ManualClock) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            broker.create_topic("t", 1)
            for _ in range(30):
                tx = TxProducer(broker)
                tx.add(("t", 0))
                await tx.send("t", 0, b"x")
                tx.commit()
            other = TxProducer(broker, "other")
            (state_log,) = broker.data_dir.topic(TRANSACTIONS_TOPIC).logs
            state_log.roll()
            (result,) = [r for r in broker.data_dir.run_compaction(force=True) if r.records_removed]
            assert result.records_removed > 100
        async with opened(tmp_path, clock) as broker:
            again = TxProducer(broker)
            assert (again.pid, again.epoch) == (tx.pid, tx.epoch + 1)
            assert TxProducer(broker, "other").epoch == other.epoch + 1
            assert broker.init_producer_id()[0] not in (tx.pid, other.pid)

    run(body())


# -- a random run against a model ----------------------------------------------------------------

steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 1), st.integers(0, 1)),  # producer, partition
        st.tuples(st.just("plain"), st.just(0), st.integers(0, 1)),  # a non-transactional record
        st.tuples(st.sampled_from(["commit", "abort", "reinit"]), st.integers(0, 1), st.just(0)),
        st.tuples(st.sampled_from(["clean", "crash"]), st.just(0), st.just(0)),
    ),
    min_size=1, max_size=14,
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps)
def test_read_committed_sees_exactly_the_committed_transactions(tmp_path_factory, script) -> None:  # type: ignore[no-untyped-def]
    """Two transactional producers, plain appends, commits, aborts, re-inits and restarts: a
    read_committed reader sees, in offset order, the plain records and the committed
    transactions below the first offset of any open transaction — nothing else, and never
    part of a transaction."""
    path = tmp_path_factory.mktemp("txn")
    clock = ManualClock()

    async def body() -> None:
        broker = await open_broker(path, clock, LIGHT)
        broker.create_topic("t", 2)
        producers = [TxProducer(broker, f"p{i}") for i in range(2)]
        pending: list[dict[int, list[tuple[int, bytes]]]] = [{}, {}]  # producer: partition -> records
        done: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}  # committed or plain
        for step, (op, who, partition) in enumerate(script):
            value = b"%s-%d" % (op.encode(), step)
            if op == "send":
                tx = producers[who]
                tx.add(("t", partition))
                offset = await tx.send("t", partition, value)
                pending[who].setdefault(partition, []).append((offset, value))
            elif op == "plain":
                outcome = await produce(broker, "t", partition, value)
                done[partition].append((outcome.base_offset, value))
            elif op in ("commit", "abort"):
                getattr(producers[who], op)()
                if op == "commit":
                    for p, records in pending[who].items():
                        done[p] += records
                pending[who] = {}
            elif op == "reinit":  # a new instance: its open transaction is aborted
                producers[who] = TxProducer(broker, f"p{who}")
                pending[who] = {}
            else:  # a restart aborts open transactions; the producers initialise again
                if op == "crash":
                    crash(broker)
                else:
                    await broker.close()
                broker = await open_broker(path, clock, LIGHT)
                producers = [TxProducer(broker, f"p{i}") for i in range(2)]
                pending = [{}, {}]
            for p in (0, 1):
                firsts = [records[0][0] for who_pending in pending for q, records in who_pending.items() if q == p]
                stable = min(firsts, default=log_end(broker, "t", p))
                assert lso(broker, "t", p) == stable
                wanted = [v for o, v in sorted(done[p]) if o < stable]
                assert await visible(broker, "t", p) == wanted, (step, op, p)
        await broker.close()

    run(body())
