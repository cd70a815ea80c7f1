"""Start-up with a long commit history (part of ``python -m bench recovery``).

For each history — 0, 100 k, 1 M and 10 M offset commits (``--history-commits``), made by one
group and by 1,000 groups (``--history-groups``), and 100 k transactions
(``--history-transactions``) — a data directory is built and a real ``logstore serve`` process
is started on it and timed from the start of the process until the health check says SERVING.

The history is written with the storage layer directly, in this process, not through gRPC
(10 M commits through the API would take hours): a topic ``orders`` with
``--history-partitions`` (100) partitions of 1,000 records each, and then, per commit, one batch
of ``--history-partitions`` offset records (a group committing every partition, the record
layout ``OffsetStore`` writes) appended to the group's ``__consumer_offsets`` partition; or, per
transaction, the three ``__transaction_state`` records a committed transaction leaves (ongoing,
prepare_commit, complete_commit) for one of 100 transactional ids. So with 1,000 groups the live
state is 1,000 groups x 100 partitions, whatever the history's length.

Per history, the broker layer is then opened and closed cleanly in this process (which replays
the history once and writes the snapshots, as a broker that ran through that history and
stopped cleanly leaves them); then ``--repeats`` timed starts of ``logstore serve``, each
followed by a clean stop (the table's median). Last, the snapshots are removed and one more
start is timed (the "no snapshot" column: an upgrade from a version without snapshots, or every
snapshot lost, so the whole history is replayed; the cleaner may start compacting during that
long start). The log is never compacted before the timed starts (they are shorter than the
cleaner's 15 s interval): the worst case, every commit still on disk. The coordinators' own
load time is read from the broker's log (``load_ms`` of every internal partition, summed).
The goals: with 10 M commits, start-up within 1.5 x the empty start-up of the same group count;
coordinator state loading within 100 ms at 1,000 groups x 100 partitions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import Progress, Result, format_seconds

TOPIC = "orders"
RECORDS_PER_PARTITION = 1000
TRANSACTIONAL_IDS = 100
SECONDS_BUDGET = 900.0


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--history-commits", default=None, metavar="N,N,...",
                       help="offset commits of history per row (default 0,100000,1000000,10000000; "
                            "--quick 0,20000)")
    group.add_argument("--history-groups", default=None, metavar="N,N",
                       help="groups making the commits (default 1,1000; --quick 1,10)")
    group.add_argument("--history-transactions", type=int, default=None, metavar="N",
                       help="committed transactions of history in one more row (default 100000, "
                            "--quick 2000; 0: no such row)")
    group.add_argument("--history-partitions", type=int, default=None, metavar="N",
                       help="partitions each group commits (default 100, --quick 10)")


def _numbers(text: str | None, default: str) -> list[int]:
    return [int(float(part)) for part in (text or default).split(",") if part.strip()]


def run(options: argparse.Namespace, progress: Progress, work: Path) -> list[Result]:
    from bench.torture.broker import Broker

    quick = options.quick
    commits = _numbers(options.history_commits, "0,20000" if quick else "0,100000,1000000,10000000")
    groups = _numbers(options.history_groups, "1,10" if quick else "1,1000")
    transactions = options.history_transactions
    if transactions is None:
        transactions = 2000 if quick else 100_000
    partitions = options.history_partitions or (10 if quick else 100)
    repeats = options.repeats or (1 if quick else 3)
    histories = [(n, g, 0) for g in groups for n in commits]
    if transactions:
        histories.append((0, 1, transactions))
    progress.add(len(histories) * (3 + repeats))
    results: list[Result] = []
    baselines: dict[int, float] = {}
    for count, group_count, txns in histories:
        data = work / f"history-{count}-{group_count}-{txns}"
        progress.start(f"write {count:,} commits of {group_count} groups, {txns:,} transactions")
        write_history(data, count, group_count, partitions, txns)
        history_bytes = sum(p.stat().st_size for p in data.glob("__*/*.log"))
        progress.done()
        progress.start("open and close the broker layer in-process: the snapshots")
        snapshot_in_process(data)
        progress.done()
        broker = Broker(data, work / f"{data.name}.log")
        try:
            samples, loads = [], []
            for _ in range(repeats):
                progress.start("start with the snapshots a clean stop wrote")
                sample = timed_start(broker)
                samples.append(sample["seconds"])
                loads.append(sample["load_ms"])
                progress.done()
            progress.start("start without snapshots: replay the whole history")
            for path in data.glob("__*/*.snapshot"):
                path.unlink()
            full = timed_start(broker)
            progress.done()
        finally:
            broker.kill()
        if not txns and count == 0:
            baselines[group_count] = statistics.median(samples)
        history = f"{txns:,} transactions" if txns else f"{count:,} commits by {group_count:,} group{'s' * (group_count > 1)}"
        params: dict[str, Any] = {
            "commits": count, "groups": group_count, "transactions": txns, "partitions": partitions,
            "serving_seconds": samples, "coordinator_load_ms": loads,
            "no_snapshot_seconds": full["seconds"], "no_snapshot_load_ms": full["load_ms"],
            "no_snapshot_records": full["records"],
            "live_offsets": group_count * partitions if count else 0,
            "history_bytes": history_bytes,  # before the cleaner could compact it
        }
        baseline = baselines.get(group_count)
        if baseline and not txns:
            params["vs_empty"] = statistics.median(samples) / baseline
        results.append(Result("recovery", "history", f"start-up to SERVING, {history} in the history",
                              "start", max(count or txns, 1), None, samples, params=params))
        shutil.rmtree(data, ignore_errors=True)
    return results


def snapshot_in_process(path: Path) -> None:
    """Open the broker layer on ``path`` and close it cleanly (it writes the state snapshots)."""
    import asyncio

    from logstore.broker import Broker

    async def open_and_close() -> None:
        broker = Broker.open(path, background=False)
        await broker.close()

    asyncio.run(open_and_close())


def timed_start(broker: Any) -> dict[str, Any]:
    """Start, wait for SERVING, stop cleanly; the seconds and what the coordinators logged."""
    since = broker.log_path.stat().st_size if broker.log_path.exists() else 0
    seconds = broker.start(timeout=SECONDS_BUDGET)
    broker.stop(timeout=SECONDS_BUDGET)
    load_ms, records = 0.0, 0
    with open(broker.log_path, "rb") as file:
        file.seek(since)
        for line in file.read().decode(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "load_ms" in entry:
                load_ms += float(entry["load_ms"])
                records += int(entry.get("records", 0))
    return {"seconds": seconds, "load_ms": load_ms, "records": records}


def write_history(path: Path, commits: int, groups: int, partitions: int, transactions: int) -> None:
    """The data directory a broker leaves after that history (see the module doc)."""
    from logstore.broker.config import BrokerConfig
    from logstore.broker.internal import (
        OFFSETS_TOPIC,
        TRANSACTIONS_TOPIC,
        encode_key,
        encode_value,
        ensure_topic,
        partition_for,
    )
    from logstore.broker.transactions import COMPLETE_COMMIT, ONGOING, PREPARE_COMMIT, Transaction
    from logstore.records import encode_batch, validate_batches
    from logstore.storage import DataDir

    now_ms = int(time.time() * 1000)
    with DataDir.open(path, background=False) as data_dir:
        data_dir.create_topic(TOPIC, partitions)
        for partition in range(partitions):
            data_dir.append(TOPIC, partition, encode_batch([b"x"] * RECORDS_PER_PARTITION))
        offsets_logs = ensure_topic(data_dir, OFFSETS_TOPIC, BrokerConfig().offsets_topic_partitions)
        (transactions_log,) = ensure_topic(data_dir, TRANSACTIONS_TOPIC, 1)
        value = encode_value({"offset": RECORDS_PER_PARTITION, "metadata": "", "ts": now_ms})
        names = [f"group-{g:05d}" for g in range(groups)]
        batches = []
        for name in names:  # one commit of every partition, encoded once per group
            batch = encode_batch([value] * partitions, timestamps=now_ms,
                                 keys=[encode_key("offset", name, TOPIC, p) for p in range(partitions)])
            batches.append((offsets_logs[partition_for(name, len(offsets_logs))], batch, validate_batches(batch)))
        for index in range(commits // partitions):
            partition_log, batch, headers = batches[index % groups]
            partition_log.append(batch, headers=headers, sync=False)
        if transactions:
            block = encode_batch([encode_value({"end": 1000})], keys=[encode_key("producer_id_block")])
            transactions_log.append(block, sync=False)
            steps = []
            for pid in range(TRANSACTIONAL_IDS):
                tid = f"tx-{pid:03d}"
                for state in (ONGOING, PREPARE_COMMIT, COMPLETE_COMMIT):
                    txn = Transaction(tid, pid, 0, 60_000, state, started_ms=now_ms,
                                      partitions=set() if state == COMPLETE_COMMIT else {(TOPIC, pid % partitions)})
                    batch = encode_batch([encode_value(txn.to_value())], keys=[encode_key("txn", tid)],
                                         timestamps=now_ms)
                    steps.append((batch, validate_batches(batch)))
            for index in range(transactions):
                for step in range(3):
                    batch, headers = steps[(index % TRANSACTIONAL_IDS) * 3 + step]
                    transactions_log.append(batch, headers=headers, sync=False)
        for partition_log in data_dir.logs():
            partition_log.flush()


def print_results(results: list[Result]) -> None:
    if not results:
        return
    print()
    print("start-up to SERVING with a history (medians; the coordinators' own load time from the broker log)")
    print(f"{'history':44} {'no snapshot':>12} {'start-up':>10} {'x empty':>8} {'coord. load':>12} {'live offsets':>13}")
    for result in results:
        params = result.params
        history = result.name.removeprefix("start-up to SERVING, ").removesuffix(" in the history")
        ratio = f"{params['vs_empty']:.2f}" if "vs_empty" in params else ""
        print(f"{history:44} {format_seconds(params['no_snapshot_seconds']):>12} "
              f"{format_seconds(result.median):>10} {ratio:>8} "
              f"{statistics.median(params['coordinator_load_ms']):>9.1f} ms {params['live_offsets']:>13,}")
