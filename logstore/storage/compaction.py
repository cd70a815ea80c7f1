"""The compact cleaner: keep the last record per key, with its offset, in sealed segments.

For ``cleanup_policy=compact`` the cleaner builds a map key -> last offset over every sealed
segment (the active segment is never touched), then rewrites runs of consecutive sealed segments
(at most ``segment_bytes`` together) into one, keeping a record when it is the latest for its key
(records without a key are kept). A tombstone (null value) is dropped once its timestamp is older
than ``delete_retention_ms``. Offsets never change: a batch that loses records keeps its base
offset and its records keep their offset deltas; a batch that loses every record goes.

The swap is crash-safe, in steps (``crash_point`` lets tests stop after each)::

    1. write  NNN.log.cleaned (+ .index.cleaned, .timeindex.cleaned), fsync
    2. write  NNN.swap.json  {"replaces": [bases]}; rename *.cleaned -> *.swap, fsync the dir
    3. rename the replaced segments' files -> *.deleted
    4. rename *.swap -> the final names; swap the segments in memory
    5. remove the *.deleted files and the sidecar

Opening a partition resolves leftovers (``recovery.resolve_leftovers``): before step 2 the
``.cleaned`` files are removed and the originals stay; from step 2 on, the ``.swap`` segment is
complete and replaces exactly the segments its sidecar names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logstore.records import decode_columns, encode_columns, read_header
from logstore.records.layout import ASSIGNED_PREFIX_SIZE
from logstore.storage.files import atomic_write_json, fsync_dir, remove_quietly
from logstore.storage.log import PartitionLog
from logstore.storage.offset_index import MAX_RELATIVE_OFFSET
from logstore.storage.recovery import SWAP_SIDECAR_SUFFIX
from logstore.storage.segment import (
    CLEANED_SUFFIX,
    DELETED_SUFFIX,
    SEGMENT_SUFFIXES,
    SWAP_SUFFIX,
    LogSegment,
    PendingBatch,
    file_name,
)

log = logging.getLogger(__name__)

CrashPoint = Callable[[str], None]


@dataclass(frozen=True)
class CompactionResult:
    segments_before: int
    segments_after: int
    records_removed: int
    bytes_before: int
    bytes_after: int


def build_offset_map(segments: tuple[LogSegment, ...] | list[LogSegment]) -> dict[bytes, int]:
    """key -> the offset of its last record, over ``segments``."""
    offset_map: dict[bytes, int] = {}
    for segment in segments:
        if not segment.size:
            continue
        columns = decode_columns(segment.view(0, segment.size))
        if not len(columns):
            continue
        has_key = columns.key_lengths >= 0
        keys = [bytes(k) for k in columns.keys() if k is not None]
        offsets = columns.offsets[has_key].tolist()
        offset_map.update(zip(keys, offsets, strict=True))
    return offset_map


def _groups(segments: list[LogSegment], segment_bytes: int) -> list[list[LogSegment]]:
    groups: list[list[LogSegment]] = []
    current: list[LogSegment] = []
    size = 0
    for segment in segments:
        fits = (
            current
            and size + segment.size <= segment_bytes
            and segment.next_offset - 1 - current[0].base_offset <= MAX_RELATIVE_OFFSET
        )
        if current and not fits:
            groups.append(current)
            current, size = [], 0
        current.append(segment)
        size += segment.size
    if current:
        groups.append(current)
    return groups


def _clean_batch(
    raw: memoryview, offset_map: dict[bytes, int], tombstone_horizon_ms: int
) -> tuple[bytes | memoryview | None, int]:
    """The batch with only the records worth keeping; (None, removed) if none is."""
    header = read_header(raw)
    if header.is_control:
        return raw, 0
    columns = decode_columns(raw, skip_control=False)
    count = len(columns)
    if count == 0:
        return None, 0
    keys = columns.keys()
    offsets = columns.offsets.tolist()
    latest = np.fromiter(
        (k is None or offset_map.get(bytes(k)) == o for k, o in zip(keys, offsets, strict=True)),
        dtype=bool,
        count=count,
    )
    expired_tombstone = (columns.value_lengths < 0) & (columns.timestamps < tombstone_horizon_ms)
    keep = latest & ~expired_tombstone
    kept = int(keep.sum())
    if kept == count:
        return raw, 0
    if kept == 0:
        return None, count
    index = np.flatnonzero(keep)
    data = bytes(columns.buffer)

    def blob(positions: np.ndarray, lengths: np.ndarray) -> bytes:
        return b"".join(
            data[p : p + n] for p, n in zip(positions[index].tolist(), lengths[index].tolist(), strict=True)
            if n > 0
        )

    rebuilt = encode_columns(
        value_lengths=columns.value_lengths[index],
        values=blob(columns.value_positions, columns.value_lengths),
        key_lengths=columns.key_lengths[index],
        keys=blob(columns.key_positions, columns.key_lengths),
        timestamps=columns.timestamps[index],
        headers_lengths=columns.headers_lengths[index],
        headers=blob(columns.headers_positions, columns.headers_lengths),
        offset_deltas=(columns.offsets[index] - header.base_offset).astype(np.int32),
        codec=header.codec,
        base_offset=header.base_offset,
        producer_id=header.producer_id,
        producer_epoch=header.producer_epoch,
        base_sequence=header.base_sequence,
        transactional=header.is_transactional,
    )
    return rebuilt, count - kept


def _rename_all(paths: list[Path], suffix_from: str, suffix_to: str) -> None:
    for path in paths:
        source = path.with_name(path.name + suffix_from) if suffix_from else path
        target = path.with_name(path.name + suffix_to) if suffix_to else path
        if source.exists():
            os.replace(source, target)


def compact(
    partition_log: PartitionLog,
    now_ms: int,
    *,
    crash_point: CrashPoint | None = None,
) -> CompactionResult:
    """Compact the sealed segments of ``partition_log`` once."""
    config = partition_log.config
    directory = partition_log.directory
    sealed = list(partition_log.segments[:-1])
    before_bytes = sum(s.size for s in sealed)
    if not sealed:
        return CompactionResult(0, 0, 0, 0, 0)
    offset_map = build_offset_map(sealed)
    horizon = now_ms - config.delete_retention_ms
    removed_total = 0
    after_segments = 0
    after_bytes = 0
    for group in _groups(sealed, config.segment_bytes):
        base = group[0].base_offset
        cleaned = LogSegment(
            directory, base,
            index_bytes=config.segment_index_bytes,
            index_interval_bytes=config.index_interval_bytes,
            writable=True, created_ms=now_ms, suffix=CLEANED_SUFFIX,
        )
        removed = 0
        for segment in group:
            for entry in segment.scan(0):
                raw = segment.view(entry.position, entry.position + entry.length)
                kept, dropped = _clean_batch(raw, offset_map, horizon)
                removed += dropped
                if kept is None:
                    continue
                header = read_header(kept)
                view = memoryview(kept)
                cleaned.append([
                    PendingBatch(
                        bytes(view[:ASSIGNED_PREFIX_SIZE]), view[ASSIGNED_PREFIX_SIZE:],
                        header.base_offset, header.next_offset, header.max_timestamp,
                        header.batch_length,
                    )
                ])
        if removed == 0:
            cleaned.close()
            for path in cleaned.paths():
                remove_quietly(path)
            after_segments += len(group)
            after_bytes += sum(s.size for s in group)
            continue
        removed_total += removed
        cleaned.seal()
        cleaned.flush()
        cleaned.flush_indexes()
        cleaned.close()
        if crash_point:
            crash_point("cleaned-written")
        final_paths = [directory / file_name(base, suffix) for suffix in SEGMENT_SUFFIXES]
        atomic_write_json(
            directory / file_name(base, SWAP_SIDECAR_SUFFIX),
            {"replaces": [s.base_offset for s in group]},
        )
        _rename_all(final_paths, CLEANED_SUFFIX, SWAP_SUFFIX)
        fsync_dir(directory)
        if crash_point:
            crash_point("swap-written")
        with partition_log.lock:
            doomed: list[Path] = []
            for segment in group:
                for path in segment.paths():
                    if path.exists():
                        os.replace(path, path.with_name(path.name + DELETED_SUFFIX))
                        doomed.append(path.with_name(path.name + DELETED_SUFFIX))
            if crash_point:
                crash_point("originals-renamed")
            _rename_all(final_paths, SWAP_SUFFIX, "")
            fsync_dir(directory)
            if crash_point:
                crash_point("swapped")
            replacement = LogSegment(
                directory, base,
                index_bytes=config.segment_index_bytes,
                index_interval_bytes=config.index_interval_bytes,
                writable=False, created_ms=now_ms,
            )
            replacement.load()
            partition_log.replace_segments(group, replacement)
        for segment in group:
            segment.close()
        for path in doomed:
            remove_quietly(path)
        remove_quietly(directory / file_name(base, SWAP_SIDECAR_SUFFIX))
        after_segments += 1
        after_bytes += replacement.size
    result = CompactionResult(len(sealed), after_segments, removed_total, before_bytes, after_bytes)
    if removed_total:
        log.info(
            "%s/%s: compaction removed %d records, %d -> %d bytes, %d -> %d segments",
            partition_log.topic, partition_log.partition, removed_total, before_bytes, after_bytes,
            len(sealed), after_segments,
        )
    return result
