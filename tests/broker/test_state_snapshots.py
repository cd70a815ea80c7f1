"""Coordinator state snapshots through the broker: a start-up replays only what follows the
snapshot, every damaged or stale snapshot falls back to the log, and both paths give the same
state (a randomized test)."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from logstore.broker import Broker
from logstore.broker.groups.offsets import SNAPSHOT_FILE as OFFSETS_SNAPSHOT
from logstore.broker.internal import OFFSETS_TOPIC, TRANSACTIONS_TOPIC
from logstore.broker.snapshot_file import write_snapshot
from logstore.broker.state_checkpoints import write_all
from logstore.broker.txn_state_log import SNAPSHOT_FILE as TRANSACTIONS_SNAPSHOT
from logstore.storage import ManualClock, PartitionLog

from .helpers import LIGHT, crash, opened, produce, run


def state_of(broker: Broker) -> dict[str, Any]:
    """Everything the coordinators derive from their internal partitions."""
    transactions = broker.transactions
    return {
        "offsets": {
            g: {tp: tuple(c) for tp, c in broker.offsets.committed(g).items()} for g in broker.offsets.groups()
        },
        "transactions": {k: t.to_value() for k, t in transactions.transactions.items()},
        "producer_id_block_end": transactions._block_end,
    }


def checkpoint(broker: Broker) -> None:
    """A checkpoint round, written at once."""
    write_all(broker.offsets.take_snapshots() + broker.transactions.take_snapshots())


def loads(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int]]:
    """(source, records replayed) of every coordinator load logged."""
    return [
        (record.source, record.records) for record in caplog.records  # type: ignore[attr-defined]
        if hasattr(record, "source") and hasattr(record, "load_ms")
    ]


def snapshots(path: Path) -> list[Path]:
    return sorted(path.glob(f"{OFFSETS_TOPIC}-*/{OFFSETS_SNAPSHOT}")) + sorted(
        path.glob(f"{TRANSACTIONS_TOPIC}-*/{TRANSACTIONS_SNAPSHOT}")
    )


async def some_state(broker: Broker) -> None:
    broker.create_topic("t", 2)
    await produce(broker, "t", 0, *[b"x"] * 10)
    await produce(broker, "t", 1, *[b"y"] * 10)
    broker.commit_offsets("g1", "", -1, [("t", 0, 4, "m"), ("t", 1, 7, "")])
    broker.commit_offsets("g2", "", -1, [("t", 0, 9, "")])
    pid, epoch = broker.init_producer_id("tx")
    await produce(broker, "t", 0, b"in-tx", producer_id=pid, producer_epoch=epoch, base_sequence=0,
                  transactional=True)
    broker.txn_offset_commit("tx", pid, epoch, "g3", "", -1, [("t", 1, 3, "")])
    broker.end_txn("tx", pid, epoch, True)


def test_a_clean_restart_loads_every_coordinator_from_its_snapshot(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await some_state(broker)
            before = state_of(broker)
        assert len(snapshots(tmp_path)) == 5  # 4 offsets partitions and the transaction state
        caplog.clear()
        with caplog.at_level(logging.INFO):
            async with opened(tmp_path, clock) as broker:
                assert state_of(broker) == before
        assert loads(caplog) == [("snapshot", 0)] * 5

    run(body())


def test_groups_never_used_since_the_snapshot_go_into_the_next_one_unchanged(
    tmp_path: Path, clock: ManualClock
) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await some_state(broker)
            before = state_of(broker)
        async with opened(tmp_path, clock) as broker:  # loads the groups, uses none of them
            broker.commit_offsets("g5", "", -1, [("t", 1, 2, "new")])  # so the snapshots are rewritten
            before["offsets"]["g5"] = {("t", 1): (2, "new", clock.now_ms())}
        async with opened(tmp_path, clock) as broker:
            assert state_of(broker) == before

    run(body())


def test_commits_after_a_checkpoint_survive_a_crash(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash between the snapshot and the log: the records after the snapshot are replayed."""
    async def body() -> None:
        async with opened(tmp_path, clock, LIGHT) as broker:
            await some_state(broker)
            checkpoint(broker)
            broker.commit_offsets("g1", "", -1, [("t", 0, 6, "later")])
            broker.delete_group("g2")
            broker.commit_offsets("g4", "", -1, [("t", 1, 1, "")])
            expected = state_of(broker)
            crash(broker)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            async with opened(tmp_path, clock, LIGHT) as broker:
                assert state_of(broker) == expected
                assert "g2" not in broker.offsets.groups()
        assert loads(caplog)[0] == ("snapshot", 3)  # g1's commit, g2's tombstone, g4's commit

    run(body())


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "torn":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped byte":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:  # an older or newer format version: the frame is fine, the payload is not ours
        offset = int.from_bytes(data[24:32], "little", signed=True)
        write_snapshot(path, path.read_bytes()[8:16].rstrip(b"\0").decode(), int(how[1:]), offset, b"?")


