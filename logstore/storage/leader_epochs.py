"""The leader epoch cache of one partition: where each leader epoch's records start.

Every batch carries the epoch of the leader that appended it (header bytes 12..16). This cache
keeps, per epoch, the offset of its first record, so that a follower coming back after a leader
change can ask "where did my last epoch end on the leader?" and truncate exactly where the logs
diverged (Kafka's KIP-101 and KIP-279) instead of trusting a high watermark.

File ``leader-epoch-checkpoint`` in the partition directory, text, replaced by write-new, fsync,
rename::

    0                 format version
    2                 number of entries
    3 0               epoch 3 starts at offset 0
    5 1200            epoch 5 starts at offset 1200

Entries are strictly increasing in both epoch and start offset. Epoch 0 (a single node's, and
anything appended before a broker joined a cluster) has no entry: cluster leader epochs start at 1. The file is derived data: when it
is missing or damaged it is rebuilt from the batch headers of the log, and entries at or past the
log end are dropped at open (a log cut after a crash).

Locking: not thread-safe; the partition log calls it under its own lock.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from logstore.storage.files import fsync_dir

log = logging.getLogger(__name__)

FILE_NAME = "leader-epoch-checkpoint"
FORMAT_VERSION = 0


class LeaderEpochCache:
    def __init__(self, directory: Path, entries: Iterable[tuple[int, int]] = ()) -> None:
        self.directory = directory
        self._epochs: list[int] = []
        self._starts: list[int] = []
        for epoch, start_offset in entries:
            self._epochs.append(epoch)
            self._starts.append(start_offset)

    @classmethod
    def load(cls, directory: Path) -> LeaderEpochCache | None:
        """The cache from its file, or None when the file is missing or damaged (rebuild it)."""
        path = directory / FILE_NAME
        try:
            lines = path.read_text().split("\n")
            if int(lines[0]) != FORMAT_VERSION:
                raise ValueError(f"format version {lines[0]}")
            count = int(lines[1])
            entries = [tuple(int(x) for x in line.split()) for line in lines[2 : 2 + count]]
            if len(entries) != count or any(len(e) != 2 for e in entries):
                raise ValueError("entry count does not match")
            pairs = [(e[0], e[1]) for e in entries]
            for (e1, s1), (e2, s2) in zip(pairs, pairs[1:], strict=False):
                if not (e2 > e1 and s2 >= s1):
                    raise ValueError("entries out of order")
        except FileNotFoundError:
            return None
        except (ValueError, IndexError) as exc:
            log.warning("%s: damaged leader epoch file (%s); rebuilding it from the log", path, exc)
            return None
        return cls(directory, pairs)

    # -- reading -------------------------------------------------------------------------------

    @property
    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self._epochs, self._starts, strict=True))

    @property
    def latest_epoch(self) -> int:
        """The newest epoch with records, or -1 when the log has none with an epoch."""
        return self._epochs[-1] if self._epochs else -1

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(the largest known epoch <= ``epoch``, the offset where it ended).

        The end of an epoch is the start of the next one, or the log end for the latest epoch.
        (-1, -1) when ``epoch`` is older than every known epoch.
        """
        index = bisect.bisect_right(self._epochs, epoch) - 1
        if index < 0:
            return -1, -1
        if index + 1 < len(self._epochs):
            return self._epochs[index], self._starts[index + 1]
        return self._epochs[index], log_end_offset

    # -- changing ------------------------------------------------------------------------------

    def assign(self, epoch: int, start_offset: int) -> None:
        """Records of ``epoch`` start at ``start_offset`` (called when the first such batch is
        appended; an older or equal epoch is a no-op)."""
        if epoch <= self.latest_epoch:
            return
        self._epochs.append(epoch)
        self._starts.append(start_offset)
        self.write()

    def truncate_from_end(self, end_offset: int) -> None:
        """The log was cut at ``end_offset``: forget epochs that start at or after it."""
        keep = bisect.bisect_left(self._starts, end_offset)
        if keep < len(self._starts):
            del self._epochs[keep:]
            del self._starts[keep:]
            self.write()

    def write(self) -> None:
        """Replace the file. It is derived data: when it cannot be written (a full disk) it is
        removed instead, and rebuilt from the batch headers at the next load."""
        lines = [str(FORMAT_VERSION), str(len(self._epochs))]
        lines += [f"{e} {s}" for e, s in zip(self._epochs, self._starts, strict=True)]
        path = self.directory / FILE_NAME
        temp = path.with_suffix(".tmp")
        try:
            with open(temp, "w") as file:
                file.write("\n".join(lines) + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
            fsync_dir(self.directory)
        except OSError as exc:
            log.warning("%s not written (%s); it will be rebuilt from the log", path, exc.strerror)
            for stale in (temp, path):
                try:
                    os.unlink(stale)
                except OSError:
                    pass
