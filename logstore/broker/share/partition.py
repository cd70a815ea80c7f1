"""A share-partition: one group's in-flight window over one partition log.

``acquire`` hands out Available records (redeliveries first, in offset order, then records not
fetched yet), reading the log a batch at a time: the answer is whole batches plus the ranges of
offsets acquired. New records are taken a whole batch at a time while they fit in
``max_records``; a first batch larger than that is taken in part (the rest stays unfetched).
Offsets with no record (compacted away, transaction markers) are acknowledged as they are met.

``acknowledge`` checks that every record of a range is held by the member (acquired by it,
lock not expired) before changing any; ``expire`` returns records whose lock ran out. A record
whose delivery count reached ``max_deliveries`` is archived instead of made available, and
reported for dead-lettering.

Every change marks its records in the window's ``dirty`` column; the caller's state writer
writes them (one delta per share-partition per event-loop tick).
Not thread-safe: event loop thread only (the share coordinator's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from logstore.broker.share.config import ShareGroupConfig
from logstore.broker.share.types import AckKind, AckRange, AcquiredPartition
from logstore.broker.share.window import (
    ACKNOWLEDGED,
    ACQUIRED,
    ARCHIVED,
    AVAILABLE,
    STATE_NAMES,
    InFlightWindow,
    ranges,
)
from logstore.errors import RecordNotAcquiredError
from logstore.records import iter_spans, read_header
from logstore.records.layout import CONTROL_FLAG
from logstore.storage import PartitionLog

#: Bytes asked of the log per read while acquiring.
READ_CHUNK_BYTES = 1 << 20


@dataclass
class Archived:
    """Records to dead-letter: their offsets, delivery counts and the last error."""

    offsets: np.ndarray
    counts: np.ndarray
    error: str


@dataclass
class Change:
    """What one call changed: whether any durable state did (the records changed are marked in
    the window's ``dirty`` column), and the records archived."""

    changed: bool = False
    #: Records left the Acquired state (acknowledged, released, expired): a member waiting
    #: for records may get some now (released ones, or room under ``max_acquired_records``).
    freed: bool = False
    archived: list[Archived] = field(default_factory=list)


class SharePartition:
    __slots__ = ("group_id", "topic", "partition", "window", "generation", "sequence",
                 "redeliveries", "dead_lettered", "lock_expiries", "acks")

    def __init__(self, group_id: str, topic: str, partition: int, window: InFlightWindow,
                 generation: int = 0, sequence: int = 0) -> None:
        self.group_id = group_id
        self.topic = topic
        self.partition = partition
        self.window = window
        #: Snapshot generation and next delta sequence in ``__share_group_state``.
        self.generation = generation
        self.sequence = sequence
        self.redeliveries = 0
        self.dead_lettered = 0
        self.lock_expiries = 0
        self.acks = dict.fromkeys(AckKind, 0)

    @property
    def acquired(self) -> int:
        return int(np.count_nonzero(self.window.state == ACQUIRED))

    # -- acquiring ----------------------------------------------------------------------------

    def acquire(self, partition_log: PartitionLog, owner: int, now_ms: int, lock_ms: int,
                config: ShareGroupConfig, max_records: int, max_bytes: int,
                change: Change, end_offset: int | None = None) -> AcquiredPartition:
        """``end_offset``: records from there on are not handed out (a cluster's high
        watermark; default the log end)."""
        window = self.window
        end = partition_log.log_end_offset if end_offset is None else end_offset
        out = AcquiredPartition(self.topic, self.partition)
        if window.start_offset < partition_log.log_start_offset:
            window.skip_to(partition_log.log_start_offset)  # retention took them
        limit = min(max_records, config.max_acquired_records - self.acquired)
        if limit <= 0 or max_bytes <= 0:
            return out
        taken: list[np.ndarray] = []  # window indices
        budget = [max_bytes]
        candidates = window.handable(now_ms)
        if end_offset is not None and end_offset < window.end_offset:
            # a cluster's copy behind the window (another broker built it): records it does not
            # hold yet wait (they are not "gone", as past the log end after a recovery cut)
            candidates = candidates[candidates < np.int64(end_offset - window.start_offset)]
        candidates = candidates[:limit]
        if len(candidates):
            taken.append(self._take_window(partition_log, candidates, out, budget, change))
        room = limit - sum(len(t) for t in taken)
        if room > 0 and budget[0] > 0 and window.end_offset < end:
            taken.append(self._take_new(partition_log, end, room, not any(len(t) for t in taken), out, budget,
                                        change))
        indices = np.concatenate(taken) if taken else np.empty(0, np.int64)
        if not len(indices):
            return out
        indices.sort()
        window.acquire(indices, owner, now_ms, lock_ms)
        counts = window.count[indices]
        self.redeliveries += int(np.count_nonzero(counts > 1))
        change.changed = True
        out.first_offsets, out.last_offsets, out.delivery_counts = ranges(indices + window.start_offset, counts)
        return out

    def _take_window(self, partition_log: PartitionLog, candidates: np.ndarray,
                     out: AcquiredPartition, budget: list[int], change: Change) -> np.ndarray:
        """Acquire-able records inside the window: read the batches that hold them."""
        window = self.window
        offsets = candidates + window.start_offset
        chosen: list[np.ndarray] = []
        gone: list[np.ndarray] = []
        i = 0
        while i < len(offsets) and budget[0] > 0:
            offset = int(offsets[i])
            before = i
            result = partition_log.read(offset, min(READ_CHUNK_BYTES, budget[0]))
            data = result.data
            if not len(data):
                gone.append(candidates[i:])  # past the log end (a recovery cut it)
                break
            for position, base, following, length, attributes in iter_spans(data):
                if following <= offset:
                    continue
                j = int(np.searchsorted(offsets, np.int64(following)))
                below = int(np.searchsorted(offsets, np.int64(base)))
                if below > i:
                    gone.append(candidates[i:below])  # offsets with no batch (compacted)
                if j > below:
                    if attributes & CONTROL_FLAG:
                        gone.append(candidates[below:j])
                    else:
                        chosen.append(candidates[below:j])
                        out.records.append(data[position:position + length])  # (one batch a piece)
                        budget[0] -= length
                i = j
                if i >= len(offsets) or budget[0] <= 0:
                    break
                offset = int(offsets[i])
            if i == before:  # no batch holds it
                gone.append(candidates[i:i + 1])
                i += 1
        if gone:
            done = np.concatenate(gone)
            window.set_state(done, ACKNOWLEDGED)
            change.changed = True
        return np.concatenate(chosen) if chosen else np.empty(0, np.int64)

    def _take_new(self, partition_log: PartitionLog, end: int, room: int, must: bool,
                  out: AcquiredPartition, budget: list[int], change: Change) -> np.ndarray:
        """Records past the window's end (below ``end``): whole batches while they fit, each
        run of adjacent batches sent as one piece of the log."""
        window = self.window
        first_new = window.end_offset
        taken_until = first_new
        skipped: list[tuple[int, int]] = []
        # (the redeliveries' pieces are one batch each: a batch sent already is not sent twice)
        sent_base = read_header(out.records[-1]).base_offset if out.records else -1
        while taken_until < end and room > 0 and budget[0] > 0:
            data = partition_log.read(taken_until, min(READ_CHUNK_BYTES, budget[0])).data
            if not len(data):
                break
            progressed = False
            piece_start = piece_end = -1  # the run of adjacent batches taken from ``data``
            for position, base, following, length, attributes in iter_spans(data):
                if following <= taken_until:
                    continue
                if base >= end:  # past the readable end (a cluster's high watermark)
                    room = 0
                    break
                lo = max(base, taken_until)
                if lo > taken_until:
                    skipped.append((taken_until, lo))  # offsets with no batch (compacted)
                if attributes & CONTROL_FLAG:
                    skipped.append((lo, following))
                    taken_until = following
                    progressed = True
                    continue
                if following - lo > room and not must:
                    room = 0
                    break
                upto = min(following, lo + room, end)
                if base != sent_base:
                    if position != piece_end:
                        if piece_end >= 0:
                            out.records.append(data[piece_start:piece_end])
                        piece_start = position
                    piece_end = position + length
                    budget[0] -= length
                    sent_base = base
                room -= upto - lo
                must = False
                taken_until = upto
                progressed = True
                if room <= 0 or budget[0] <= 0:
                    break
            if piece_end >= 0:
                out.records.append(data[piece_start:piece_end])
            if not progressed:
                break
        if taken_until == first_new:
            return np.empty(0, np.int64)
        window.extend(taken_until)
        fresh_indices = np.arange(first_new, taken_until, dtype=np.int64) - window.start_offset
        if skipped:
            done = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in skipped]) - window.start_offset
            window.set_state(done, ACKNOWLEDGED)
            change.changed = True
            fresh_indices = np.setdiff1d(fresh_indices, done, assume_unique=True)
        return fresh_indices

    # -- acknowledging --------------------------------------------------------------------------

    def check(self, ack: AckRange, owner: int, now_ms: int) -> RecordNotAcquiredError | None:
        """Why the member does not hold every record of ``ack`` (None when it does)."""
        window = self.window
        lo, hi = ack.first_offset - window.start_offset, ack.last_offset - window.start_offset + 1
        state = "held"
        bad = ack.first_offset
        if ack.last_offset >= window.end_offset:
            bad, state = max(ack.first_offset, window.end_offset), "never delivered"
        elif lo < 0:
            bad, state = ack.first_offset, "done"
        else:
            held = ((window.state[lo:hi] == ACQUIRED) & (window.owner[lo:hi] == owner)
                    & (window.deadline_ms[lo:hi] > np.int64(now_ms)))
            if held.all():
                return None
            index = lo + int(np.argmin(held))
            bad = window.start_offset + index
            current = int(window.state[index])
            if current == ACQUIRED and int(window.owner[index]) != owner:
                state = "acquired by another member"
            elif current == AVAILABLE and int(window.count[index]) > 0:
                state = "available again (its lock expired, it was released, or the partition's leader changed)"
            elif current == AVAILABLE:
                state = "never delivered"
            else:
                state = STATE_NAMES[current]
        return RecordNotAcquiredError(
            f"group {self.group_id!r}: record {self.topic}/{self.partition}@{bad} is not held by "
            f"this member ({state}); acknowledge only records you hold, before their lock expires",
            group_id=self.group_id, topic=self.topic, partition=self.partition, offset=bad, state=state,
        )

    def apply(self, ack: AckRange, now_ms: int, lock_ms: int, config: ShareGroupConfig,
              change: Change) -> None:
        """Apply a checked acknowledgement."""
        window = self.window
        lo, hi = ack.first_offset - window.start_offset, ack.last_offset - window.start_offset + 1
        indices = np.arange(lo, hi, dtype=np.int64)
        self.acks[ack.kind] += hi - lo
        if ack.kind is AckKind.ACCEPT:
            window.set_state(slice(lo, hi), ACKNOWLEDGED)
        elif ack.kind is AckKind.RENEW:
            window.deadline_ms[lo:hi] = now_ms + lock_ms
            return  # a lock is not durable state: no delta
        elif ack.kind is AckKind.REJECT:
            self._archive(indices, ack.error or "rejected", change)
        else:
            counts = window.count[lo:hi]
            if ack.delay_ms is not None:
                after: int | np.ndarray = now_ms + ack.delay_ms if ack.delay_ms else 0
            else:
                after = self._backoff(counts, config, now_ms)
            over = counts >= config.max_deliveries
            window.set_state(indices, AVAILABLE, after)
            if over.any():
                self._archive(indices[over], ack.error or "released", change)
            change.freed = True  # (a delayed one too: waiters then set their timer to its end)
        change.changed = True
        if not change.freed and self.acquired + (hi - lo) >= config.max_acquired_records:
            change.freed = True  # the window was full: room again

    @staticmethod
    def _backoff(counts: np.ndarray, config: ShareGroupConfig, now_ms: int) -> np.ndarray:
        if not config.backoff_ms:
            return np.zeros(len(counts), np.int64)
        steps = np.asarray(config.backoff_ms, np.int64)
        delays = steps[np.clip(counts.astype(np.int64) - 1, 0, len(steps) - 1)]
        return np.where(delays > 0, now_ms + delays, 0)

    def _archive(self, indices: np.ndarray, error: str, change: Change) -> None:
        window = self.window
        window.set_state(indices, ARCHIVED)
        change.changed = True
        change.archived.append(Archived(indices + window.start_offset, window.count[indices].copy(), error))
        self.dead_lettered += len(indices)

    def expire(self, now_ms: int, config: ShareGroupConfig, change: Change) -> int:
        """Locks that ran out: Available again, or archived after ``max_deliveries``."""
        window = self.window
        expired = window.expired(now_ms)
        if not len(expired):
            return 0
        self.lock_expiries += len(expired)
        over = window.count[expired] >= config.max_deliveries
        window.set_state(expired[~over], AVAILABLE)
        change.changed = change.freed = True
        if over.any():
            self._archive(expired[over], "lock expired", change)
        return len(expired)

    def release_member(self, owner: int, change: Change) -> int:
        """A member left: its records are Available now (their delivery counts kept)."""
        window = self.window
        held = np.flatnonzero((window.state == ACQUIRED) & (window.owner == owner))
        if len(held):
            window.set_state(held, AVAILABLE)
            change.changed = change.freed = True
        return len(held)
