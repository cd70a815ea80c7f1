"""A partition's log: an ordered run of segments, the last one active.

``append`` validates batches (outside the lock), then, under the partition's writer lock, assigns
offsets by rewriting each batch's 16-byte prefix, rolls the active segment when it is full or old,
and writes. ``read`` returns whole batches as a zero-copy view of one segment's mapping.

Files in a partition directory::

    00000000000000000000.log        batches          (segment.py)
    00000000000000000000.index      offset index     (offset_index.py)
    00000000000000000000.timeindex  time index       (time_index.py)
    checkpoint.json                 {"log_start_offset": .., "recovery_point": ..}
    leader-epoch-checkpoint         where each leader epoch starts (leader_epochs.py)
    .clean_shutdown                 present only after a clean close

Locking: ``_lock`` guards every mutation — append, roll, truncate, delete, segment swaps — so there
is one writer per partition. The periodic checkpoint is written outside it (``checkpoint``), its
writers ordered by ``_checkpoint_lock``. Readers take no lock: they read ``_segments`` (a tuple replaced
whole), ``log_start_offset`` and ``log_end_offset`` (published after the bytes are written) and
the bytes below each segment's published size, which never change. Truncation and deletion
(``truncate_to``, ``delete_records_before``, segment swaps) are in ``log_truncation.py``.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import weakref
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from logstore.errors import (
    BatchTooLargeError,
    CorruptBatchError,
    LogClosedError,
    OffsetOutOfRangeError,
)
from logstore.records import BatchHeader, iter_headers, validate_batches
from logstore.records.layout import ASSIGNED_PREFIX, ASSIGNED_PREFIX_SIZE
from logstore.storage.clock import SYSTEM_CLOCK, Clock
from logstore.storage.config import FLUSH_ALWAYS, LogConfig
from logstore.storage.files import atomic_write_json, fsync_dir, read_json, remove_quietly
from logstore.storage.flush import GroupCommit
from logstore.storage.index_file import CorruptIndexError
from logstore.storage.leader_epochs import FILE_NAME as EPOCHS_FILE
from logstore.storage.leader_epochs import LeaderEpochCache
from logstore.storage.log_truncation import LogTruncation, new_segment
from logstore.storage.recovery import open_segments
from logstore.storage.segment import LogSegment, PendingBatch

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.json"
CLEAN_SHUTDOWN_FILE = ".clean_shutdown"

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int  # offset of the first appended record
    last_offset: int  # offset of the last appended record
    log_end_offset: int  # one past last_offset
    max_timestamp: int
    batches: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    data: memoryview  # whole batches; may start before the requested offset
    log_start_offset: int
    log_end_offset: int
    #: The offset to read next: one past the last batch in ``data`` (the requested offset when
    #: ``data`` is empty).
    next_offset: int = -1


class PartitionLog(LogTruncation):
    def __init__(
        self,
        directory: Path,
        *,
        topic: str,
        partition: int,
        config: LogConfig,
        segments: list[LogSegment],
        log_start_offset: int,
        recovery_point: int,
        clock: Clock,
        on_roll: Callable[[PartitionLog], None] | None,
    ) -> None:
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.config = config
        self.clock = clock
        self._on_roll = on_roll
        self._lock = threading.RLock()
        #: Orders checkpoint file writers (``_store_checkpoint``); taken after ``_lock``.
        self._checkpoint_lock = threading.Lock()
        self._checkpoints_taken = 0
        self._checkpoint_written = 0
        self._segments: tuple[LogSegment, ...] = tuple(segments)
        self._base_offsets: list[int] = [s.base_offset for s in segments]
        self.log_start_offset = log_start_offset
        self.log_end_offset = segments[-1].next_offset
        # a weak reference, or log and group commit form a cycle that keeps a deleted topic's
        # segment mappings (and so its disk space) alive until the garbage collector runs
        self._group_commit = GroupCommit(_weak_method(self._sync_all), recovery_point)
        self._listeners: list[Callable[[PartitionLog], None]] = []
        self.closed = False
        self._epochs: LeaderEpochCache | None = None

    @property
    def epochs(self) -> LeaderEpochCache:
        """The leader epoch cache (clustered brokers), loaded on first use: from its file, cut
        to the log end, or rebuilt from the batch headers. A single node, whose batches all
        carry epoch 0, never touches it."""
        if self._epochs is None:
            self._epochs = self._load_epochs()
        return self._epochs

    def _load_epochs(self) -> LeaderEpochCache:
        cache = LeaderEpochCache.load(self.directory)
        if cache is not None:
            cache.truncate_from_end(self.log_end_offset)
            return cache
        cache = LeaderEpochCache(self.directory)
        if self.log_end_offset > self.log_start_offset:
            for header, _ in self.batches(self.log_start_offset):
                if header.leader_epoch > max(cache.latest_epoch, 0):
                    cache.assign(header.leader_epoch, header.base_offset)
        return cache

    def _cut_epochs(self, end_offset: int) -> None:
        """The log was cut at ``end_offset``: so is the epoch cache (loaded if it has a file)."""
        if self._epochs is not None or (self.directory / EPOCHS_FILE).exists():
            self.epochs.truncate_from_end(end_offset)

    # -- opening and closing -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        topic: str = "",
        partition: int = 0,
        config: LogConfig | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_roll: Callable[[PartitionLog], None] | None = None,
    ) -> PartitionLog:
        """Open (or create) the log in ``directory``, recovering it after an unclean stop."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        config = config or LogConfig()
        marker = path / CLEAN_SHUTDOWN_FILE
        clean = marker.exists()
        checkpoint = _read_checkpoint(path)
        opened = open_segments(
            path,
            config=config,
            clean=clean,
            log_start_offset=checkpoint.get("log_start_offset", 0),
            recovery_point=checkpoint.get("recovery_point", 0),
            now_ms=clock.now_ms(),
            name=f"{topic}/{partition}" if topic else str(path),
        )
        instance = cls(
            path,
            topic=topic,
            partition=partition,
            config=config,
            segments=opened.segments,
            log_start_offset=opened.log_start_offset,
            recovery_point=opened.recovery_point,
            clock=clock,
            on_roll=on_roll,
        )
        if clean:
            os.unlink(marker)
            fsync_dir(path)
        try:
            instance.checkpoint()
        except OSError as exc:  # a full disk: open anyway, so that the records can be read
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.warning("%s: checkpoint not written (%s); the previous one stays", path, exc.strerror)
        return instance

    def close(self) -> None:
        """Flush everything, write the checkpoint and the clean-shutdown marker."""
        with self._lock:
            if self.closed:
                return
            self.flush()
            for segment in self._segments:
                segment.close()
            self.closed = True
            self._write_checkpoint(self.log_end_offset)
            atomic_write_json(self.directory / CLEAN_SHUTDOWN_FILE, {"clean": True})

    def abandon(self) -> None:
        """Close the files without flushing or marking a clean shutdown (tests: a crash)."""
        with self._lock:
            self.closed = True
            for segment in self._segments:
                if not segment.closed:
                    os.close(segment._fd)
                    segment.closed = True

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state --------------------------------------------------------------------------------------

    @property
    def segments(self) -> tuple[LogSegment, ...]:
        return self._segments

    @property
    def active_segment(self) -> LogSegment:
        return self._segments[-1]

    @property
    def recovery_point(self) -> int:
        return self._group_commit.durable_offset

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    @property
    def lock(self) -> threading.RLock:
        """The writer lock; cleaners hold it to swap segments."""
        return self._lock

    def add_listener(self, listener: Callable[[PartitionLog], None]) -> None:
        """Call ``listener(log)`` after every append (outside the lock): long-poll wake-ups."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[PartitionLog], None]) -> None:
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    # -- appending ---------------------------------------------------------------------------------

    def append(
        self,
        payload: Buffer,
        *,
        headers: Sequence[BatchHeader] | None = None,
        leader_epoch: int = 0,
        sync: bool | None = None,
    ) -> AppendResult:
        """Append one or more batches; assigns their offsets. All or nothing.

        ``headers`` are the already-validated headers of ``payload`` (the broker validates before
        it takes any lock); without them the payload is validated here. ``sync`` = None follows the
        flush policy; True or False forces or skips waiting for the fsync.
        """
        if headers is None:
            headers = validate_batches(payload)
        limit = self.config.max_batch_bytes
        for header in headers:
            if header.batch_length > limit:
                raise BatchTooLargeError(
                    f"batch of {header.batch_length} bytes exceeds max_batch_bytes={limit} "
                    f"of {self.topic}/{self.partition}",
                    size=header.batch_length,
                    limit=limit,
                    topic=self.topic,
                    partition=self.partition,
                )
        view = memoryview(payload)
        with self._lock:
            if self.closed:
                raise LogClosedError(f"log {self.topic}/{self.partition} is closed")
            first_offset = offset = self.log_end_offset
            max_timestamp = -1
            group: list[PendingBatch] = []
            for header in headers:
                span = header.last_offset_delta + 1
                start = header.position
                pending = PendingBatch(
                    ASSIGNED_PREFIX.pack(offset, header.batch_length, leader_epoch),
                    view[start + ASSIGNED_PREFIX_SIZE : start + header.batch_length],
                    offset,
                    offset + span,
                    header.max_timestamp,
                    header.batch_length,
                )
                group.append(pending)
                offset += span
                max_timestamp = max(max_timestamp, header.max_timestamp)
            if leader_epoch > 0 and group and leader_epoch > self.epochs.latest_epoch:
                self.epochs.assign(leader_epoch, first_offset)
            self._write_group(group, first_offset, offset)
        return self._appended(first_offset, offset, max_timestamp, len(headers), sync)

    def append_replica(
        self, payload: Buffer, *, headers: Sequence[BatchHeader] | None = None, sync: bool | None = None
    ) -> AppendResult:
        """Append batches copied from the partition's leader as they are: their base offsets and
        leader epochs stay what the leader assigned (a follower's log is byte-identical to the
        leader's). The first batch must start at the log end and the batches must be contiguous;
        otherwise CorruptBatchError and nothing is appended."""
        if headers is None:
            headers = validate_batches(payload)
        view = memoryview(payload)
        with self._lock:
            if self.closed:
                raise LogClosedError(f"log {self.topic}/{self.partition} is closed")
            first_offset = offset = self.log_end_offset
            max_timestamp = -1
            group: list[PendingBatch] = []
            for header in headers:
                if header.base_offset != offset:
                    raise CorruptBatchError(
                        f"{self.topic}/{self.partition}: replicated batch at offset "
                        f"{header.base_offset} does not continue the log at {offset}",
                        position=header.position, topic=self.topic, partition=self.partition,
                    )
                start = header.position
                group.append(PendingBatch(
                    bytes(view[start : start + ASSIGNED_PREFIX_SIZE]),
                    view[start + ASSIGNED_PREFIX_SIZE : start + header.batch_length],
                    offset, header.next_offset, header.max_timestamp, header.batch_length,
                ))
                if header.leader_epoch > 0 and header.leader_epoch > self.epochs.latest_epoch:
                    self.epochs.assign(header.leader_epoch, offset)
                offset = header.next_offset
                max_timestamp = max(max_timestamp, header.max_timestamp)
            self._write_group(group, first_offset, offset)
        return self._appended(first_offset, offset, max_timestamp, len(headers), sync)

    def _write_group(self, group: list[PendingBatch], first_offset: int, end_offset: int) -> None:
        """Write the batches to the active segment (rolling first if needed); under the lock."""
        # One segment takes the whole append (Kafka's rule), so a write that fails is cut
        # back by the segment and leaves nothing appended.
        if group:
            if not self.active_segment.can_hold(
                end_offset, sum(b.length for b in group), self.config.segment_bytes
            ) or self._too_old(max(batch.max_timestamp for batch in group)):
                self._roll(first_offset)
            self.active_segment.append(group)
        self.log_end_offset = end_offset

    def _appended(
        self, first_offset: int, end_offset: int, max_timestamp: int, batches: int, sync: bool | None
    ) -> AppendResult:
        result = AppendResult(first_offset, end_offset - 1, end_offset, max_timestamp, batches)
        if sync or (sync is None and self.config.flush == FLUSH_ALWAYS):
            self._group_commit.wait_durable(end_offset)
        for listener in self._listeners:
            listener(self)
        return result

    def _too_old(self, incoming_max_timestamp: int) -> bool:
        """Kafka's segment_ms rule: roll when the appended records' newest timestamp is more than
        segment_ms past the active segment's first batch timestamp (record time, kept in the
        .log, so a reopen does not restart the age). A first batch without a timestamp (< 0)
        falls back to the clock since the segment was created or opened."""
        active = self.active_segment
        if not active.size:
            return False
        first_ms = active.first_batch_timestamp
        if first_ms >= 0:
            return incoming_max_timestamp - first_ms > self.config.segment_ms
        return self.clock.now_ms() - active.created_ms > self.config.segment_ms

    def roll(self) -> None:
        """Seal the active segment and start a new one at the log end (if it holds anything)."""
        with self._lock:
            if self.active_segment.size:
                self._roll(self.log_end_offset)

    def _roll(self, base_offset: int) -> None:
        old = self.active_segment
        if old.size == 0:
            return  # an empty active segment that cannot hold the batch: batch is too big
        old.seal()
        new = new_segment(self.directory, base_offset, self.config, self.clock.now_ms())
        fsync_dir(self.directory)  # the new segment's directory entry survives a power loss
        self._set_segments((*self._segments, new))
        log.debug("rolled %s/%s at offset %d", self.topic, self.partition, base_offset)
        if self._on_roll is not None:
            self._on_roll(self)

    def _set_segments(self, segments: tuple[LogSegment, ...]) -> None:
        self._base_offsets = [segment.base_offset for segment in segments]
        self._segments = segments

    # -- durability ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """fdatasync everything appended so far; raises the recovery point."""
        self._group_commit.wait_durable(self.log_end_offset)

    def wait_durable(self, offset: int) -> None:
        """Return once every offset below ``offset`` is on disk (group commit)."""
        self._group_commit.wait_durable(offset)

    def _sync_all(self) -> int:
        target = self.log_end_offset
        recovery_point = self._group_commit.durable_offset
        for segment in self._segments:
            if segment.next_offset > recovery_point and not segment.closed:
                segment.flush()
                if not segment.writable:
                    segment.flush_indexes()
        return target

    def checkpoint(self) -> None:
        """Persist log start and recovery point (the maintenance thread, periodically). The
        values are taken under ``_lock`` but the file is written outside it: its two fsyncs
        take 10-100 ms on a busy disk, and an append waiting for the lock meanwhile stalled the
        broker's event loop that long (``docs/latency.md``)."""
        with self._lock:
            if self.closed:
                return
            taken, values = self._checkpoint_values(self.recovery_point)
        self._store_checkpoint(taken, values)

    def _write_checkpoint(self, recovery_point: int) -> None:
        """Persist the checkpoint now (under ``_lock``: log start moved, truncation, close)."""
        self._store_checkpoint(*self._checkpoint_values(recovery_point))

    def _checkpoint_values(self, recovery_point: int) -> tuple[int, dict[str, int]]:
        """The checkpoint's content and its place in the order they were taken (under ``_lock``)."""
        self._checkpoints_taken += 1
        return self._checkpoints_taken, {"log_start_offset": self.log_start_offset,
                                         "recovery_point": recovery_point}

    def _store_checkpoint(self, taken: int, values: dict[str, int]) -> None:
        """Write a checkpoint unless one taken later is on disk already (``_checkpoint_lock``
        orders the writers; it is taken after ``_lock``, never before)."""
        with self._checkpoint_lock:
            if taken <= self._checkpoint_written:
                return
            try:
                atomic_write_json(self.directory / CHECKPOINT_FILE, values)
            except FileNotFoundError:
                if not self.closed:
                    raise
                return  # deleted meanwhile (a periodic checkpoint racing delete_topic)
            self._checkpoint_written = taken

    # -- reading ------------------------------------------------------------------------------------

    def _check_range(self, offset: int, start: int, end: int) -> None:
        if offset < start or offset > end:
            raise OffsetOutOfRangeError(
                topic=self.topic,
                partition=self.partition,
                offset=offset,
                log_start_offset=start,
                log_end_offset=end,
            )

    def read(self, offset: int, max_bytes: int = 1 << 20, *, max_offset: int | None = None) -> ReadResult:
        """Whole batches from the one holding ``offset``, up to ``max_bytes`` but at least one.

        ``max_offset`` (exclusive) stops before the batch holding it (e.g. the last stable
        offset). Raises OffsetOutOfRangeError below log start or past log end.
        """
        segments, bases = self._segments, self._base_offsets
        start, end = self.log_start_offset, self.log_end_offset
        self._check_range(offset, start, end)
        if self.closed:
            raise LogClosedError(f"log {self.topic}/{self.partition} is closed")
        if offset == end or (max_offset is not None and offset >= max_offset):
            return ReadResult(memoryview(b""), start, end, offset)
        slot = max(bisect_right(bases, offset) - 1, 0)
        for segment in segments[slot:]:
            position = segment.translate(offset)
            if position is None:
                continue
            limit = None
            if max_offset is not None:
                limit = segment.translate(max_offset)
            data, next_offset = segment.read_batches(position, max_bytes, limit)
            return ReadResult(data, start, end, offset if next_offset is None else next_offset)
        return ReadResult(memoryview(b""), start, end, offset)

    def batches(self, start_offset: int = 0) -> Iterator[tuple[BatchHeader, memoryview]]:
        """Every batch from the one holding ``start_offset`` on, as (header, bytes) — header
        walking only, no record decoding. For rebuilding state (producers, transactions)."""
        for segment in self._segments:
            if segment.next_offset <= start_offset:
                continue
            size = segment.published[0]
            position = segment.translate(start_offset, size) if start_offset > segment.base_offset else 0
            if position is None or not size:
                continue
            view = segment.view(position, size)
            for header in iter_headers(view):
                yield header, view[header.position : header.position + header.batch_length]

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        """The first offset at or past log start whose timestamp is >= ``timestamp``; None if
        every such record is older. Records below log start are never an answer, even when log
        start lies inside a batch: the search starts there."""
        start = self.log_start_offset
        for segment in self._segments:
            if segment.next_offset <= start or segment.max_timestamp < timestamp:
                continue
            found = segment.find_timestamp(timestamp, min_offset=start)
            if found is not None:
                return found
        return None

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.topic!r}, {self.partition}, start={self.log_start_offset}, "
            f"end={self.log_end_offset}, segments={len(self._segments)})"
        )


def _weak_method(method: Callable[[], int]) -> Callable[[], int]:
    ref = weakref.WeakMethod(method)

    def call() -> int:
        bound = ref()
        if bound is None:
            raise LogClosedError("the log is gone")
        return bound()

    return call


def _read_checkpoint(directory: Path) -> dict[str, int]:
    path = directory / CHECKPOINT_FILE
    try:
        value = read_json(path)
        return {
            "log_start_offset": int(value.get("log_start_offset", 0)),
            "recovery_point": int(value.get("recovery_point", 0)),
        }
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, AttributeError):
        log.warning("ignoring unreadable checkpoint %s; recovering every segment", path)
        remove_quietly(path)
        return {}


__all__ = ["AppendResult", "CorruptIndexError", "PartitionLog", "ReadResult"]