@pytest.mark.parametrize("how", ["torn", "flipped byte", "v0", "v2"])
def test_a_damaged_or_foreign_snapshot_falls_back_to_the_log(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    async def body() -> None:
        async with opened(tmp_path, clock) as broker:
            await some_state(broker)
            before = state_of(broker)
        for path in snapshots(tmp_path):
            corrupt(path, how)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            async with opened(tmp_path, clock) as broker:
                assert state_of(broker) == before
        assert [source for source, _ in loads(caplog)] == ["log"] * 5
        assert caplog.text.count("ignoring the state snapshot") == 5

    run(body())


def test_a_snapshot_past_a_cut_log_end_falls_back_to_the_log(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged disk cut the internal log below the snapshot's offset: what the log lost is
    not resurrected from the snapshot."""
    async def body() -> None:
        async with opened(tmp_path, clock, LIGHT) as broker:
            await some_state(broker)
            broker.commit_offsets("g1", "", -1, [("t", 0, 8, "cut")])
            checkpoint(broker)
            crash(broker)
        segment = tmp_path / f"{OFFSETS_TOPIC}-0" / "00000000000000000000.log"
        data = segment.read_bytes()
        segment.write_bytes(data[:-5])  # the last commit's batch is torn
        caplog.clear()
        with caplog.at_level(logging.INFO):
            async with opened(tmp_path, clock, LIGHT) as broker:
                assert broker.offsets.get("g1", "t", 0).offset == 4  # type: ignore[union-attr]
        assert "the log was cut below it" in caplog.text
        assert loads(caplog)[0][0] == "log"

    run(body())


# -- the snapshot path and the replay path give the same state ---------------------------------------


class Workload:
    """Random commits, group and topic deletes, log cuts (offsets moved back), transactions
    committed, aborted and left open, checkpoints, clean and unclean restarts; ``model`` is what
    must be committed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.model: dict[str, dict[tuple[str, int], int]] = {}

    def topics(self, broker: Broker) -> list[tuple[str, int]]:
        return [(name, p) for name, count, _ in broker.list_topics() for p in range(count)]

    async def step(self, broker: Broker, clock: ManualClock) -> None:
        rng = self.rng
        action = rng.choice(["commit"] * 4 + ["produce"] * 2 + ["txn"] * 3 + ["delete_group", "topic", "checkpoint"])
        clock.advance(rng.randint(1, 50))
        if action == "produce":
            topic, partition = rng.choice(self.topics(broker))
            await produce(broker, topic, partition, *[b"r"] * rng.randint(1, 5))
        elif action == "commit":
            group = f"g{rng.randint(0, 5)}"
            available = self.topics(broker)
            chosen = rng.sample(available, rng.randint(1, min(3, len(available))))
            entries = [(t, p, self.offset(broker, t, p), "") for t, p in chosen]
            broker.commit_offsets(group, "", -1, entries)
            self.model.setdefault(group, {}).update({(t, p): o for t, p, o, _ in entries})
        elif action == "delete_group" and self.model:
            group = rng.choice(sorted(self.model))
            broker.delete_group(group)
            del self.model[group]
        elif action == "topic":
            if broker.data_dir.has_topic("u"):
                broker.delete_topic("u")
                for offsets in self.model.values():
                    for key in [k for k in offsets if k[0] == "u"]:
                        del offsets[key]
            else:
                broker.create_topic("u", 2)
        elif action == "checkpoint":
            checkpoint(broker)
        elif action == "txn":
            await self.transaction(broker)

    def offset(self, broker: Broker, topic: str, partition: int) -> int:
        """Often the log end: what a cut takes from below a group."""
        end = broker.data_dir.log(topic, partition).log_end_offset
        return end if self.rng.random() < 0.5 else self.rng.randint(0, end)

    async def transaction(self, broker: Broker) -> None:
        rng = self.rng
        tid = f"tx{rng.randint(0, 2)}"
        pid, epoch = broker.init_producer_id(tid)
        partition = rng.randint(0, 1)
        await produce(broker, "t", partition, b"t", producer_id=pid, producer_epoch=epoch,
                      base_sequence=0, transactional=True)
        group = f"g{rng.randint(0, 5)}"
        offset = self.offset(broker, "t", partition)
        broker.txn_offset_commit(tid, pid, epoch, group, "", -1, [("t", partition, offset, "tx")])
        outcome = rng.choice(["commit", "abort", "open"])
        if outcome != "open":
            broker.end_txn(tid, pid, epoch, outcome == "commit")
        if outcome == "commit":
            self.model.setdefault(group, {})[("t", partition)] = offset

    def cut(self, path: Path) -> None:
        """A power loss took the tail of t/0's last segment (its records were not synced)."""
        segments = sorted((path / "t-0").glob("*.log"))
        data = segments[-1].read_bytes()
        if len(data) > 100:
            segments[-1].write_bytes(data[: self.rng.randint(len(data) - 100, len(data) - 1)])
        # recover it now, so the model learns the log end the groups are moved back to (the
        # broker appends abort markers at start, after moving them)
        with PartitionLog.open(path / "t-0") as recovered:
            end = recovered.log_end_offset
        for offsets in self.model.values():
            if offsets.get(("t", 0), -1) > end:
                offsets[("t", 0)] = end


@pytest.mark.parametrize("seed", range(4))
def test_the_snapshot_path_and_the_replay_path_give_the_same_state(
    tmp_path: Path, clock: ManualClock, seed: int
) -> None:
    work = Workload(seed)
    live = tmp_path / "live"

    async def body() -> None:
        async with opened(live, clock) as broker:
            broker.create_topic("t", 2)
        for _ in range(6):  # broker lives
            async with opened(live, clock) as broker:
                if work.rng.random() < 0.5:  # else groups stay in snapshot form into the next snapshot
                    assert {g: {tp: c.offset for tp, c in broker.offsets.committed(g).items()}
                            for g in broker.offsets.groups()} == {g: o for g, o in work.model.items() if o}
                for _ in range(work.rng.randint(5, 40)):
                    await work.step(broker, clock)
                if work.rng.random() < 0.5:
                    crash(broker)
                    if work.rng.random() < 0.5:
                        work.cut(live)
        replay = tmp_path / "replay"
        shutil.copytree(live, replay)
        for path in snapshots(replay):
            path.unlink()
        async with opened(live, clock) as broker:
            from_snapshot = state_of(broker)
            crash(broker)  # leave the directory as it was for nothing else to compare
        async with opened(replay, clock) as broker:
            assert state_of(broker) == from_snapshot

    run(body())
