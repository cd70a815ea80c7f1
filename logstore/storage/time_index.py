"""The time index of one segment: timestamp -> the batch from which to scan for it.

File layout (``NNNNNNNNNNNNNNNNNNNN.timeindex``), little-endian, packed 12-byte entries::

    position width field
    0        8     timestamp        <i8  the largest record timestamp up to and including ...
    8        4     relative_offset  <u4  ... the batch starting at this offset (minus base_offset)

Entries are added beside offset-index entries (and once more when the segment is sealed), only
when the timestamp grows, so both columns increase. Every record before the batch at an entry's
offset, and in it, has a timestamp <= the entry's timestamp; so to find the first record whose
timestamp is >= t, start at the last entry whose timestamp is < t and scan forward.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from logstore.storage.index_file import CorruptIndexError, IndexFile

TIMESTAMP_WIDTH = 8
RELATIVE_OFFSET_WIDTH = 4
ENTRY_DTYPE = np.dtype([("timestamp", "<i8"), ("relative_offset", "<u4")])
ENTRY_SIZE = ENTRY_DTYPE.itemsize
assert ENTRY_SIZE == TIMESTAMP_WIDTH + RELATIVE_OFFSET_WIDTH


class TimeIndex(IndexFile):
    ENTRY_DTYPE = ENTRY_DTYPE

    def _load_mirror(self) -> None:
        self._timestamps = self._column("timestamp", "q")
        self._relative_offsets = self._column("relative_offset", "I")

    @property
    def last_timestamp(self) -> int:
        return self._timestamps[self.entries - 1] if self.entries else -1

    @property
    def last_offset(self) -> int:
        """The offset the last entry names (the base offset when there is none)."""
        return self.base_offset + self._relative_offsets[self.entries - 1] if self.entries else self.base_offset

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add (timestamp, offset) if the timestamp grew and the offset moved forward.

        A full index overwrites its last entry instead, so the last entry always carries the
        segment's largest timestamp (``load`` relies on it); lookups scan from the entry before.
        """
        if self.entries:
            if timestamp <= self._timestamps[self.entries - 1]:
                return
            relative = offset - self.base_offset
            if relative < self._relative_offsets[self.entries - 1]:
                return
        relative = offset - self.base_offset
        if self.is_full:
            last = self.entries - 1
            if not self._write_at(last, timestamp, relative):
                return
            # timestamp first: a concurrent reader sees (new, old offset), which is still true
            self._timestamps[last] = timestamp
            self._relative_offsets[last] = relative
            return
        if not self._write(timestamp, relative):
            return
        self._timestamps.append(timestamp)
        self._relative_offsets.append(relative)

    def lookup(self, timestamp: int) -> int:
        """The offset from which to scan for the first record with timestamp >= ``timestamp``."""
        slot = bisect_left(self._timestamps, timestamp, 0, self.entries) - 1
        if slot < 0:
            return self.base_offset
        return self.base_offset + self._relative_offsets[slot]

    def truncate_to_offset(self, offset: int) -> None:
        keep = 0
        while keep < self.entries and self.base_offset + self._relative_offsets[keep] < offset:
            keep += 1
        self.truncate_entries(keep)

    def sanity_check(self, log_size: int) -> None:
        self.check_whole_entries()
        entries = self.entries
        if entries < 2:
            return
        stamps = np.frombuffer(self._timestamps, dtype=np.int64, count=entries)
        relative = np.frombuffer(self._relative_offsets, dtype=np.uint32, count=entries)
        if not ((np.diff(stamps) > 0).all() and (np.diff(relative.astype(np.int64)) >= 0).all()):
            raise CorruptIndexError(f"time index {self.path} is not increasing", path=str(self.path))
