"""The producer's record accumulator: one open batch per partition, and the queue of closed ones.

``Accumulator.append`` (in ``append_path``) is the whole of ``Producer.send``: it appends the
record to its partition's open batch (plain Python lists) and returns a ``RecordFuture`` of two
slots. A keyless bytes value into an open batch takes a fast path without the lock (see
Thread-safety): one dict lookup (``sticky_open``, the open batch of the topic's sticky
partition; or the given partition's), the append, the size check, and the last future handed
out reused when its caller dropped it (``spare``); other records take the lock. A batch closes when it reaches ``batch_bytes`` (``append`` closes it), or in the sender's ``drain``: at
once when no produce request is in flight (Nagle's rule, so an idle producer
sends a record immediately and batches only while an answer is awaited) or when the one request
in flight is late (``hold``: twice the recent round trip old), else once it is
``linger_ms`` old (or ``linger_when_idle``: always ``linger_ms``, as Kafka does); closed batches wait in ``ready``, in order, for the sender thread, which
encodes them (``ProducerBatch.encode``) and sends them. ``send_batch`` puts batches it encoded
itself on the same queue (``enqueue``), behind the partition's open batch, so per-partition order
is the order of the calls.

Per record the batch stores only the value; keys, headers and explicit timestamps are kept
sparsely (index -> item) because most records have none, and records without a timestamp take the
time their batch was opened (at most ``linger_ms`` before they were sent, while the sender keeps
up). The batch resolves every record's future at once: a future is (batch, index), and its offset
is ``base_offset + index``.

Thread-safety: ``lock`` guards every field of the accumulator and of the open batches, together
with ``gate``, a one-token list: ``append``'s fast path takes only the token (``list.pop`` is
atomic) to append to an open batch, and whatever else changes the open batches, ``sticky_open``
or the topics holds both (``exclusive``); the fast path never waits for the lock while it holds
the token. The partitioner is only used under the lock, except ``Partitioner.for_key`` (a cache
of pure results).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from logstore.client.append_path import AppendPath, Exclusive
from logstore.client.batch import EMPTY, MIXED, ProducerBatch, RecordFuture
from logstore.client.bulk import SEQUENCE_MASK
from logstore.client.hold import Hold
from logstore.client.partitioner import Partitioner
from logstore.errors import LogstoreError, UnknownPartitionError

__all__ = ["Accumulator", "EMPTY", "MIXED", "ProducerBatch", "RecordFuture", "TopicState"]



class TopicState:
    """What the accumulator knows of one topic: partition count, open batches, sticky partition."""

    __slots__ = ("count", "open", "sticky")

    def __init__(self, count: int, sticky: int) -> None:
        self.count = count
        self.open: list[ProducerBatch | None] = [None] * count
        self.sticky = sticky


class Accumulator(AppendPath):
    """Open batches per partition and the ready queue; ``append`` is ``Producer.send``.

    ``describe(topic) -> partition count`` reads metadata (an RPC); it is called outside the lock.
    """

    __slots__ = (
        "lock",
        "batch_bytes",
        "admit",
        "linger",
        "linger_when_idle",
        "hold",
        "buffer_bytes",
        "partitioner",
        "topics",
        "sticky_open",
        "spare",
        "gate",
        "exclusive",
        "opened",
        "ready",
        "ready_bytes",
        "incomplete",
        "idle",
        "wakeup",
        "space",
        "closed",
        "sequences",
        "send_direct",
        "direct_due",
        "_describe",
    )

    def __init__(
        self,
        *,
        batch_bytes: int,
        linger_ms: float,
        buffer_bytes: int,
        describe: Callable[[str], int],
        partitioner: Partitioner | None = None,
        linger_when_idle: bool = False,
    ) -> None:
        self.lock = threading.Lock()
        self.batch_bytes = batch_bytes
        #: Called by ``append`` for every record it cannot put in an open batch the fast way,
        #: so for the first record of every batch; it raises to refuse the record. A
        #: transactional producer's check that a transaction is open: its batches all close
        #: when the transaction ends, so a record outside one never finds an open batch.
        self.admit: Callable[[], None] | None = None
        self.linger = linger_ms / 1000.0
        self.linger_when_idle = linger_when_idle
        #: Produce requests sent and not yet answered (``request_sent``/``request_done``), and
        #: whether open batches may go while one is (see ``hold``).
        self.hold = Hold()
        self.buffer_bytes = buffer_bytes
        self.partitioner = partitioner or Partitioner()
        self.topics: dict[str, TopicState] = {}
        #: Per topic, the open batch of its sticky partition (if one is open): where ``append``'s
        #: fast path puts keyless records.
        self.sticky_open: dict[str, ProducerBatch] = {}
        #: The future ``append`` returned last (see ``append``).
        self.spare = RecordFuture()
        #: One token (None) while free. ``append``'s fast path takes it with ``list.pop`` (atomic,
        #: ~25 ns against ~90 for the lock) and gives it back; everything else that changes the
        #: open batches, ``sticky_open`` or the topics holds the lock *and* the token
        #: (``exclusive``, ``_shut``), so the fast path and the rest never meet.
        self.gate: list[None] = [None]
        self.exclusive = Exclusive(self)
        #: Open batches, oldest first (a dict as an ordered set).
        self.opened: dict[ProducerBatch, None] = {}
        #: Closed batches waiting for the sender, in the order they must be sent.
        self.ready: deque[ProducerBatch] = deque()
        self.ready_bytes = 0
        #: Batches not yet acknowledged or failed (flush waits for these).
        self.incomplete: dict[ProducerBatch, None] = {}
        #: The sender waits on ``wakeup`` while ``idle``; append sets it only then.
        self.idle = False
        self.wakeup = threading.Event()
        self.space = threading.Condition(self.lock)
        self.closed = False
        #: Idempotent producers: per partition, the sequence the next closed batch will get if
        #: everything queued before it is sent in order (``Sequencer`` has the final word);
        #: None when not idempotent.
        self.sequences: dict[tuple[str, int], int] | None = None
        #: The caller's own send (``Sender.send_direct``): with nothing in flight and the sender
        #: asleep, a record that opens a batch is sent by the thread that called ``send()``, after
        #: its append (``direct_due``), instead of waking the sender thread to do it: one thread
        #: hop less per request at low rates. None: always wake the sender.
        self.send_direct: Callable[[], None] | None = None
        self.direct_due = False
        self._describe = describe

    # -- the send path -------------------------------------------------------------------------

    def _open(self, state: TopicState, topic: str, partition: int) -> ProducerBatch:
        batch = ProducerBatch(topic, partition, time.monotonic())
        state.open[partition] = batch
        if partition == state.sticky:
            self.sticky_open[topic] = batch
        self.opened[batch] = None
        self.incomplete[batch] = None
        if self.idle:
            if self.send_direct is not None and not self.hold.in_flight and not self.linger_when_idle:
                self.direct_due = True  # the caller sends it once appended (``send_direct``)
            else:
                self.idle = False
                self.wakeup.set()
        return batch

    def _close(self, state: TopicState, batch: ProducerBatch, wake: bool = True) -> None:
        """Move an open batch to the ready queue (under the lock); ``wake`` a sleeping sender
        thread for it (not when the caller drains it itself)."""
        state.open[batch.partition] = None
        del self.opened[batch]
        topic = batch.topic
        if self.sticky_open.get(topic) is batch:
            del self.sticky_open[topic]
        if batch.values:
            self.ready.append(batch)
            self.ready_bytes += batch.size
            sequences = self.sequences
            if sequences is not None:
                key = (batch.topic, batch.partition)
                sequences[key] = (sequences.get(key, 0) + len(batch.values)) & SEQUENCE_MASK
        else:
            del self.incomplete[batch]
            batch.complete(-1)
        if state.sticky == batch.partition:
            self._move_sticky(state, topic)
        if wake and self.idle:
            self.idle = False
            self.wakeup.set()

    def _move_sticky(self, state: TopicState, topic: str) -> None:
        """Keyless records move on to the next partition (under the lock)."""
        sticky = state.sticky = self.partitioner.next_sticky(state.count, state.sticky)
        following = state.open[sticky]
        if following is not None:  # keyed records opened a batch there already
            self.sticky_open[topic] = following
        else:
            self.sticky_open.pop(topic, None)

    def _wait_for_space(self) -> None:
        """Block the caller (holding the lock and the gate; both are let go while it waits)
        while too much is queued."""
        while self.ready_bytes > self.buffer_bytes and not self.closed:
            self.gate.append(None)
            try:
                self.space.wait(0.1)
            finally:
                self._shut()

    def reserve(self, topic: str, partition: int, count: int) -> int:
        """The sequence a batch of ``count`` records encoded now for this partition will most
        likely get: the partition's open batch is closed first, so it goes ahead."""
        with self.exclusive:
            state = self.topics[topic]
            current = state.open[partition]
            if current is not None:
                self._close(state, current)
            sequences = self.sequences
            assert sequences is not None
            key = (topic, partition)
            sequence = sequences.get(key, 0)
            sequences[key] = (sequence + count) & SEQUENCE_MASK
            return sequence

    def resequence(self, next_sequences: dict[tuple[str, int], int]) -> None:
        """Predictions from the sequences the sender will use next, plus what is queued."""
        with self.lock:
            sequences = dict(next_sequences)
            for batch in self.ready:
                key = (batch.topic, batch.partition)
                count = batch.count if batch.encoded is not None else len(batch.values)
                sequences[key] = (sequences.get(key, 0) + count) & SEQUENCE_MASK
            self.sequences = sequences

    def enqueue(self, batches: list[ProducerBatch]) -> None:
        """Queue batches encoded by ``send_batch`` behind their partitions' open batches."""
        with self.exclusive:
            for batch in batches:
                state = self.topics[batch.topic]
                current = state.open[batch.partition]
                if current is not None:
                    self._close(state, current)
                self.incomplete[batch] = None
                self.ready.append(batch)
                self.ready_bytes += batch.size
            if self.idle:
                self.idle = False
                self.wakeup.set()
            if self.ready_bytes > self.buffer_bytes:
                self._wait_for_space()

    def requeue(self, batches: list[ProducerBatch]) -> None:
        """Put batches the sender holds for a retry back at the front of the queue, in the
        given order: they go before every newer batch."""
        with self.lock:
            self.ready.extendleft(reversed(batches))
            self.ready_bytes += sum(batch.size for batch in batches)
            if self.idle:
                self.idle = False
                self.wakeup.set()

    def sticky_partitions(self, topic: str, chunks: int) -> list[int]:
        """Partitions for ``chunks`` keyless batches of ``send_batch``: one each, then move on."""
        with self.exclusive:
            state = self.topics[topic]
            out = []
            for _ in range(chunks):
                out.append(state.sticky)
                self._move_sticky(state, topic)
            return out

    # -- metadata ------------------------------------------------------------------------------

    def learn(self, topic: str, partition: int | None = None) -> TopicState:
        """Read ``topic``'s partition count (an RPC, outside the lock) and record it.

        With ``partition`` given, raise ``UnknownPartitionError`` if it is not one of them.
        """
        state = self.grow(topic, self._describe(topic))
        if partition is not None and not 0 <= partition < state.count:
            raise UnknownPartitionError(topic, partition, state.count)
        return state

    def grow(self, topic: str, count: int) -> TopicState:
        """Record that ``topic`` has ``count`` partitions (a count never shrinks)."""
        with self.exclusive:
            state = self.topics.get(topic)
            if state is None:
                state = TopicState(count, self.partitioner.first_sticky(count))
                self.topics[topic] = state
            elif count > state.count:
                state.open.extend([None] * (count - state.count))
                state.count = count
            return state

    # -- the sender's side ---------------------------------------------------------------------

    def drain(
        self, max_bytes: int, force: bool = False,
        room: Callable[[tuple[str, int]], int] | None = None, direct: bool = False,
    ) -> tuple[list[ProducerBatch], float | None]:
        """Close lingered batches (every open one if ``force``, or if no request is in flight
        and not ``linger_when_idle``) and take ready batches up to ``max_bytes`` (at least one,
        unless ``room``, the batches a partition may still take, says 0 for the first). Returns
        them and how long until the next batch lingers enough (None when no batch is open).
        ``direct``: a caller's own send (``send_direct``) takes them, so a sleeping sender thread
        is not woken for what it takes (only for what it leaves).
        """
        now = time.monotonic()
        with self.exclusive:
            linger = self.linger
            force = force or self._idle_link(now)
            for batch in list(self.opened):
                if not force and now - batch.opened < linger:
                    break
                self._close(self.topics[batch.topic], batch, wake=not direct)
            taken: list[ProducerBatch] = []
            total = 0
            ready = self.ready
            if room is not None:
                counts: dict[tuple[str, int], int] = {}
                while ready and (not taken or total + ready[0].size <= max_bytes):
                    key = (ready[0].topic, ready[0].partition)
                    if counts.get(key, 0) >= room(key):
                        break  # the partition has enough unanswered: wait for answers
                    counts[key] = counts.get(key, 0) + 1
                    batch = ready.popleft()
                    taken.append(batch)
                    total += batch.size
            else:
                while ready and (not taken or total + ready[0].size <= max_bytes):
                    batch = ready.popleft()
                    taken.append(batch)
                    total += batch.size
            if taken:
                self.ready_bytes -= total
                self.space.notify_all()
            if direct and ready and self.idle:  # left for the sender thread
                self.idle = False
                self.wakeup.set()
            wait = None
            if self.opened:
                oldest = next(iter(self.opened))
                wait = max(0.0, oldest.opened + linger - now)
                late = None if self.linger_when_idle else self.hold.late_at()
                if late is not None:
                    wait = max(0.0, min(wait, late - now))
            return taken, wait

    def _idle_link(self, now: float) -> bool:
        """Nagle's rule: nothing is in flight, so waiting gains nothing; or the one request in
        flight is late, so waiting for it gains nothing either (under the lock)."""
        return not self.linger_when_idle and self.hold.send_now(now)

    def request_sent(self, size_bytes: int = 0) -> None:
        now = time.monotonic()
        with self.lock:
            self.hold.sent(now, size_bytes)

    def request_done(self) -> None:
        """An answer (or a failure) came: with none left in flight, open batches go now."""
        now = time.monotonic()
        with self.lock:
            self.hold.answered(now)
            if not self.hold.in_flight and self.opened and self.idle and not self.linger_when_idle:
                self.idle = False
                self.wakeup.set()

    def pending(self) -> bool:
        """Anything open or ready (not counting batches already sent)?"""
        with self.lock:
            return bool(self.opened or self.ready)

    def sleep(self, timeout: float | None, urgent: Callable[[], bool] = lambda: False) -> None:
        """The sender waits here for work: until a batch opens or closes, ``wake`` is called, or
        ``timeout``. ``urgent()`` (a flush or stop requested before ``wake``) skips the wait."""
        with self.lock:
            if self.ready:
                return
            self.idle = True
            self.wakeup.clear()
            if urgent() or (self.opened and self._idle_link(time.monotonic())):
                self.idle = False
                return
        self.wakeup.wait(timeout)
        self.idle = False

    def wake(self) -> None:
        with self.lock:
            self.idle = False
            self.wakeup.set()

    def finished(self, batch: ProducerBatch) -> None:
        """A batch was acknowledged or failed: it no longer holds up ``flush``."""
        with self.lock:
            self.incomplete.pop(batch, None)

    def pending_partitions(self) -> set[tuple[str, int]]:
        """The partitions of every batch not yet acknowledged or failed."""
        with self.lock:
            return {(batch.topic, batch.partition) for batch in self.incomplete}

    def snapshot(self) -> list[ProducerBatch]:
        with self.lock:
            return list(self.incomplete)

    def fail_all(self, error: LogstoreError) -> None:
        """Fail everything not yet sent (the producer is closing without flushing)."""
        with self.exclusive:
            batches = list(self.opened) + list(self.ready)
            self.opened.clear()
            self.ready.clear()
            self.ready_bytes = 0
            self.sticky_open.clear()
            for state in self.topics.values():
                state.open = [None] * state.count
            for batch in batches:
                self.incomplete.pop(batch, None)
            self.space.notify_all()
        for batch in batches:
            batch.fail(error)

