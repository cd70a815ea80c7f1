"""When the producer's open batches may go while a request is in flight: Nagle's rule, with a late answer let through.

Nagle's rule (``accumulator``): with no produce request in flight an open batch goes at once;
with one in flight it waits for the answer (or ``linger_ms``). An answer that is *late* — the
broker, gRPC or the thread reading answers was not scheduled, a collection paused a process —
holds every record sent meanwhile for the whole stall, and that is the producer's share of the
latency tail. So, with exactly one request in flight, the open batches also go once that request
is older than ``LATE_FACTOR`` times the recent round trip (an exponential average of the last
answers' round trips, at least ``LATE_MIN_S``): a second request then overtakes the stall, and at
most two are ever in flight because of this rule. Only a small request (at most
``LATE_MAX_REQUEST_BYTES``) can be late: a large one takes longer because it is large, and under
full load letting batches overtake it sent more, smaller requests (``send()`` per record lost
~20 % of its throughput, measured side by side). An answer on time (the usual case) still
gathers everything sent meanwhile into the next request, so the request count, and the broker's
cost per record, stay those of Nagle's rule under steady load.

In the restaurant model: a waiter with an order on its way to the kitchen keeps gathering new
orders; only when the trip takes twice as long as usual does a second waiter walk the gathered
orders over.

Thread-safety: none of its own; the accumulator calls it under its ``lock``.
"""

from __future__ import annotations

from collections import deque

#: A request is late once it is this many times the recent round trip old.
LATE_FACTOR = 2.0
#: ... and at least this old (a round trip on loopback is ~0.3-1 ms).
LATE_MIN_S = 0.0005
#: A request larger than this is never late (see above); at 10 k rec/s of 100 B a request is ~2 KiB.
LATE_MAX_REQUEST_BYTES = 64 << 10
#: The round trip assumed before the first answer.
FIRST_ROUND_TRIP_S = 0.001
#: Weight of the newest round trip in the average.
ROUND_TRIP_WEIGHT = 0.125


class Hold:
    __slots__ = ("sent_at", "small", "round_trip_s")

    def __init__(self) -> None:
        #: Monotonic send times of the requests in flight, oldest first.
        self.sent_at: deque[float] = deque()
        #: Whether the oldest request in flight was small enough to count as late.
        self.small: deque[bool] = deque()
        self.round_trip_s = FIRST_ROUND_TRIP_S

    @property
    def in_flight(self) -> int:
        return len(self.sent_at)

    def sent(self, now: float, size_bytes: int = 0) -> None:
        self.sent_at.append(now)
        self.small.append(size_bytes <= LATE_MAX_REQUEST_BYTES)

    def answered(self, now: float) -> None:
        """An answer (or a failure) came: the oldest request is done (answers come in order on a
        stream; across a cluster's streams the oldest is close enough for an average)."""
        if self.sent_at:
            took = now - self.sent_at.popleft()
            self.small.popleft()
            self.round_trip_s += ROUND_TRIP_WEIGHT * (took - self.round_trip_s)

    def late_at(self) -> float | None:
        """When the one request in flight counts as late (None: none, more than one, or a large
        one)."""
        if len(self.sent_at) != 1 or not self.small[0]:
            return None
        return self.sent_at[0] + max(LATE_MIN_S, LATE_FACTOR * self.round_trip_s)

    def send_now(self, now: float) -> bool:
        """May open batches go now: nothing in flight, or the one request in flight is late?"""
        if not self.sent_at:
            return True
        late = self.late_at()
        return late is not None and now >= late
