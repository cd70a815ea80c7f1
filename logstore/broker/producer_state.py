"""Producer state of one partition: idempotent dedup, open transactions, aborted transactions.

For every producer id that appended here it remembers the epoch and the last ``BATCH_CACHE`` (20)
batches' sequence ranges and offsets, as Kafka's ``ProducerStateManager`` does (Kafka keeps 5,
one batch per partition in each of 5 requests in flight; a logstore request carries up to 4
batches of a partition at the defaults, so 5 requests in flight are 20 batches):

- a batch whose sequences match a remembered batch is a retry: it is answered with the original
  offsets and not appended again;
- a batch whose first sequence is not one past the last one is refused
  (``OutOfOrderSequenceError``), as is one with an older epoch (``ProducerFencedError``);
- a newer epoch starts the sequences again at 0.

It also tracks each producer's open transaction (its first offset here), so the *last stable
offset* is the first offset of the oldest open transaction (or the log end), and the aborted
transactions (producer id, first offset, abort marker offset) a read_committed reader must drop.

All of it is derived from the log: batch headers carry producer id, epoch and sequence, and
transaction markers are control batches. ``load`` rebuilds it by walking batch headers from a
snapshot (``producer_state.json`` in the partition directory, written at a clean close) or from
the start; so dedup survives a broker restart, clean or not.

Threading: event loop thread only.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from logstore.errors import OutOfOrderSequenceError, ProducerFencedError
from logstore.records import BatchHeader, decode_records
from logstore.storage import PartitionLog
from logstore.storage.files import atomic_write_json, read_json, remove_quietly

log = logging.getLogger(__name__)

#: Batches remembered per producer and partition: an idempotent producer keeps at most this
#: many of a partition unanswered (``logstore.client.config.MAX_UNANSWERED_BATCHES``).
BATCH_CACHE = 20
SNAPSHOT_FILE = "producer_state.json"
COMMIT_MARKER = b"COMMIT"
ABORT_MARKER = b"ABORT"
SEQUENCE_MASK = 0x7FFFFFFF


@dataclass(slots=True)
class CachedBatch:
    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int


@dataclass
class ProducerEntry:
    producer_id: int
    epoch: int
    batches: deque[CachedBatch] = field(default_factory=lambda: deque(maxlen=BATCH_CACHE))


@dataclass(frozen=True, slots=True)
class Aborted:
    producer_id: int
    first_offset: int
    last_offset: int


class PartitionProducerState:
    def __init__(self, partition_log: PartitionLog) -> None:
        self.log = partition_log
        self.producers: dict[int, ProducerEntry] = {}
        self.open_transactions: dict[int, int] = {}  # producer id -> first offset here
        self.aborted: list[Aborted] = []
        self.applied_offset = 0  # state covers every batch below this offset

    # -- checks and updates ---------------------------------------------------------------------

    def check(self, headers: Iterable[BatchHeader]) -> tuple[int, int] | None:
        """Check a request's batches for one partition, in order.

        Returns (base_offset, last_offset) of the original append if every idempotent batch is
        a retry of remembered batches, None if they may be appended; raises when they may not.
        """
        headers = list(headers)
        duplicates: list[CachedBatch] = []
        expected: dict[int, tuple[int, int]] = {}  # producer id -> (epoch, next sequence)
        fresh = False
        for header in headers:
            pid = header.producer_id
            if pid < 0 or header.base_sequence < 0:
                fresh = True
                continue
            entry = self.producers.get(pid)
            if pid in expected:
                epoch, sequence = expected[pid]
                if header.producer_epoch != epoch or header.base_sequence != sequence:
                    raise OutOfOrderSequenceError(pid, sequence, header.base_sequence)
            elif entry is not None:
                if header.producer_epoch < entry.epoch:
                    raise ProducerFencedError(pid, header.producer_epoch, entry.epoch)
                if header.producer_epoch == entry.epoch:
                    cached = next(
                        (
                            b for b in entry.batches
                            if b.first_sequence == header.base_sequence
                            and b.last_sequence == header.last_sequence
                        ),
                        None,
                    )
                    if cached is not None:
                        duplicates.append(cached)
                        continue
                    if entry.batches:
                        next_sequence = (entry.batches[-1].last_sequence + 1) & SEQUENCE_MASK
                        if header.base_sequence != next_sequence:
                            raise OutOfOrderSequenceError(pid, next_sequence, header.base_sequence)
                elif header.base_sequence != 0:
                    raise OutOfOrderSequenceError(pid, 0, header.base_sequence)
            fresh = True
            expected[pid] = (header.producer_epoch, (header.last_sequence + 1) & SEQUENCE_MASK)
        if duplicates and fresh:
            # part retry, part new: the producer's view of its sequences is broken
            raise OutOfOrderSequenceError(headers_producer(headers), duplicates[-1].last_sequence + 1, -1)
        if duplicates:
            return duplicates[0].base_offset, duplicates[-1].last_offset
        return None

    def update(self, header: BatchHeader, base_offset: int, last_offset: int) -> None:
        """Take an appended batch (with its assigned offsets) into account."""
        if last_offset + 1 > self.applied_offset:
            self.applied_offset = last_offset + 1
        pid = header.producer_id
        if pid < 0:
            return
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(pid, header.producer_epoch)
        elif header.producer_epoch > entry.epoch:
            entry.epoch = header.producer_epoch
            entry.batches.clear()
        if header.is_control:
            return
        if header.base_sequence >= 0:
            entry.batches.append(
                CachedBatch(header.base_sequence, header.last_sequence, base_offset, last_offset)
            )
        if header.is_transactional:
            self.open_transactions.setdefault(pid, base_offset)

    def complete(self, producer_id: int, marker_offset: int, commit: bool) -> None:
        """A transaction marker was appended at ``marker_offset``."""
        first = self.open_transactions.pop(producer_id, None)
        if first is not None and not commit:
            self.aborted.append(Aborted(producer_id, first, marker_offset))
        if marker_offset + 1 > self.applied_offset:
            self.applied_offset = marker_offset + 1

    def next_sequence(self, producer_id: int, epoch: int) -> int | None:
        """The sequence the producer's next batch here must carry at ``epoch``: one past the last
        record appended (0 when nothing of this epoch is); None when the producer has a newer
        epoch here, or when its last batch was aborted (a pipelined commit must not count it:
        ``pipelined_end``)."""
        entry = self.producers.get(producer_id)
        if entry is None or entry.epoch < epoch:
            return 0
        if entry.epoch > epoch:
            return None
        if not entry.batches:
            return 0
        last = entry.batches[-1]
        for aborted in reversed(self.aborted):
            if aborted.producer_id == producer_id and aborted.first_offset <= last.last_offset:
                if last.last_offset <= aborted.last_offset:
                    return None
                break  # the newest abort of this producer ends before the batch
        return (last.last_sequence + 1) & SEQUENCE_MASK

    def fence(self, producer_id: int, epoch: int) -> None:
        """A newer epoch exists for this producer id (InitProducerId bumped it)."""
        entry = self.producers.get(producer_id)
        if entry is not None and epoch > entry.epoch:
            entry.epoch = epoch
            entry.batches.clear()

    # -- reading --------------------------------------------------------------------------------

    def last_stable_offset(self) -> int:
        if not self.open_transactions:
            return self.log.log_end_offset
        return min(self.open_transactions.values())

    def aborted_between(self, start: int, end: int) -> list[Aborted]:
        """Aborted transactions overlapping offsets [start, end)."""
        return [a for a in self.aborted if a.last_offset >= start and a.first_offset < end]

    # -- persistence ----------------------------------------------------------------------------

    def _snapshot_path(self) -> Path:
        return self.log.directory / SNAPSHOT_FILE

    def load(self) -> None:
        """Rebuild from the snapshot (if it is usable) plus the batch headers after it."""
        start = self.log.log_start_offset
        try:
            snapshot = read_json(self._snapshot_path())
            offset = int(snapshot["offset"])
            if start <= offset <= self.log.log_end_offset:
                self._restore(snapshot)
                start = offset
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable %s", self._snapshot_path())
        remove_quietly(self._snapshot_path())  # stale the moment anything is appended
        self.applied_offset = start
        batches = 0
        for header, data in self.log.batches(start):
            if header.next_offset <= start:
                continue
            batches += 1
            self.apply_batch(header, data)
        self.prune()
        if batches:
            log.debug("%s/%s: producer state rebuilt from %d batches", self.log.topic, self.log.partition, batches)

    def _restore(self, snapshot: dict) -> None:  # type: ignore[type-arg]
        for pid_text, value in snapshot.get("producers", {}).items():
            entry = ProducerEntry(int(pid_text), int(value["epoch"]))
            for first, last, base, last_offset in value.get("batches", []):
                entry.batches.append(CachedBatch(first, last, base, last_offset))
            self.producers[entry.producer_id] = entry
        self.open_transactions = {int(k): int(v) for k, v in snapshot.get("open", {}).items()}
        self.aborted = [Aborted(*map(int, item)) for item in snapshot.get("aborted", [])]

    def apply_batch(self, header: BatchHeader, data: memoryview) -> None:
        """Take in a batch already in the log (rebuilding, or a follower copying its leader)."""
        if header.producer_id < 0:
            self.applied_offset = header.next_offset
            return
        self.update(header, header.base_offset, header.last_offset)
        if header.is_control:
            records = decode_records(data, skip_control=False)
            if records:
                self.complete(header.producer_id, header.base_offset, records[0].key == COMMIT_MARKER)

    def snapshot(self) -> None:
        """Write the state at the log end (at a clean close)."""
        atomic_write_json(
            self._snapshot_path(),
            {
                "offset": self.log.log_end_offset,
                "producers": {
                    str(pid): {
                        "epoch": e.epoch,
                        "batches": [[b.first_sequence, b.last_sequence, b.base_offset, b.last_offset] for b in e.batches],
                    }
                    for pid, e in self.producers.items()
                },
                "open": {str(pid): first for pid, first in self.open_transactions.items()},
                "aborted": [[a.producer_id, a.first_offset, a.last_offset] for a in self.aborted],
            },
        )

    def prune(self) -> None:
        start = self.log.log_start_offset
        self.aborted = [a for a in self.aborted if a.last_offset >= start]


def headers_producer(headers: Iterable[BatchHeader]) -> int:
    for header in headers:
        if header.producer_id >= 0:
            return header.producer_id
    return -1
