"""The sparse offset index of one segment: relative offset -> position in the segment's .log.

File layout (``NNNNNNNNNNNNNNNNNNNN.index``), little-endian, one entry per ``index_interval_bytes``
of batches, in offset order::

    position width field
    0        4     relative_offset  <u4  a batch's base_offset - the segment's base_offset
    4        4     position         <u4  where that batch starts in the .log

If the segment's base offset is 50, the batch at offset 55 is stored as 5. An entry points at the
start of a batch, so a lookup gives the floor entry for an offset and the caller scans batch
headers forward from its position. Both columns strictly increase.

Lookups use an in-memory mirror of the two columns (``array('I')``) and ``bisect``: about a
microsecond, where ``np.searchsorted`` on a memmap costs a few.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from logstore.storage.index_file import CorruptIndexError, IndexFile

RELATIVE_OFFSET_WIDTH = 4
POSITION_WIDTH = 4
ENTRY_DTYPE = np.dtype([("relative_offset", "<u4"), ("position", "<u4")])
ENTRY_SIZE = ENTRY_DTYPE.itemsize
assert ENTRY_SIZE == RELATIVE_OFFSET_WIDTH + POSITION_WIDTH

MAX_RELATIVE_OFFSET = (1 << 32) - 1


class OffsetIndex(IndexFile):
    ENTRY_DTYPE = ENTRY_DTYPE

    def _load_mirror(self) -> None:
        self._relative_offsets = self._column("relative_offset", "I")
        self._positions = self._column("position", "I")

    def append(self, offset: int, position: int) -> None:
        """Add an entry for the batch starting at ``offset``; ignores offsets not past the last.

        A full index takes no more entries (the index is sparse: a lookup scans forward from an
        earlier entry); the segment rolls before its next append.
        """
        relative = offset - self.base_offset
        if self.entries and relative <= self._relative_offsets[self.entries - 1]:
            return
        if self.is_full:
            return
        if not self._write(relative, position):
            return
        self._relative_offsets.append(relative)
        self._positions.append(position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """The floor entry for ``offset`` as (offset, position); (base_offset, 0) if none."""
        entries = self.entries
        slot = bisect_right(self._relative_offsets, offset - self.base_offset, 0, entries) - 1
        if slot < 0:
            return self.base_offset, 0
        return self.base_offset + self._relative_offsets[slot], self._positions[slot]

    def lookup_position(self, position: int) -> tuple[int, int]:
        """The last entry at or before ``position`` as (offset, position); (base, 0) if none."""
        slot = bisect_right(self._positions, position, 0, self.entries) - 1
        if slot < 0:
            return self.base_offset, 0
        return self.base_offset + self._relative_offsets[slot], self._positions[slot]

    def truncate_to_offset(self, offset: int) -> None:
        """Drop entries for offsets >= ``offset``."""
        slot = bisect_right(self._relative_offsets, offset - self.base_offset - 1, 0, self.entries)
        self.truncate_entries(slot)

    @property
    def last_entry(self) -> tuple[int, int]:
        if not self.entries:
            return self.base_offset, 0
        return (
            self.base_offset + self._relative_offsets[self.entries - 1],
            self._positions[self.entries - 1],
        )

    def sanity_check(self, log_size: int) -> None:
        self.check_whole_entries()
        entries = self.entries
        if not entries:
            return
        relative = np.frombuffer(self._relative_offsets, dtype=np.uint32, count=entries)
        positions = np.frombuffer(self._positions, dtype=np.uint32, count=entries)
        if entries > 1 and not ((np.diff(relative.astype(np.int64)) > 0).all()
                                and (np.diff(positions.astype(np.int64)) > 0).all()):
            raise CorruptIndexError(f"offset index {self.path} is not increasing", path=str(self.path))
        if int(positions[-1]) >= max(log_size, 1):
            raise CorruptIndexError(
                f"offset index {self.path} points past the log ({int(positions[-1])} >= {log_size})",
                path=str(self.path),
            )
