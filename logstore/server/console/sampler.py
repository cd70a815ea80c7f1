"""Rates and lag over time: one sample per second of what the console's charts show.

Every ``interval_s`` the sampler copies the per-topic totals the service counts (records and
bytes in by Produce, out by Fetch and Subscribe; ``Metrics.topic_totals``) and each consumer
group's total lag (sum over its committed partitions of log end - committed offset). It keeps
the last ``keep`` samples, so a page opened now shows the last two minutes at once and its live
stream adds a point a second. Rates are differences of consecutive samples over their interval.

In the restaurant: the sampler is the manager glancing at the order rail once a second — how
many tickets the waiters hung (in), how many the cooks took (out), and how far behind each
kitchen team is (lag).

Threading: a task on the broker's event loop; read from the same loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from logstore.broker import Broker
from logstore.errors import LogstoreError
from logstore.server.metrics import Metrics

log = logging.getLogger(__name__)

#: Groups whose lag history is kept; more are sampled on their page only.
MAX_TRACKED_GROUPS = 1000


@dataclass
class Sample:
    time_s: float
    #: topic -> (records in, bytes in, records out, bytes out), totals since start
    topics: dict[str, tuple[int, ...]]
    #: group -> total lag
    lags: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Rates:
    records_in: float = 0.0
    bytes_in: float = 0.0
    records_out: float = 0.0
    bytes_out: float = 0.0


class Sampler:
    def __init__(
        self, broker: Broker, metrics: Metrics, *, interval_s: float = 1.0, keep: int = 120,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        self.metrics = metrics
        self.interval_s = interval_s
        self.clock = clock
        self.samples: deque[Sample] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None
        #: Woken after every sample (live streams wait on it).
        self.tick = asyncio.Condition()

    def start(self) -> None:
        if self._task is None:
            self.sample()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.sample()
            except Exception:  # a sample must never stop the sampler
                log.exception("console sample failed")
            async with self.tick:
                self.tick.notify_all()

    def sample(self) -> Sample:
        topics = {name: tuple(totals) for name, totals in self.metrics.topic_totals.items()}
        lags: dict[str, int] = {}
        if not self.broker.closing:
            for name, _, _ in self.broker.list_groups()[:MAX_TRACKED_GROUPS]:
                lags[name] = self.group_lag(name)
        sample = Sample(self.clock(), topics, lags)
        self.samples.append(sample)
        return sample

    def group_lag(self, group_id: str) -> int:
        try:
            infos = self.broker.fetch_offsets(group_id)
        except LogstoreError:
            return 0
        return sum(info.lag for info in infos if info.error is None and info.lag > 0)

    # -- reading ------------------------------------------------------------------------------------

    @staticmethod
    def _rates(before: Sample, after: Sample, topic: str | None) -> Rates:
        elapsed = after.time_s - before.time_s
        if elapsed <= 0:
            return Rates()
        names = [topic] if topic is not None else list(after.topics)
        sums = [0, 0, 0, 0]
        for name in names:
            now = after.topics.get(name)
            if now is None:
                continue
            then = before.topics.get(name, (0, 0, 0, 0))
            for index in range(4):
                sums[index] += max(now[index] - then[index], 0)
        return Rates(*(value / elapsed for value in sums))

    def rates(self, topic: str | None = None) -> Rates:
        """The latest rates of ``topic`` (None: every topic)."""
        if len(self.samples) < 2:
            return Rates()
        return self._rates(self.samples[-2], self.samples[-1], topic)

    def rate_history(self, topic: str | None = None) -> list[tuple[float, float, float]]:
        """[(time_s, records in/s, records out/s)] over the kept samples."""
        items = list(self.samples)
        result = []
        for before, after in zip(items, items[1:], strict=False):
            rates = self._rates(before, after, topic)
            result.append((round(after.time_s, 3), round(rates.records_in, 1), round(rates.records_out, 1)))
        return result

    def lag_history(self, group_id: str) -> list[tuple[float, int]]:
        """[(time_s, total lag)] of a group over the kept samples."""
        return [(round(s.time_s, 3), s.lags[group_id]) for s in self.samples if group_id in s.lags]
