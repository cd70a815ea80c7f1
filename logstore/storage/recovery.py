"""Opening a partition directory: finish or undo interrupted work, then trust or recover segments.

In order:

1. Leftovers of interrupted operations are resolved: ``*.deleted``, ``*.cleaned`` and ``*.tmp``
   files are removed; a ``*.swap`` segment (a compacted segment that was completely written) is
   put in place of the segments it replaces, which its ``.swap.json`` sidecar names.
2. After a clean shutdown every segment is loaded: its indexes are sanity-checked, never trusted
   over the log — a missing or corrupt index, or one naming a batch past the last whole batch of
   the ``.log`` (a tail lost at a batch boundary after the close), is rebuilt from the log, and
   the segment's max timestamp comes from what the log holds.
3. After an unclean stop, every segment from the one holding the recovery point onward is
   recovered: each batch's length and crc32c are checked, the indexes are rebuilt, and the first
   invalid batch and everything after it — the rest of that segment and all later segments — is
   cut. What was cut is logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from logstore.storage.config import LogConfig
from logstore.storage.files import read_json, remove_quietly
from logstore.storage.index_file import CorruptIndexError
from logstore.storage.segment import (
    CLEANED_SUFFIX,
    CORRUPT_SUFFIX,
    DELETED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    SEGMENT_SUFFIXES,
    SWAP_SUFFIX,
    TIME_INDEX_SUFFIX,
    LogSegment,
    file_name,
    parse_base_offset,
)

log = logging.getLogger(__name__)

SWAP_SIDECAR_SUFFIX = ".swap.json"


@dataclass
class Cut:
    base_offset: int
    truncated_bytes: int
    reason: str | None


@dataclass
class OpenedSegments:
    segments: list[LogSegment]
    log_start_offset: int
    recovery_point: int
    cuts: list[Cut] = field(default_factory=list)
    deleted_segments: list[int] = field(default_factory=list)


def _segment(directory: Path, base: int, config: LogConfig, *, writable: bool, now_ms: int,
             suffix: str = LOG_SUFFIX) -> LogSegment:
    return LogSegment(
        directory,
        base,
        index_bytes=config.segment_index_bytes,
        index_interval_bytes=config.index_interval_bytes,
        writable=writable,
        created_ms=now_ms,
        suffix=suffix,
    )


def remove_segment_files(directory: Path, base: int) -> None:
    for suffix in SEGMENT_SUFFIXES:
        remove_quietly(directory / file_name(base, suffix))


def resolve_leftovers(directory: Path, config: LogConfig, now_ms: int) -> None:
    names = sorted(os.listdir(directory))
    for name in names:
        if name.endswith((DELETED_SUFFIX, CLEANED_SUFFIX, ".tmp")):
            log.info("removing leftover %s", directory / name)
            remove_quietly(directory / name)
    for name in names:
        if not name.endswith(LOG_SUFFIX + SWAP_SUFFIX):
            continue
        base = parse_base_offset(name)
        if base is None:
            remove_quietly(directory / name)
            continue
        _complete_swap(directory, base, config, now_ms)
    for name in os.listdir(directory):
        if name.endswith((INDEX_SUFFIX + SWAP_SUFFIX, TIME_INDEX_SUFFIX + SWAP_SUFFIX, SWAP_SIDECAR_SUFFIX)):
            remove_quietly(directory / name)


def _complete_swap(directory: Path, base: int, config: LogConfig, now_ms: int) -> None:
    """Put ``base.log.swap`` in place of the segments it replaces."""
    sidecar = directory / file_name(base, SWAP_SIDECAR_SUFFIX)
    try:
        replaces = [int(b) for b in read_json(sidecar)["replaces"]]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        swap = _segment(directory, base, config, writable=True, now_ms=now_ms, suffix=SWAP_SUFFIX)
        swap.recover()
        end = swap.next_offset
        swap.close()
        replaces = [
            b for b in (parse_base_offset(n) for n in os.listdir(directory) if n.endswith(LOG_SUFFIX))
            if b is not None and base <= b < end
        ]
    log.info("completing an interrupted compaction: %s replaces segments %s",
             directory / file_name(base, LOG_SUFFIX + SWAP_SUFFIX), replaces)
    for replaced in replaces:
        remove_segment_files(directory, replaced)
    os.replace(directory / file_name(base, LOG_SUFFIX + SWAP_SUFFIX), directory / file_name(base, LOG_SUFFIX))
    for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
        remove_quietly(directory / file_name(base, suffix + SWAP_SUFFIX))
        remove_quietly(directory / file_name(base, suffix))  # rebuilt on load
    remove_quietly(sidecar)


def open_segments(
    directory: Path,
    *,
    config: LogConfig,
    clean: bool,
    log_start_offset: int,
    recovery_point: int,
    now_ms: int,
    name: str,
) -> OpenedSegments:
    resolve_leftovers(directory, config, now_ms)
    bases = sorted(
        b for b in (parse_base_offset(n) for n in os.listdir(directory) if n.endswith(LOG_SUFFIX))
        if b is not None
    )
    # Orphan indexes (no .log beside them) are removed; they would only confuse a later open.
    for entry in os.listdir(directory):
        if entry.endswith((INDEX_SUFFIX, TIME_INDEX_SUFFIX)):
            base = parse_base_offset(entry)
            if base is None or base not in bases:
                remove_quietly(directory / entry)

    result = OpenedSegments([], log_start_offset, recovery_point)
    recover_from = None
    if not clean and bases:
        # the segment holding the recovery point, and every later one, is recovered
        below = [b for b in bases if b <= recovery_point]
        recover_from = below[-1] if below else bases[0]
    expected_next = None
    for position, base in enumerate(bases):
        is_last = position == len(bases) - 1
        if expected_next is not None and base < expected_next:
            log.warning("%s: segment %d overlaps the previous one; cutting it and later ones", name, base)
            _delete_from(directory, bases[position:], result)
            break
        must_recover = recover_from is not None and base >= recover_from
        missing = [
            suffix for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX)
            if not (directory / file_name(base, suffix)).exists()
        ]
        if missing and not must_recover:
            log.warning("%s: segment %d has no %s; rebuilding it", name, base, " or ".join(missing))
            must_recover = True
        segment = _segment(directory, base, config, writable=is_last or must_recover, now_ms=now_ms)
        if not must_recover:
            try:
                segment.load()
            except CorruptIndexError as exc:
                log.warning("%s: rebuilding the indexes of segment %d: %s", name, base, exc.message)
                segment.close()
                segment = _segment(directory, base, config, writable=True, now_ms=now_ms)
                must_recover = True
        if must_recover:
            outcome = segment.recover()
            if outcome.truncated_bytes:
                log.warning(
                    "%s: recovery cut %d bytes from segment %d after %d valid batches (%s)",
                    name, outcome.truncated_bytes, base, outcome.batches, outcome.reason,
                )
                result.cuts.append(Cut(base, outcome.truncated_bytes, outcome.reason))
            if not is_last and outcome.truncated_bytes:
                result.segments.append(segment)
                _delete_from(directory, bases[position + 1 :], result)
                break
            if not is_last:
                segment.seal()
        result.segments.append(segment)
        expected_next = segment.next_offset
    # drop an empty sealed tail segment left by a cut, so the last one is writable
    if result.segments and result.segments[-1].writable is False:
        last = result.segments.pop()
        last.close()
        result.segments.append(_segment(directory, last.base_offset, config, writable=True, now_ms=now_ms))
        result.segments[-1].recover()
    if not result.segments:
        result.segments.append(_segment(directory, max(log_start_offset, 0), config, writable=True, now_ms=now_ms))
    log_end_offset = result.segments[-1].next_offset
    first_base = result.segments[0].base_offset
    start = max(log_start_offset, first_base)
    if start > log_end_offset:
        log.warning(
            "%s: log start %d is past the recovered log end %d; starting an empty log at %d",
            name, start, log_end_offset, start,
        )
        for segment in result.segments:
            segment.delete()
        result.segments = [_segment(directory, start, config, writable=True, now_ms=now_ms)]
    result.log_start_offset = start
    if not clean:
        for segment in result.segments:
            segment.flush()
    result.recovery_point = result.segments[-1].next_offset
    return result


def _delete_from(directory: Path, bases: list[int], result: OpenedSegments) -> None:
    """Take segments after a cut out of the log; their .log is kept aside as quarantined."""
    for base in bases:
        log_path = directory / file_name(base, LOG_SUFFIX)
        if log_path.exists():
            quarantine = log_path.with_name(f"{log_path.name}{CORRUPT_SUFFIX}0")
            os.replace(log_path, quarantine)
            log.warning("recovery took segment %s out of the log; kept as %s", log_path, quarantine)
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            remove_quietly(directory / file_name(base, suffix))
        result.deleted_segments.append(base)
