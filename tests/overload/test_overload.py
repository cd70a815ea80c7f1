"""Overload, at test size (``python -m bench overload`` is the heavier run of the same workloads).

- Producers faster than the disk (``flush=always``, several connections each keeping more bytes of
  1 MiB batches in flight than the backpressure budgets let in) meet backpressure: slower acks
  (counted in ``logstore_backpressure_waits_total``) or RESOURCE_EXHAUSTED / LIMIT_EXCEEDED, with
  nothing of a refused call appended — and the broker's memory stays under a bound that follows
  what the producers keep in flight, and does not grow the longer they keep it up.
- 1,000 idle gRPC connections and slow consumers (Subscribe streams that stopped reading) do not
  stop a normal producer / consumer pair from making progress, and cost bounded memory.

Memory is read from ``/proc/PID/status`` (``VmRSS``; the heap part is ``RssAnon``) every 20 ms, and
the peaks are printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.overload import (
    FLOOD_OVERHEAD_BYTES,
    Broker,
    MemorySampler,
    create_topic,
    flood,
    idle_connections,
    memory,
    pair,
    payload_topic_fill,
    slow_consumers,
)
from tests.server.helpers import connect, describe

MIB = 1 << 20
PRODUCERS = 6
IN_FLIGHT = 8  # calls per producer
BATCH_BYTES = 1 * MIB
OFFERED = PRODUCERS * IN_FLIGHT * BATCH_BYTES  # 48 MiB in flight, against budgets of 2-8 MiB
QUEUED_CAP = 8 * MIB
FLOOD_LIMITS = {
    "max_queued_request_bytes": QUEUED_CAP,
    "max_request_bytes": 2 * MIB,
    "max_inflight_bytes_per_connection": 2 * MIB,
    "max_unflushed_bytes_per_partition": 4 * MIB,
    "max_unflushed_bytes": 8 * MIB,
    "backpressure_timeout_ms": 3000,
}
#: The broker may grow by at most this much over its idle size while flooded: the cap on queued
#: request bytes plus the overhead the README states, whatever the producers keep in flight.
FLOOD_BOUND = QUEUED_CAP + FLOOD_OVERHEAD_BYTES
#: The second half of the flood may peak at most this much above the first half.
GROWTH_ALLOWANCE = 64 * MIB
IDLE_CONNECTIONS = 1000
SLOW_CONSUMERS = 8
#: ... and at most this much with the crowd (about 100 KiB per idle connection, one message per
#: slow consumer).
CROWD_BOUND = 256 * MIB


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[Broker]]:
    started: list[Broker] = []
    yield started
    for broker in started:
        broker.stop()


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\noverload: {text}")


def test_producers_faster_than_the_disk_meet_backpressure_and_memory_stays_bounded(brokers, tmp_path, capsys):
    broker = Broker(FLOOD_LIMITS, tmp_path)
    brokers.append(broker)
    create_topic(broker.address, "flood", 4, flush="always")
    baseline = memory(broker.pid)

    halves = []
    for _ in range(2):  # the same flood twice: memory must not grow with time
        with MemorySampler(broker.pid) as sampler:
            outcome = flood(broker.address, "flood", partitions=4, producers=PRODUCERS, in_flight=IN_FLIGHT,
                            batch_bytes=BATCH_BYTES, seconds=2)
        halves.append((outcome, sampler.peak))
    (first, first_peak), (outcome, peak) = halves
    for partition, offsets in first.acked_offsets.items():
        outcome.acked_offsets.setdefault(partition, []).extend(offsets)
    for refusal, count in first.refused.items():
        outcome.refused[refusal] += count
    outcome.acked_batches += first.acked_batches

    waits = broker.metric("logstore_backpressure_waits_total")
    assert broker.process.poll() is None, broker.log()
    assert outcome.acked_batches > 0
    limit_names = {"max_inflight_bytes_per_connection", "max_unflushed_bytes_per_partition", "max_unflushed_bytes",
                   "max_queued_request_bytes"}
    for refusal in outcome.refused:  # anything refused is refused by a budget, as documented
        code, reason, limit_name = refusal.split("/", 2)
        assert (code, reason) == ("RESOURCE_EXHAUSTED", "LIMIT_EXCEEDED") and limit_name in limit_names, refusal
    assert sum(waits.values()) + sum(outcome.refused.values()) > 0, "no backpressure at all"
    with connect(broker.address) as stub:  # every record in the log was acknowledged
        for p in describe(stub, "flood").partitions:
            assert sorted(outcome.acked_offsets.get(p.partition, [])) == list(range(0, p.log_end_offset, 16))
    top = max(first_peak["VmRSS"], peak["VmRSS"])
    _report(capsys, f"flood of {PRODUCERS} producers x {IN_FLIGHT} x {BATCH_BYTES // MIB} MiB: "
                    f"{outcome.acked_batches} acked, refused {dict(outcome.refused)}, waits {waits}; "
                    f"broker RSS {baseline['VmRSS'] / MIB:.0f} -> peak {first_peak['VmRSS'] / MIB:.0f} then "
                    f"{peak['VmRSS'] / MIB:.0f} MiB (heap peak {max(first_peak['RssAnon'], peak['RssAnon']) / MIB:.0f} "
                    f"MiB); bound {baseline['VmRSS'] / MIB:.0f} + {FLOOD_BOUND / MIB:.0f} MiB")
    assert top - baseline["VmRSS"] <= FLOOD_BOUND, (top / MIB, baseline["VmRSS"] / MIB, FLOOD_BOUND / MIB)
    assert peak["VmRSS"] <= first_peak["VmRSS"] + GROWTH_ALLOWANCE, (first_peak, peak)


def test_idle_connections_and_slow_consumers_do_not_starve_a_producer_and_consumer(brokers, tmp_path, capsys):
    broker = Broker({"max_subscriptions_per_connection": 4}, tmp_path)
    brokers.append(broker)
    create_topic(broker.address, "backlog", 1)
    create_topic(broker.address, "pair", 1)
    payload_topic_fill(broker.address, "backlog", 16 * MIB)  # more than a slow consumer takes
    baseline = memory(broker.pid)

    with MemorySampler(broker.pid) as sampler:
        with idle_connections(broker.address, IDLE_CONNECTIONS):
            sockets = broker.sockets()
            with_idle = memory(broker.pid)
            with slow_consumers(broker.address, "backlog", SLOW_CONSUMERS) as stalled:
                outcome = pair(broker.address, "pair", batches=100, records_per_batch=20, timeout=30)

    assert broker.process.poll() is None, broker.log()
    assert sockets >= IDLE_CONNECTIONS  # every idle channel is a connection of its own
    assert stalled == SLOW_CONSUMERS
    assert outcome.consumed == outcome.records == 2000, outcome
    assert max(outcome.produce_latencies) < 5.0, max(outcome.produce_latencies)
    grown = sampler.peak["VmRSS"] - baseline["VmRSS"]
    _report(capsys, f"{IDLE_CONNECTIONS} idle connections + {SLOW_CONSUMERS} slow consumers: pair moved "
                    f"{outcome.consumed} records in {outcome.seconds:.2f} s; broker RSS {baseline['VmRSS'] / MIB:.0f} "
                    f"-> {with_idle['VmRSS'] / MIB:.0f} MiB with the idle connections -> peak "
                    f"{sampler.peak['VmRSS'] / MIB:.0f} MiB, bound +{CROWD_BOUND / MIB:.0f} MiB")
    assert grown <= CROWD_BOUND, grown / MIB
