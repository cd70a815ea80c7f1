"""Internal topics: where the broker keeps its own state as records, compacted by key.

``__consumer_offsets`` holds committed offsets; ``__transaction_state`` the transaction
coordinator's state; ``__share_group_state`` the share groups' windows (binary values, see
``share/state_log.py``). Keys and values are small JSON documents; a null value (tombstone) deletes a
key, and compaction keeps each topic as small as its live keys. Both topics are ``flush=always``:
what the broker acknowledges from them is on disk.

Loading reads records in bulk (``read_latest``): whole chunks are decoded into columns, each
key's last value is kept by a dict keyed on the raw key bytes (last write wins, as compaction
keeps it), and only the surviving keys and values are parsed, in one ``json.loads`` call each
(``parse_many``) — so a replay costs a few C-level steps per record, and JSON only per live key.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, cast

from logstore.records import (
    BatchHeader,
    decode_columns,
    decode_records,
    encode_batch,
    validate_batch,
)
from logstore.storage import DataDir, PartitionLog

OFFSETS_TOPIC = "__consumer_offsets"
READ_CHUNK_BYTES = 16 << 20
TRANSACTIONS_TOPIC = "__transaction_state"
SHARE_STATE_TOPIC = "__share_group_state"

INTERNAL_CONFIG: dict[str, Any] = {
    "cleanup_policy": "compact",
    "flush": "always",
    "segment_bytes": 16 << 20,
    "retention_ms": -1,
    "delete_retention_ms": 24 * 3600 * 1000,
}


def ensure_topic(data_dir: DataDir, name: str, partitions: int,
                 config: dict[str, Any] | None = None) -> list[PartitionLog]:
    """The logs of internal topic ``name``, created (with ``config``, default the internal
    topics' config) when missing."""
    if not data_dir.has_topic(name):
        data_dir.create_topic(name, partitions, INTERNAL_CONFIG if config is None else config, internal=True)
    topic = data_dir.topic(name)
    return topic.logs


def partition_for(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def encode_key(*parts: Any) -> bytes:
    return json.dumps(list(parts), separators=(",", ":")).encode()


def encode_value(value: dict[str, Any] | None) -> bytes | None:
    return None if value is None else json.dumps(value, separators=(",", ":")).encode()


def append_entries(
    partition_log: PartitionLog, entries: Sequence[tuple[bytes, bytes | None]], *, sync: bool = True,
    leader_epoch: int = 0,
) -> int:
    """Append (key, value) entries as one batch — all or nothing — and, with ``sync``, wait until
    it is durable. In a cluster ``leader_epoch`` is this broker's epoch as the partition's leader
    (0 on a single node)."""
    batch = encode_batch(
        [v for _, v in entries], keys=[k for k, _ in entries], timestamps=partition_log.clock.now_ms()
    )  # the broker's clock, which compaction's tombstone horizon is measured on
    result = partition_log.append(batch, headers=[trusted_header(batch)], sync=sync, leader_epoch=leader_epoch)
    return result.last_offset


def trusted_header(batch: bytes) -> BatchHeader:
    """The header of one batch the broker encoded itself: its length and crc are checked, its
    record columns are not (``encode_batch`` wrote them; the deep check costs more than the
    write for a batch of a few records)."""
    return validate_batch(batch, deep=False)


def read_latest(partition_log: PartitionLog, start_offset: int = 0) -> tuple[dict[bytes, bytes | None], int]:
    """The last value (None: a tombstone) of every key in records [start_offset, log end), raw,
    and how many records were read."""
    latest: dict[bytes | None, bytes | None] = {}
    offset = max(start_offset, partition_log.log_start_offset)
    end = partition_log.log_end_offset
    count = 0
    while offset < end:
        result = partition_log.read(offset, READ_CHUNK_BYTES)
        columns = decode_columns(result.data, min_offset=offset)
        if not len(columns):
            offset = result.next_offset if result.next_offset > offset else end
            continue
        count += len(columns)
        latest.update(zip(columns.keys_bytes(), columns.values_bytes(), strict=True))
        offset = int(columns.offsets[-1]) + 1
    latest.pop(None, None)  # records without a key
    return cast(dict[bytes, bytes | None], latest), count


def parse_many(documents: Sequence[bytes]) -> list[Any]:
    """``[json.loads(d) for d in documents]`` in one call."""
    if not documents:
        return []
    return list(json.loads(b"[" + b",".join(documents) + b"]"))


def read_entries(partition_log: PartitionLog, *, raw_values: bool = False) -> Iterator[tuple[int, list[Any], Any]]:
    """Every (offset, key, value) from log start to log end, in order; values are JSON documents
    (None for a tombstone), or the bytes as stored with ``raw_values``."""
    offset = partition_log.log_start_offset
    end = partition_log.log_end_offset
    while offset < end:
        result = partition_log.read(offset, 4 << 20)
        records = decode_records(result.data, min_offset=offset)
        if not records:
            offset = result.next_offset if result.next_offset > offset else end
            continue
        for record in records:
            if record.key is None:
                continue
            key = json.loads(record.key)
            value = record.value if raw_values or record.value is None else json.loads(record.value)
            yield record.offset, key, value
        offset = records[-1].offset + 1

