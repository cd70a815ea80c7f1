"""A partition log's truncation and deletion: cut the log back to an offset (a follower whose
log diverged from its leader's, repair), start it over empty at an offset, raise log start
(DeleteRecords, retention) and swap sealed segments for the cleaner's output. A mixin of
``PartitionLog``, which owns the state named below; split from ``log.py`` so that each file keeps
to one concept.

Locking: every method here takes the partition's writer lock ``_lock``, like every other
mutation of ``PartitionLog``; readers take none (they see ``_segments`` replaced whole).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from logstore.errors import OffsetOutOfRangeError
from logstore.storage.clock import Clock
from logstore.storage.config import LogConfig
from logstore.storage.files import fsync_dir
from logstore.storage.flush import GroupCommit
from logstore.storage.segment import LogSegment


class LogTruncation:
    """Provided by ``PartitionLog``."""

    directory: Path
    topic: str
    partition: int
    config: LogConfig
    clock: Clock
    log_start_offset: int
    log_end_offset: int
    _lock: threading.RLock
    _segments: tuple[LogSegment, ...]
    _group_commit: GroupCommit

    @property
    def recovery_point(self) -> int:
        raise NotImplementedError

    def _set_segments(self, segments: tuple[LogSegment, ...]) -> None:
        raise NotImplementedError

    def _cut_epochs(self, end_offset: int) -> None:
        raise NotImplementedError

    def _write_checkpoint(self, recovery_point: int) -> None:
        raise NotImplementedError

    def truncate_to(self, offset: int) -> None:
        """Remove every batch at or after the one holding ``offset`` (replication, repair)."""
        with self._lock:
            if offset >= self.log_end_offset:
                return
            if offset < self.log_start_offset:
                offset = self.log_start_offset
            keep = [s for s in self._segments if s.base_offset < offset or s is self._segments[0]]
            for segment in self._segments:
                if segment not in keep:
                    segment.delete()
            last = keep[-1]
            if last.base_offset >= offset:  # offset at or below the first segment's base
                for segment in keep:
                    segment.delete()
                keep = [new_segment(self.directory, offset, self.config, self.clock.now_ms())]
                self.log_start_offset = offset
            else:
                last.close()
                reopened = LogSegment(
                    self.directory, last.base_offset,
                    index_bytes=self.config.segment_index_bytes,
                    index_interval_bytes=self.config.index_interval_bytes,
                    writable=True, created_ms=self.clock.now_ms(),
                )
                reopened.recover()
                reopened.truncate_to(offset)
                keep[-1] = reopened
                if reopened.next_offset < self.log_start_offset:
                    # the cut batch held log start: nothing readable is left, so start an empty
                    # log at log start (as recovery does), never below it
                    for segment in keep:
                        segment.delete()
                    keep = [new_segment(self.directory, self.log_start_offset, self.config,
                                         self.clock.now_ms())]
            self._set_segments(tuple(keep))
            self.log_end_offset = keep[-1].next_offset
            self._cut_epochs(self.log_end_offset)
            self._group_commit.reset(min(self.recovery_point, self.log_end_offset))
            self._write_checkpoint(self.recovery_point)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every record and start an empty log at ``offset`` (a follower whose whole log
        is below the leader's log start)."""
        with self._lock:
            for segment in self._segments:
                segment.delete()
            self._set_segments((new_segment(self.directory, offset, self.config, self.clock.now_ms()),))
            fsync_dir(self.directory)
            self.log_start_offset = self.log_end_offset = offset
            self._cut_epochs(0)
            self._group_commit.reset(offset)
            self._write_checkpoint(offset)

    def delete_records_before(self, offset: int) -> int:
        """Raise log start to ``offset`` (records below it become unreadable); returns log start.

        Whole segments below the new log start are deleted; the checkpoint is written first.
        """
        with self._lock:
            if offset > self.log_end_offset or offset < 0:
                raise OffsetOutOfRangeError(
                    topic=self.topic,
                    partition=self.partition,
                    offset=offset,
                    log_start_offset=self.log_start_offset,
                    log_end_offset=self.log_end_offset,
                )
            if offset > self.log_start_offset:
                self.log_start_offset = offset
                self._write_checkpoint(self.recovery_point)
            doomed = [
                s for s in self._segments[:-1] if s.next_offset <= self.log_start_offset
            ]
            if doomed:
                self.delete_oldest_segments(len(doomed))
            return self.log_start_offset

    def delete_oldest_segments(self, count: int) -> list[LogSegment]:
        """Delete the ``count`` oldest segments, never the active one; log start rises first."""
        with self._lock:
            count = min(count, len(self._segments) - 1)
            if count <= 0:
                return []
            doomed = self._segments[:count]
            remaining = self._segments[count:]
            new_start = max(self.log_start_offset, remaining[0].base_offset)
            if new_start != self.log_start_offset:
                self.log_start_offset = new_start
                self._write_checkpoint(self.recovery_point)
            self._set_segments(remaining)
        for segment in doomed:
            segment.delete()
        return list(doomed)

    def replace_segments(self, old: Sequence[LogSegment], new: LogSegment) -> None:
        """Swap sealed ``old`` segments (consecutive) for ``new`` (the cleaner's output)."""
        with self._lock:
            segments = list(self._segments)
            first = segments.index(old[0])
            if segments[first : first + len(old)] != list(old) or old[-1] is segments[-1]:
                raise ValueError("can only replace consecutive sealed segments")
            segments[first : first + len(old)] = [new]
            self._set_segments(tuple(segments))


def new_segment(directory: Path, base_offset: int, config: LogConfig, now_ms: int) -> LogSegment:
    return LogSegment(
        directory,
        base_offset,
        index_bytes=config.segment_index_bytes,
        index_interval_bytes=config.index_interval_bytes,
        writable=True,
        created_ms=now_ms,
    )
