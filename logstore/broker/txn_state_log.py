"""Reading the transaction coordinator's state back from ``__transaction_state``, and its snapshot.

The partition holds two kinds of records (``internal.encode_key`` / ``encode_value``, JSON):
``["producer_id_block"]`` -> ``{"end": int}`` (the producer ids handed out end below it) and
``["txn", transactional_id]`` -> a ``Transaction`` value (``txn_state``; a tombstone forgets the id).

Loading reads the snapshot ``transactions.snapshot`` in the partition directory (kind ``txns``,
format version 1: a JSON document ``{"block_end", "transactions": {id: value}}`` inside
``snapshot_file``'s crc-checked frame, as of a log offset) and replays only the records after
it, in bulk; without a usable snapshot, the whole partition. The snapshot holds exactly what the
log holds (the coordinator's ``_persisted``: the last value written for each id), never
unpersisted changes.

Threading: the coordinator's (event loop thread only); no state of its own.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from logstore.broker.internal import TRANSACTIONS_TOPIC, parse_many, read_latest
from logstore.broker.snapshot_file import PendingSnapshot, read_snapshot
from logstore.broker.txn_state import Transaction
from logstore.storage import PartitionLog

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "transactions.snapshot"
SNAPSHOT_KIND = "txns"
SNAPSHOT_VERSION = 1


@dataclass
class LoadedState:
    block_end: int = 0
    #: each id's last value in the log
    persisted: dict[str, dict[str, Any]] = field(default_factory=dict)
    transactions: dict[str, Transaction] = field(default_factory=dict)
    #: the log offset the snapshot used covers (-1: none was used)
    snapshot_offset: int = -1


def read_state(partition_log: PartitionLog) -> LoadedState:
    """The state ``partition_log`` holds: its snapshot, if usable, then the records after it."""
    started = time.perf_counter()
    state = LoadedState()
    path = partition_log.directory / SNAPSHOT_FILE
    snapshot = read_snapshot(path, SNAPSHOT_KIND, SNAPSHOT_VERSION, partition_log)
    start, source = partition_log.log_start_offset, "log"
    if snapshot is not None:
        try:
            document = json.loads(snapshot.payload)
            block_end = int(document["block_end"])
            persisted = {str(k): dict(v) for k, v in document["transactions"].items()}
            transactions = {k: Transaction.from_value(k, v) for k, v in persisted.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring the state snapshot %s: %s; replaying the log from its start", path, exc)
        else:
            state = LoadedState(block_end, persisted, transactions, snapshot.offset)
            start, source = snapshot.offset, "snapshot"
    latest, records = read_latest(partition_log, start)
    raw_values = list(latest.values())
    values = iter(parse_many([v for v in raw_values if v is not None]))
    for key, raw in zip(parse_many(list(latest)), raw_values, strict=True):
        value = None if raw is None else next(values)
        if key == ["producer_id_block"] and value is not None:
            state.block_end = max(state.block_end, int(value["end"]))
        elif isinstance(key, list) and len(key) == 2 and key[0] == "txn":
            if value is None:
                state.transactions.pop(key[1], None)
                state.persisted.pop(key[1], None)
            else:
                state.transactions[key[1]] = Transaction.from_value(key[1], value)
                state.persisted[key[1]] = value
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.info(
        "loaded %d transactional ids from %s/0: %s up to offset %d, then %d records of the "
        "log, in %.1f ms", len(state.transactions), TRANSACTIONS_TOPIC,
        "the snapshot" if source == "snapshot" else "no snapshot", start, records, elapsed_ms,
        extra={"source": source, "snapshot_offset": start, "records": records,
               "transactional_ids": len(state.transactions), "load_ms": round(elapsed_ms, 1)},
    )
    return state


def snapshot_of(partition_log: PartitionLog, block_end: int, persisted: dict[str, dict[str, Any]],
                end: int) -> PendingSnapshot:
    """A snapshot of what the log holds up to ``end``: ``block_end`` and ``persisted``."""
    document = {"block_end": block_end, "transactions": persisted}
    payload = json.dumps(document, separators=(",", ":")).encode()
    return PendingSnapshot(
        partition_log, partition_log.directory / SNAPSHOT_FILE, SNAPSHOT_KIND, SNAPSHOT_VERSION, end, payload
    )
