"""Transactional vs idempotent produce, and EndTxn, for ``bench client`` (issue 16, item 4).

Both producers use ``send()`` per record (100 B, one partition, ``flush=never`` topics, the
defaults otherwise: ``acks="all"``, idempotent), as the groups bench that first measured the
ratio: the idempotent run sends every record then ``flush()``es once; the transactional one
wraps each ``records_per_transaction`` records in ``begin_transaction()`` ...
``commit_transaction()``. Both have their producer id and the topic's metadata before the clock
starts. A transaction's fixed cost (on a single node one round trip: the end rides behind the
last batch, see ``logstore/client/txn_end.py``; the markers and the coordinator's records) is
what the ratio shows; the goal is >= 0.8x at 10,000 records per transaction, which allows a fixed
cost of 2,500 records' send time; the rows at 100 and 1,000 records have the goal that same fixed
cost gives (N / (N + 2,500)). Each transactional row measures its ratio against idempotent runs
of its own, interleaved with its runs (idempotent, transactional, idempotent, ...; a warm-up
pair first; at 10,000 records at least ``goal_pairs`` pairs, 7 in a full run), median against median: a slow moment of the
shared box then slows both sides, instead of swinging the ratio with one row. ``EndTxn``:
``commit_transaction()`` of 1,000-record transactions timed after an explicit ``flush()``, so it
is the end's round trip alone; goal p50 <= 2 ms.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

from bench.common import Goal, Result

VALUE_BYTES = 100
RECORDS_PER_TRANSACTION = (100, 1_000, 10_000)
GOAL_RECORDS_PER_TRANSACTION = 10_000
RATIO_GOAL = 0.8
END_TXN_GOAL_S = 0.002
END_TXN_RECORDS = 1_000
#: The fixed cost per transaction, in records' send time, that the goal at 10,000 allows.
FIXED_COST_RECORDS = GOAL_RECORDS_PER_TRANSACTION * (1 - RATIO_GOAL) / RATIO_GOAL
IDEMPOTENT_GOAL = 1.5e6  # as the send() row of bench client


def ratio_goal(per_transaction: int) -> float:
    """The ratio to idempotent a transaction of ``per_transaction`` records reaches with the
    fixed cost the 10,000-record goal allows (0.8 there)."""
    return per_transaction / (per_transaction + FIXED_COST_RECORDS)


class TransactionBench:
    def __init__(self, server: str, records: int, repeats: int, end_txn_samples: int,
                 topic: Callable[[], str], delete: Callable[[str], None],
                 goal_pairs: int = 1) -> None:
        self.server = server
        self.records = records
        self.repeats = repeats
        self.goal_pairs = goal_pairs
        self.end_txn_samples = end_txn_samples
        self._topic = topic
        self._delete = delete
        self._value = b"x" * VALUE_BYTES

    def _timed(self, body: Callable[[str], float]) -> list[float]:
        return [self._once(body) for _ in range(self.repeats + 1)][1:]  # the first warms up

    def _once(self, body: Callable[[str], float]) -> float:
        topic = self._topic()
        try:
            return body(topic)
        finally:
            self._delete(topic)

    def _idempotent_body(self, topic: str) -> float:
        from logstore.client import Producer

        count, value = self.records, self._value
        with Producer(self.server) as producer:
            send = producer.send
            # the producer id and the topic's metadata before the clock starts, as the
            # transactional runs have them from init_transactions()
            send(topic, value, partition=0).result()
            start = time.perf_counter()
            for _ in range(count):
                send(topic, value, partition=0)
            producer.flush()
            return time.perf_counter() - start

    def idempotent(self, group: str, name: str) -> Result:
        return Result("client", group, name, "run", self.records, self.records * VALUE_BYTES,
                      self._timed(self._idempotent_body), Goal(min_rate=IDEMPOTENT_GOAL))

    def transactional(self, per_transaction: int) -> Callable[[str, str], Result]:
        def task(group: str, name: str) -> Result:
            from logstore.client import Producer

            count, value = max(self.records, per_transaction), self._value

            def body(topic: str) -> float:
                with Producer(self.server, transactional_id=f"bench-{uuid.uuid4().hex}") as producer:
                    producer.init_transactions()
                    producer.partitions_for(topic)  # the topic's metadata before the clock
                    send = producer.send
                    start = time.perf_counter()
                    for first in range(0, count, per_transaction):
                        producer.begin_transaction()
                        for _ in range(min(per_transaction, count - first)):
                            send(topic, value, partition=0)
                        producer.commit_transaction()
                    return time.perf_counter() - start

            pairs = self.repeats
            if per_transaction == GOAL_RECORDS_PER_TRANSACTION:
                pairs = max(pairs, self.goal_pairs)
            samples, baseline = [], []
            for index in range(pairs + 1):  # the first pair warms up
                idempotent_s = self._once(self._idempotent_body)
                transactional_s = self._once(body)
                if index:
                    baseline.append(idempotent_s)
                    samples.append(transactional_s)
            idempotent_rate = self.records / statistics.median(baseline)
            goal_ratio = ratio_goal(per_transaction)
            goal = Goal(min_rate=goal_ratio * idempotent_rate,
                        label=f">= {goal_ratio:.2g}x idempotent")
            result = Result("client", group, name, "run", count, count * VALUE_BYTES, samples,
                            goal, params={"records_per_transaction": per_transaction,
                                          "idempotent_rate": idempotent_rate, "pairs": pairs})
            ratio = result.records_per_second / idempotent_rate
            result.name += f": {ratio:.2f}x idempotent ({pairs} pairs)"
            result.params["ratio_to_idempotent"] = ratio
            if per_transaction == GOAL_RECORDS_PER_TRANSACTION:  # issue 16's row (bench/scorecard.py)
                result.params["scorecard"] = {"txn-vs-idempotent": ratio}
            return result

        return task

    def end_txn(self, group: str, name: str) -> Result:
        from logstore.client import Producer

        samples: list[float] = []
        topic = self._topic()
        value = self._value
        try:
            with Producer(self.server, transactional_id=f"bench-{uuid.uuid4().hex}") as producer:
                producer.init_transactions()
                for index in range(self.end_txn_samples + 10):  # 10 warm up
                    producer.begin_transaction()
                    for _ in range(END_TXN_RECORDS):
                        producer.send(topic, value, partition=0)
                    producer.flush()
                    start = time.perf_counter()
                    producer.commit_transaction()
                    if index >= 10:
                        samples.append(time.perf_counter() - start)
        finally:
            self._delete(topic)
        result = Result("client", group, name, "call", 1, None, samples,
                        Goal(max_seconds=END_TXN_GOAL_S))
        result.params.update({f"p{q:g}_ms": result.percentile(q) * 1e3 for q in (50, 90, 99)})
        result.params["scorecard"] = {"end-txn-p50-ms": result.params["p50_ms"]}
        result.name += f": p50 {result.median * 1e3:.2f} ms, p99 {result.percentile(99) * 1e3:.2f} ms"
        return result
