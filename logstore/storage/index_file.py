"""A fixed-width-entry index file held in a numpy memmap: what the offset and time indexes share.

The file of an active segment is preallocated to ``max_bytes`` (zeros past the last entry) and is
trimmed to exactly ``entries * entry_size`` bytes when the segment is sealed or closed cleanly. So on
open, a file's size says how many entries it holds; after an unclean stop the active segment's
indexes are rebuilt from its log, never trusted. No checksum is kept: an index that fails its
sanity check is rebuilt from the log.

Entries are written with ``os.pwrite``, not through the mapping: on a full disk a store into a
mapped page of a sparse file is a SIGBUS, while a write is an error the segment can shrug off (an
index is sparse anyway; a missing entry only makes a lookup scan a little further). For the same
reason they are read back with a plain read, never through the mapping: on a full tmpfs even a
load from a hole of a shared mapping is a SIGBUS (the page must be allocated to be mapped).

Not thread-safe for writers: the owning segment appends under its partition's lock. Readers may
look up concurrently: an entry is written before ``entries`` is raised to include it, and the
in-memory mirror arrays (``array``) only grow.
"""

from __future__ import annotations

import logging
import os
from array import array
from pathlib import Path

import numpy as np

from logstore.errors import LogstoreError

log = logging.getLogger(__name__)


class CorruptIndexError(LogstoreError):
    reason = "CORRUPT_INDEX"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, path=path)
        self.path = path


class IndexFile:
    #: Subclasses set the entry dtype.
    ENTRY_DTYPE: np.dtype = np.dtype([])

    def __init__(self, path: Path, base_offset: int, max_bytes: int, *, writable: bool) -> None:
        self.path = path
        self.base_offset = base_offset
        self.entry_size = self.ENTRY_DTYPE.itemsize
        self.max_entries = max(1, max_bytes // self.entry_size)
        self.writable = writable
        self._memmap: np.memmap | None = None
        existed = path.exists()
        size = path.stat().st_size if existed else 0
        self.entries = size // self.entry_size
        #: Bytes of a torn last entry (a file cut mid-entry is corrupt: see ``sanity_check``).
        self.torn_bytes = size % self.entry_size
        if writable:
            self.entries = min(self.entries, self.max_entries)
            with open(path, "ab"):
                pass
            os.truncate(path, self.max_entries * self.entry_size)
            self._memmap = np.memmap(path, dtype=self.ENTRY_DTYPE, mode="r+", shape=(self.max_entries,))
        elif self.entries:
            self._memmap = np.memmap(path, dtype=self.ENTRY_DTYPE, mode="r", shape=(self.entries,))
        self._load_mirror()

    # -- subclass hooks ---------------------------------------------------------------------------

    def _load_mirror(self) -> None:
        raise NotImplementedError

    def sanity_check(self, log_size: int) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------

    def check_whole_entries(self) -> None:
        """Raise CorruptIndexError if the file does not hold a whole number of entries."""
        if self.torn_bytes:
            raise CorruptIndexError(
                f"index {self.path} ends with {self.torn_bytes} bytes of a torn entry "
                f"(entries are {self.entry_size} bytes)",
                path=str(self.path),
            )

    @property
    def is_full(self) -> bool:
        return self.entries >= self.max_entries

    def _column(self, name: str, typecode: str) -> array:
        mirror = array(typecode)
        if self.entries and self._memmap is not None:
            with open(self.path, "rb") as file:  # read(), not the mapping: see the module doc
                data = file.read(self.entries * self.entry_size)
            entries = np.frombuffer(data, dtype=self.ENTRY_DTYPE, count=len(data) // self.entry_size)
            mirror.frombytes(np.ascontiguousarray(entries[name]).tobytes())
        return mirror

    def _write_at(self, slot: int, *values: int) -> bool:
        """Write one entry at ``slot``; False (and a warning) if the disk refused it."""
        if self._memmap is None or not self.writable:
            raise CorruptIndexError(f"index {self.path} is read-only", path=str(self.path))
        entry = np.array([values], dtype=self.ENTRY_DTYPE).tobytes()
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.pwrite(fd, entry, slot * self.entry_size)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("index %s: entry not written (%s); lookups scan further", self.path, exc)
            return False
        return True

    def _write(self, *values: int) -> bool:
        if not self._write_at(self.entries, *values):
            return False
        self.entries += 1
        return True

    def reset(self) -> None:
        """Drop every entry (before a rebuild)."""
        self.entries = 0
        self._load_mirror()

    def truncate_entries(self, entries: int) -> None:
        self.entries = min(self.entries, entries)
        self._load_mirror()

    def flush(self) -> None:
        if self._memmap is not None and self.writable:
            self._memmap.flush()

    def trim(self) -> None:
        """Shrink the file to its entries and reopen it read-only (the segment is sealed)."""
        self.flush()
        self._memmap = None
        os.truncate(self.path, self.entries * self.entry_size)
        self.writable = False
        if self.entries:
            self._memmap = np.memmap(self.path, dtype=self.ENTRY_DTYPE, mode="r", shape=(self.entries,))

    def close(self) -> None:
        if self.writable:
            self.trim()
        self._memmap = None

    def rename(self, path: Path) -> None:
        os.replace(self.path, path)
        self.path = path
