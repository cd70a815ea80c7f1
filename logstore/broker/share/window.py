"""One share-partition's in-flight window: per-record state kept in numpy arrays.

The window covers offsets ``start_offset`` (inclusive; every record before it is done) to
``end_offset`` (exclusive; no record from there on was ever fetched: they are Available with
no delivery). Each record in it has:

- ``state``: AVAILABLE, ACQUIRED (by ``owner`` until ``deadline_ms``), ACKNOWLEDGED or ARCHIVED,
- ``count``: how many times it was delivered (acquired),
- ``after_ms``: an Available record is not handed out before this time (delayed release),
- ``since_ms``: when it was first delivered (the oldest unacknowledged age),
- ``dirty``: True when its durable state (state, count, after_ms) changed since the last write
  (``state_writer.py`` writes the dirty records as one delta and clears the column).

Records are addressed by index ``offset - start_offset``; every operation is a numpy slice or
mask, never a Python loop over records. Lock expiry is a timer, not a scan per call:
``next_expiry_ms`` is at most the earliest lock deadline (an acquisition lowers it; renewing or
acknowledging leaves it early, which only costs one scan), and ``expired`` looks at the
records only once that time has come, then sets it to the earliest deadline still running. ``advance`` moves ``start_offset`` past the leading
records that are done and drops them. The durable form (runs of equal state) is in
``state_log.py``.

Not thread-safe: the share coordinator calls it on the event loop thread only.
"""

from __future__ import annotations

import numpy as np

AVAILABLE = 0
ACQUIRED = 1
ACKNOWLEDGED = 2
ARCHIVED = 3
STATE_NAMES = ("available", "acquired", "acknowledged", "archived")

#: A run of records with equal state, count and available-after time (the durable form).
RUN_DTYPE = np.dtype([("first", "<i8"), ("last", "<i8"), ("after_ms", "<i8"),
                      ("count", "<u4"), ("state", "u1")])

#: ``next_expiry_ms`` when no lock is running.
NEVER_MS = 1 << 62
_NO_INDICES = np.empty(0, np.int64)

_FIELDS = (("state", np.uint8), ("count", np.uint32), ("after_ms", np.int64),
           ("deadline_ms", np.int64), ("owner", np.int32), ("since_ms", np.int64), ("dirty", np.bool_))


