"""A log segment: one ``.log`` file of record batches plus its ``.index`` and ``.timeindex``.

Files are named by the segment's base offset, 20 digits: ``00000000000000000000.log``. The ``.log``
is nothing but batches back to back (layout in ``logstore.records.layout``); its size is exactly
the bytes of its batches. Writes go through ``os.pwritev`` (so a full disk is an error, not a
SIGBUS); reads are slices of an ``mmap`` of the file, remapped when the file has grown past the
current mapping. Bytes below ``size`` never change while the segment lives: compaction replaces a
whole segment, truncation happens only when nobody reads (recovery) or for replication.

Locking: not thread-safe for writers. Its ``PartitionLog`` appends, seals, truncates and closes it
under the partition's lock. Readers (``read``, ``translate``, ``find_timestamp``) take no lock:
they look only at bytes below ``size``, which is raised after the bytes and index entries are
written.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logstore.errors import CorruptBatchError, DiskFullError, LogClosedError, StorageError
from logstore.records import decode_columns, validate_batch
from logstore.records.layout import HEADER_SIZE, MAX_TIMESTAMP_POSITION
from logstore.storage.index_file import CorruptIndexError
from logstore.storage.offset_index import MAX_RELATIVE_OFFSET, OffsetIndex
from logstore.storage.time_index import TimeIndex

log = logging.getLogger(__name__)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
CLEANED_SUFFIX = ".cleaned"  # a compacted segment being written
SWAP_SUFFIX = ".swap"  # a compacted segment complete on disk, about to replace the originals
DELETED_SUFFIX = ".deleted"  # a segment on its way out
CORRUPT_SUFFIX = ".corrupt-at-"  # bytes recovery cut, kept for the operator: NNN.log.corrupt-at-POS
MAX_QUARANTINE_BYTES = 64 << 20
SEGMENT_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)
OFFSET_DIGITS = 20

#: The header fields a scan needs: base_offset, batch_length, last_offset_delta, max_timestamp.
SCAN_STRUCT = struct.Struct("<qi12xi12xq")
assert SCAN_STRUCT.size <= HEADER_SIZE
#: batch_length and last_offset_delta, read from a batch's position + 8.
_LENGTH_AND_DELTA = struct.Struct("<i12xi")
_TIMESTAMP = struct.Struct("<q")

_IOV_MAX = 1024


def file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:0{OFFSET_DIGITS}d}{suffix}"


def parse_base_offset(name: str) -> int | None:
    stem = name.split(".", 1)[0]
    if len(stem) != OFFSET_DIGITS or not stem.isdigit():
        return None
    return int(stem)


@dataclass(slots=True)
class PendingBatch:
    """One validated batch about to be appended: the 16-byte assigned prefix and the rest."""

    prefix: bytes
    rest: memoryview
    base_offset: int
    next_offset: int
    max_timestamp: int
    length: int


@dataclass(slots=True)
class ScanEntry:
    position: int
    base_offset: int
    length: int
    last_offset: int
    max_timestamp: int


@dataclass(slots=True)
class RecoveryResult:
    valid_bytes: int
    truncated_bytes: int
    batches: int
    reason: str | None


class LogSegment:
    def __init__(
        self,
        directory: Path,
        base_offset: int,
        *,
        index_bytes: int,
        index_interval_bytes: int,
        writable: bool,
        created_ms: int,
        suffix: str = LOG_SUFFIX,
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.writable = writable
        self.log_path = directory / (file_name(base_offset, LOG_SUFFIX) + _extra(suffix))
        self._fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
        #: Bytes of whole batches in the file; published after each append.
        self.size = os.fstat(self._fd).st_size
        index_suffix = _extra(suffix)
        self.index = OffsetIndex(
            directory / (file_name(base_offset, INDEX_SUFFIX) + index_suffix),
            base_offset,
            index_bytes,
            writable=writable,
        )
        self.time_index = TimeIndex(
            directory / (file_name(base_offset, TIME_INDEX_SUFFIX) + index_suffix),
            base_offset,
            index_bytes,
            writable=writable,
        )
        #: One past the last offset in this segment; published after each append.
        self.next_offset = base_offset
        #: Largest record timestamp in the segment (-1 when empty).
        self.max_timestamp = -1
        #: When this segment was created or opened, by the log's clock: segment_ms counts from it
        #: only while the first batch has no timestamp (see ``first_batch_timestamp``).
        self.created_ms = created_ms
        self._bytes_since_index_entry = 0
        self._last_batch_offset = base_offset
        #: The mapping of the .log and its size, replaced together (one attribute, so a reader
        #: never pairs an old mapping with a newer size).
        self._mapped: tuple[mmap.mmap, int] | None = None
        self.closed = False
        #: (size, next_offset) replaced together after each append, so a reader sees a pair
        #: that belongs together.
        self.published: tuple[int, int] = (self.size, self.next_offset)

    # -- opening ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Open cleanly: sanity-check the indexes, then find the end from the log's tail.

        The indexes are derived data and are checked against the log, never trusted over it: the
        tail is walked from the last offset-index entry, and an index naming a batch the ``.log``
        no longer holds (its tail was lost at a batch boundary after the close: a copy, a
        restore, a disk that lied) is a CorruptIndexError, so the caller rebuilds both indexes
        from the log. The max timestamp is the time index's last entry, checked against the batch
        it names, raised by every batch of the tail.
        """
        self.index.sanity_check(self.size)
        self.time_index.sanity_check(self.size)
        offset, position = self.index.last_entry
        time_offset = self.time_index.last_offset
        self.max_timestamp = self.time_index.last_timestamp
        time_batch: ScanEntry | None = None
        last: ScanEntry | None = None
        for entry in self.scan(position):
            if last is None and self.index.entries and entry.base_offset != offset:
                raise CorruptIndexError(
                    f"offset index {self.index.path} names offset {offset} for the batch at "
                    f"position {position}, which starts at {entry.base_offset}",
                    path=str(self.index.path),
                )
            if entry.base_offset == time_offset:
                time_batch = entry
            last = entry
            self.max_timestamp = max(self.max_timestamp, entry.max_timestamp)
        if last is None:
            if self.size:
                raise CorruptIndexError(
                    f"offset index {self.index.path} does not point at a batch",
                    path=str(self.index.path),
                )
            if self.index.entries or self.time_index.entries:
                raise CorruptIndexError(
                    f"the indexes of {self.log_path} name batches, but it holds none",
                    path=str(self.index.path),
                )
        else:
            if last.position + last.length != self.size:
                raise CorruptIndexError(
                    f"batches of {self.log_path} do not end at its size", path=str(self.index.path)
                )
            self._check_time_index_tail(time_offset, offset, time_batch, last)
            self.next_offset = last.last_offset + 1
            self._last_batch_offset = last.base_offset
            self._bytes_since_index_entry = self.size - position
        self.published = (self.size, self.next_offset)

    def _check_time_index_tail(
        self, time_offset: int, index_offset: int, time_batch: ScanEntry | None, last: ScanEntry
    ) -> None:
        """Raise CorruptIndexError unless the time index's last entry names a batch of the log.

        An entry past the last batch describes batches that are gone; an entry inside the walked
        tail must name a batch start and carry at least that batch's max timestamp.
        """
        if not self.time_index.entries:
            return
        path = str(self.time_index.path)
        if time_offset > last.base_offset:
            raise CorruptIndexError(
                f"time index {path} names offset {time_offset}, past the last batch of "
                f"{self.log_path} (at offset {last.base_offset})",
                path=path,
            )
        if time_offset >= index_offset and (
            time_batch is None or time_batch.max_timestamp > self.time_index.last_timestamp
        ):
            raise CorruptIndexError(
                f"time index {path} names offset {time_offset} with timestamp "
                f"{self.time_index.last_timestamp}, which no batch of {self.log_path} matches",
                path=path,
            )

    def recover(self) -> RecoveryResult:
        """Check every batch's length and crc32c, rebuild both indexes, cut the first bad batch.

        Returns what was kept and cut. Everything from the first invalid batch on is removed.
        """
        self.index.reset()
        self.time_index.reset()
        self._bytes_since_index_entry = 0
        self.max_timestamp = -1
        self.next_offset = self.base_offset
        file_size = os.fstat(self._fd).st_size
        mapping = memoryview(self._map_file(file_size) if file_size else b"")
        position = 0
        batches = 0
        reason: str | None = None
        while position < file_size:
            try:
                header = validate_batch(mapping, position, deep=False)
            except CorruptBatchError as exc:
                reason = str(exc)
                break
            if header.base_offset < self.next_offset:
                reason = (
                    f"batch at position {position} has base_offset {header.base_offset}, "
                    f"below the expected {self.next_offset}"
                )
                break
            if header.next_offset - 1 - self.base_offset > MAX_RELATIVE_OFFSET:
                reason = f"batch at position {position} overflows the segment's offsets"
                break
            self._index_batch(header.base_offset, position, header.max_timestamp, header.batch_length)
            position += header.batch_length
            self.next_offset = header.next_offset
            batches += 1
        truncated = file_size - position
        if truncated:
            cut = bytes(mapping[position : min(file_size, position + MAX_QUARANTINE_BYTES)])
            if cut.count(0) != len(cut):  # not just zeros past a torn write: keep a copy
                quarantine = self.log_path.with_name(f"{self.log_path.name}{CORRUPT_SUFFIX}{position}")
                with open(quarantine, "wb") as file:
                    file.write(cut)
                log.warning("kept the %d bytes cut from %s in %s", truncated, self.log_path, quarantine)
            self._mapped = None
            os.ftruncate(self._fd, position)
            os.fsync(self._fd)
        self.size = position
        self.published = (self.size, self.next_offset)
        return RecoveryResult(position, truncated, batches, reason)

    # -- appending --------------------------------------------------------------------------------

    def can_hold(self, next_offset: int, length: int, segment_bytes: int) -> bool:
        """Whether a batch ending before ``next_offset`` and ``length`` bytes long fits here."""
        if self.size and self.size + length > segment_bytes:
            return False
        if next_offset - 1 - self.base_offset > MAX_RELATIVE_OFFSET:
            return False
        return not (self.index.is_full or self.time_index.is_full)

    def append(self, batches: Sequence[PendingBatch]) -> None:
        """Write batches at the end with one ``pwritev``, index them, then publish the new size.

        On a failed write the file is cut back to its old size and StorageError is raised, so no
        part of these batches is ever visible.
        """
        buffers: list[bytes | memoryview] = []
        for batch in batches:
            buffers.append(batch.prefix)
            buffers.append(batch.rest)
        old_size = self.size
        total = sum(batch.length for batch in batches)
        try:
            self._write_all(buffers, old_size, total)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, old_size)
            except OSError:
                log.exception("could not cut %s back to %d bytes", self.log_path, old_size)
            kind = DiskFullError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else StorageError
            raise kind(
                f"cannot append to {self.log_path}: {exc.strerror or exc}",
                errno=exc.errno,
                path=str(self.log_path),
            ) from exc
        position = old_size
        for batch in batches:
            self._index_batch(batch.base_offset, position, batch.max_timestamp, batch.length)
            position += batch.length
        self.next_offset = batches[-1].next_offset
        self.size = position  # readers never look past it
        self.published = (position, self.next_offset)  # the consistent pair readers snapshot

    def _write_all(self, buffers: list[bytes | memoryview], position: int, total: int) -> None:
        written_total = 0
        while buffers:
            chunk = buffers[:_IOV_MAX]
            written = os.pwritev(self._fd, chunk, position)
            chunk_bytes = sum(len(b) for b in chunk)
            position += written
            written_total += written
            if written == chunk_bytes:
                buffers = buffers[_IOV_MAX:]
                continue
            # a short write: drop what went out and retry the rest
            skip = written
            remaining: list[bytes | memoryview] = []
            for buffer in buffers:
                if skip >= len(buffer):
                    skip -= len(buffer)
                    continue
                remaining.append(memoryview(buffer)[skip:] if skip else buffer)
                skip = 0
            if written == 0:
                raise OSError(errno.EIO, "pwritev wrote nothing")
            buffers = remaining
        assert written_total == total

    def _index_batch(self, base_offset: int, position: int, max_timestamp: int, length: int) -> None:
        """Kafka's rule: an entry for a batch once more than the interval has passed since the last."""
        if self.max_timestamp < max_timestamp:
            self.max_timestamp = max_timestamp
        if self._bytes_since_index_entry > self.index_interval_bytes:
            self.index.append(base_offset, position)
            self.time_index.maybe_append(self.max_timestamp, base_offset)
            self._bytes_since_index_entry = 0
        self._bytes_since_index_entry += length
        self._last_batch_offset = base_offset

    @property
    def first_batch_timestamp(self) -> int:
        """The max timestamp of the first batch (-1 when empty): segment_ms counts from it, as
        in Kafka, so a segment's age survives a reopen (it lives in the .log, not in memory)."""
        if self.published[0] < HEADER_SIZE:
            return -1
        (timestamp,) = _TIMESTAMP.unpack_from(self._map_file(HEADER_SIZE), MAX_TIMESTAMP_POSITION)
        return int(timestamp)

    # -- reading ----------------------------------------------------------------------------------

    def _map_file(self, end: int) -> mmap.mmap:
        mapped = self._mapped
        if mapped is None or mapped[1] < end:
            if self.closed:
                raise LogClosedError(f"segment {self.log_path} is closed")
            size = max(end, os.fstat(self._fd).st_size)
            mapped = (mmap.mmap(self._fd, size, access=mmap.ACCESS_READ), size)
            self._mapped = mapped
        return mapped[0]

    def view(self, start: int, end: int) -> memoryview:
        """Bytes [start, end) of the .log as a zero-copy view of the mapping."""
        if end <= start:
            return memoryview(b"")
        return memoryview(self._map_file(end))[start:end]

    def scan(self, position: int, end: int | None = None) -> Iterator[ScanEntry]:
        """Walk batch headers from ``position`` (a batch start) up to ``end`` (default: size)."""
        end = self.size if end is None else end
        if position + HEADER_SIZE > end:
            return
        mapping = self._map_file(end)
        unpack = SCAN_STRUCT.unpack_from
        while position + HEADER_SIZE <= end:
            base_offset, length, last_offset_delta, max_timestamp = unpack(mapping, position)
            if length < HEADER_SIZE or position + length > end:
                return
            yield ScanEntry(position, base_offset, length, base_offset + last_offset_delta, max_timestamp)
            position += length

    def translate(self, offset: int, end: int | None = None) -> int | None:
        """Position of the first batch whose last offset is >= ``offset``; None if none is."""
        _, position = self.index.lookup(offset)
        end = self.size if end is None else end
        if position + HEADER_SIZE > end:
            return None
        mapping = self._map_file(end)
        unpack = SCAN_STRUCT.unpack_from
        while position + HEADER_SIZE <= end:
            base_offset, length, last_offset_delta, _ = unpack(mapping, position)
            if length < HEADER_SIZE:
                return None
            if base_offset + last_offset_delta >= offset:
                return position
            position += length
        return None

    def read(self, position: int, max_bytes: int, end: int | None = None) -> memoryview:
        """Whole batches from ``position`` up to ``max_bytes`` — at least one batch."""
        return self.read_batches(position, max_bytes, end)[0]

    def read_batches(
        self, position: int, max_bytes: int, end: int | None = None
    ) -> tuple[memoryview, int | None]:
        """Like ``read``, plus the offset after the last batch returned (None if none was).

        ``end`` caps the range at a batch start (e.g. the last stable offset's batch).
        """
        size, next_offset = self.published
        capped = end is not None and end < size
        if capped:
            assert end is not None
            size = end
        if position >= size:
            return memoryview(b""), None
        mapping = self._map_file(size)
        want = position + max(max_bytes, 0)
        if want >= size:
            stop = size
            if capped:
                (next_offset,) = struct.unpack_from("<q", mapping, size)
            return self.view(position, stop), next_offset
        first_length, last_offset_delta = _LENGTH_AND_DELTA.unpack_from(mapping, position + 8)
        stop = position + first_length
        (base_offset,) = struct.unpack_from("<q", mapping, position)
        next_offset = base_offset + last_offset_delta + 1
        if stop < want:
            walk_offset, walk_from = self.index.lookup_position(want)
            if walk_from > stop:  # every batch before the entry's batch ends by ``want``
                stop, next_offset = walk_from, walk_offset
            for entry in self.scan(stop, size):
                if entry.position + entry.length > want:
                    break
                stop = entry.position + entry.length
                next_offset = entry.last_offset + 1
        return self.view(position, stop), next_offset

    def find_timestamp(self, timestamp: int, min_offset: int = 0) -> int | None:
        """The first offset >= ``min_offset`` whose record timestamp is >= ``timestamp``; None if
        no record here is both.

        Records below ``min_offset`` (the log start, which may lie inside a batch) are skipped by
        the search, never answered: timestamps need not grow inside a batch, so the first match
        past ``min_offset`` can be anywhere in the rest of the segment.
        """
        if self.max_timestamp < timestamp:
            return None
        start_offset = max(self.time_index.lookup(timestamp), min_offset)
        position = self.translate(start_offset)
        if position is None:
            return None
        for entry in self.scan(position):
            if entry.max_timestamp < timestamp:
                continue
            columns = decode_columns(self.view(entry.position, entry.position + entry.length),
                                     skip_control=False)
            hits = np.flatnonzero((columns.timestamps >= timestamp) & (columns.offsets >= min_offset))
            if len(hits):
                return int(columns.offsets[hits[0]])
        return None

    # -- lifecycle --------------------------------------------------------------------------------

    def flush(self) -> None:
        os.fdatasync(self._fd)

    def flush_indexes(self) -> None:
        self.index.flush()
        self.time_index.flush()

    def seal(self) -> None:
        """This segment stops being the active one: final time entry, trim the indexes."""
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self._last_batch_offset)
        self.index.trim()
        self.time_index.trim()
        self.writable = False
        if self.size:
            self._map_file(self.size)  # map the final size once: later reads never touch the fd

    def truncate_to(self, offset: int) -> int:
        """Remove batches at or past the one holding ``offset``; returns the new next offset.

        Only for recovery and replication: a reader holding a view past the cut would fault.
        """
        position = self.translate(offset)
        if position is None:
            return self.next_offset
        # the cut batch may start below ``offset``: drop its index entries too
        (cut_offset,) = struct.unpack_from("<q", self._map_file(position + HEADER_SIZE), position)
        self.index.truncate_to_offset(cut_offset)
        self.time_index.truncate_to_offset(cut_offset)
        self._mapped = None
        os.ftruncate(self._fd, position)
        self.size = position
        # re-derive the end and the max timestamp from the remaining batches
        self.max_timestamp = -1
        self.next_offset = self.base_offset
        self._bytes_since_index_entry = 0
        for entry in self.scan(0):
            self.max_timestamp = max(self.max_timestamp, entry.max_timestamp)
            self.next_offset = entry.last_offset + 1
            self._last_batch_offset = entry.base_offset
        _, last_position = self.index.last_entry
        self._bytes_since_index_entry = self.size - last_position
        self.published = (self.size, self.next_offset)
        return self.next_offset

    def close(self) -> None:
        if self.closed:
            return
        if self.writable and self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self._last_batch_offset)
        self.index.close()
        self.time_index.close()
        self.closed = True  # the mapping stays for readers that still hold this segment
        os.close(self._fd)

    def paths(self) -> list[Path]:
        return [self.log_path, self.index.path, self.time_index.path]

    def delete(self) -> None:
        """Rename the files to ``.deleted``, then remove them. Open views stay readable."""
        self.close()
        doomed = []
        for path in self.paths():
            if path.exists():
                target = path.with_name(path.name + DELETED_SUFFIX)
                os.replace(path, target)
                doomed.append(target)
        for path in doomed:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def __repr__(self) -> str:
        return (
            f"LogSegment(base_offset={self.base_offset}, next_offset={self.next_offset}, "
            f"size={self.size}, writable={self.writable})"
        )


def _extra(suffix: str) -> str:
    return "" if suffix == LOG_SUFFIX else suffix
