"""Dead-lettering: archived records copied to the group's dead-letter topic.

The copy keeps the record's key, value and headers and adds the headers ``topic``,
``partition``, ``offset`` (where it came from), ``delivery_count`` and ``last_error`` (the
error text the member gave when it rejected or released it the last time, or ``lock expired``).
It goes to partition ``source partition % dead-letter partitions``; the topic is created, with
the source topic's partition count, when first needed. In a cluster the caller chooses the
partition (one this broker leads, ``leadership.py``) and its leader epoch. Dead-lettering is at least once: a crash
after the copy is written but before the archive is durable archives (and copies) it again.

Threading: event loop thread only.
"""

from __future__ import annotations

import logging

import numpy as np

from logstore.errors import LogstoreError
from logstore.records import decode_columns, encode_batch
from logstore.storage import DataDir, PartitionLog

log = logging.getLogger(__name__)


def _read_records(source: PartitionLog, offsets: np.ndarray):  # type: ignore[no-untyped-def]
    """The records at ``offsets`` (sorted) that are still in the log, as RecordColumns pieces."""
    pieces = []
    i = 0
    while i < len(offsets):
        offset = int(offsets[i])
        if offset < source.log_start_offset or offset >= source.log_end_offset:
            i += 1
            continue
        result = source.read(offset, 1 << 20)
        columns = decode_columns(result.data, min_offset=offset)
        if not len(columns):
            break
        chosen = np.flatnonzero(np.isin(columns.offsets, offsets[i:]))
        if len(chosen):
            pieces.append((columns, chosen))
        i = int(np.searchsorted(offsets, columns.offsets[-1], side="right"))
        if result.next_offset <= offset:
            break
    return pieces


def dead_letter(
    data_dir: DataDir, topic: str, source: PartitionLog, offsets: np.ndarray,
    counts: np.ndarray, last_error: str, *, target: PartitionLog | None = None, leader_epoch: int = 0,
) -> tuple[PartitionLog, int] | None:
    """Copy the records at ``offsets`` of ``source`` to ``topic`` (unsynced; to ``target`` at
    ``leader_epoch`` when given); the log and end offset to wait on for durability, or None
    when nothing was copied."""
    if not len(offsets):
        return None
    if target is None:
        if not data_dir.has_topic(topic):
            try:
                data_dir.create_topic(topic, data_dir.topic(source.topic).partitions)
            except LogstoreError:
                if not data_dir.has_topic(topic):
                    raise
        target_topic = data_dir.topic(topic)
        target = target_topic.logs[source.partition % target_topic.partitions]
    values, keys, headers = [], [], []
    count_of = dict(zip(offsets.tolist(), counts.tolist(), strict=True))
    for columns, chosen in _read_records(source, offsets):  # the rare path: records one by one
        for index in chosen.tolist():
            offset = int(columns.offsets[index])
            value, key = columns.value(index), columns.key(index)
            values.append(None if value is None else bytes(value))
            keys.append(None if key is None else bytes(key))
            headers.append(list(columns.headers(index)) + [
                ("topic", source.topic), ("partition", str(source.partition)),
                ("offset", str(offset)), ("delivery_count", str(count_of[offset])),
                ("last_error", last_error),
            ])
    if not values:
        return None
    batch = encode_batch(values, keys=keys, timestamps=data_dir.clock.now_ms(), headers=headers)
    result = target.append(batch, sync=False, leader_epoch=leader_epoch)
    log.info("dead-lettered %d records of %s/%d to %s", len(values), source.topic, source.partition, topic)
    return target, result.log_end_offset