class InFlightWindow:
    __slots__ = ("start_offset", "_n", "_head", "state", "count", "after_ms", "deadline_ms",
                 "owner", "since_ms", "dirty", "_buffers", "next_expiry_ms")

    def __init__(self, start_offset: int) -> None:
        self.start_offset = start_offset
        #: No lock runs out before this (the expiry timer; see the module doc).
        self.next_expiry_ms = NEVER_MS
        self._n = 0
        self._head = 0
        self._buffers: dict[str, np.ndarray] = {name: np.zeros(64, dtype) for name, dtype in _FIELDS}
        self._views()

    def _views(self) -> None:
        lo, hi = self._head, self._head + self._n
        b = self._buffers
        self.state = b["state"][lo:hi]
        self.count = b["count"][lo:hi]
        self.after_ms = b["after_ms"][lo:hi]
        self.deadline_ms = b["deadline_ms"][lo:hi]
        self.owner = b["owner"][lo:hi]
        self.since_ms = b["since_ms"][lo:hi]
        self.dirty = b["dirty"][lo:hi]

    @property
    def end_offset(self) -> int:
        return self.start_offset + self._n

    def __len__(self) -> int:
        return self._n

    def extend(self, end_offset: int) -> None:
        """Take records up to ``end_offset`` (exclusive) into the window, Available, undelivered."""
        grow = end_offset - self.end_offset
        if grow <= 0:
            return
        capacity = len(self._buffers["state"])
        if self._head + self._n + grow > capacity:
            size = max(64, 1 << int(self._n + grow).bit_length())
            for name, dtype in _FIELDS:
                fresh = np.zeros(size, dtype)
                fresh[:self._n] = self._buffers[name][self._head:self._head + self._n]
                self._buffers[name] = fresh
            self._head = 0
        lo = self._head + self._n
        for name, _ in _FIELDS:
            self._buffers[name][lo:lo + grow] = 0
        self._n += grow
        self._views()

    def advance(self) -> int:
        """Drop the leading records that are done (Acknowledged or Archived); the new start."""
        if self._n:
            pending = self.state < ACKNOWLEDGED
            first = int(pending.argmax())  # (stops at the first True: no scan of the whole window)
            done = first if pending[first] else self._n
            if done:
                self._head += done
                self._n -= done
                self.start_offset += done
                self._views()
        return self.start_offset

    def reset(self, start_offset: int) -> None:
        """Forget everything: the window starts empty at ``start_offset``."""
        self.start_offset = start_offset
        self._head = 0
        self._n = 0
        self._views()

    def skip_to(self, offset: int) -> None:
        """Records below ``offset`` are gone from the log (retention): drop them."""
        if offset <= self.start_offset:
            return
        if offset >= self.end_offset:
            self.reset(offset)
            return
        drop = offset - self.start_offset
        self._head += drop
        self._n -= drop
        self.start_offset = offset
        self._views()

    # -- questions ----------------------------------------------------------------------------

    def index(self, offset: int) -> int:
        return offset - self.start_offset

    def handable(self, now_ms: int) -> np.ndarray:
        """Indices of the records that may be acquired now."""
        available = np.flatnonzero(self.state == AVAILABLE)  # (few, mostly: the rest is acquired or done)
        return available[self.after_ms[available] <= np.int64(now_ms)]

    def expired(self, now_ms: int) -> np.ndarray:
        """Indices of acquired records whose lock has run out (the caller makes them
        Available or Archived); no scan before ``next_expiry_ms``."""
        if now_ms < self.next_expiry_ms:
            return _NO_INDICES
        acquired = self.state == ACQUIRED
        due = self.deadline_ms <= np.int64(now_ms)
        running = acquired & ~due
        self.next_expiry_ms = int(self.deadline_ms[running].min()) if running.any() else NEVER_MS
        return np.flatnonzero(acquired & due)

    def next_deadline_ms(self, now_ms: int) -> int | None:
        """The earliest moment after ``now_ms`` something changes by itself (a lock expiry or a
        delay ending); None when nothing will."""
        times = []
        acquired = self.state == ACQUIRED
        if acquired.any():
            times.append(int(self.deadline_ms[acquired].min()))
        later = self.after_ms[(self.state == AVAILABLE) & (self.after_ms > np.int64(now_ms))]
        if len(later):
            times.append(int(later.min()))
        return min(times) if times else None

    def dirty_indices(self) -> np.ndarray:
        """Indices of the records whose durable state changed since the last write."""
        return np.flatnonzero(self.dirty)

    def counts(self) -> np.ndarray:
        """Records per state (indexed by state)."""
        return np.bincount(self.state, minlength=4)

    # -- changes ------------------------------------------------------------------------------

    def acquire(self, indices: np.ndarray, owner: int, now_ms: int, lock_ms: int) -> None:
        """``indices`` sorted and unique (consecutive ones, the usual case, go as one slice)."""
        where: np.ndarray | slice = indices
        if len(indices) and int(indices[-1]) - int(indices[0]) + 1 == len(indices):
            where = slice(int(indices[0]), int(indices[-1]) + 1)
        self.state[where] = ACQUIRED
        self.count[where] += 1
        self.owner[where] = owner
        self.deadline_ms[where] = now_ms + lock_ms
        self.next_expiry_ms = min(self.next_expiry_ms, now_ms + lock_ms)
        self.dirty[where] = True
        since = self.since_ms[where]
        first = since == 0
        if isinstance(where, slice):
            since[first] = now_ms  # (a view of the column)
        else:
            self.since_ms[indices[first]] = now_ms

    def set_state(self, indices: np.ndarray | slice, state: int, after_ms: int | np.ndarray = 0) -> None:
        self.state[indices] = state
        self.after_ms[indices] = after_ms
        self.deadline_ms[indices] = 0
        self.owner[indices] = -1
        self.dirty[indices] = True

    def apply_runs(self, runs: np.ndarray) -> None:
        """Set state, count and available-after time from durable runs (the window is extended
        to cover them; runs below the start are ignored)."""
        if not len(runs):
            return
        self.extend(int(runs["last"].max()) + 1)
        lo = np.maximum(runs["first"] - self.start_offset, 0)
        hi = runs["last"] - self.start_offset + 1
        keep = hi > lo
        lo, hi, runs = lo[keep], hi[keep], runs[keep]
        lengths = hi - lo
        if not len(lengths):
            return
        index = np.repeat(lo - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        self.state[index] = np.repeat(runs["state"], lengths)
        self.count[index] = np.repeat(runs["count"], lengths)
        self.after_ms[index] = np.repeat(runs["after_ms"], lengths)

    # -- the durable form ---------------------------------------------------------------------

    def runs(self, indices: np.ndarray | None = None) -> np.ndarray:
        """Runs of equal (state, count, after_ms) over ``indices`` (sorted; default: the whole
        window) — consecutive offsets only."""
        if indices is None:
            indices = np.arange(self._n)
        if not len(indices):
            return np.empty(0, RUN_DTYPE)
        state, count, after = self.state[indices], self.count[indices], self.after_ms[indices]
        # (slice comparisons, not np.diff: each np.diff costs a few us of Python per tick)
        change = indices[1:] != indices[:-1] + 1
        change |= state[1:] != state[:-1]
        change |= count[1:] != count[:-1]
        change |= after[1:] != after[:-1]
        starts, ends = _run_bounds(change)
        runs = np.empty(len(starts), RUN_DTYPE)
        runs["first"] = indices[starts] + self.start_offset
        runs["last"] = indices[ends] + self.start_offset
        runs["state"] = state[starts]
        runs["count"] = count[starts]
        runs["after_ms"] = after[starts]
        return runs


def ranges(offsets: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(firsts, lasts, counts) of the runs of consecutive ``offsets`` with equal ``counts``."""
    if not len(offsets):
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.int32)
    change = offsets[1:] != offsets[:-1] + 1
    change |= counts[1:] != counts[:-1]
    starts, ends = _run_bounds(change)
    return (offsets[starts].astype(np.int64), offsets[ends].astype(np.int64),
            counts[starts].astype(np.int32))


def _run_bounds(change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) indices of the runs of ``len(change) + 1`` items where ``change[i]`` says
    item i + 1 starts a new run."""
    breaks = np.flatnonzero(change)
    starts = np.empty(len(breaks) + 1, np.int64)
    starts[0] = 0
    starts[1:] = breaks + 1
    ends = np.empty(len(breaks) + 1, np.int64)
    ends[:-1] = breaks
    ends[-1] = len(change)
    return starts, ends
