"""The three delivery guarantees, each proven against a real broker by a copier process
(``programs/copier.py``) that is SIGKILLed mid-stream several times, restarted, and finally left
to finish; then every input record is counted in the sink:

- at-most-once (commit, then copy): no record twice; some may be missing;
- at-least-once (copy, then commit): no record missing; some may be there twice;
- exactly-once (copy and commit in one transaction, read back with read_committed): every
  record exactly once.

The copier is a static group member, so each restart takes the partitions over at once. Kill
moments are random (seeded per mode, printed on failure): after 1-8 progress lines plus up to
30 ms (about one iteration).
"""

from __future__ import annotations

import collections
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from logstore.client import Admin, Consumer, Producer
from tests.broker_fixture import ROOT, BrokerProcess

RECORDS = 1200
PARTITIONS = 3
KILLS = 4
PROGRESS_TIMEOUT_S = 30.0
FINISH_TIMEOUT_S = 90.0


def start_copier(server: str, mode: str, group: str, *, pump_lines: bool = True,
                 ) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    """The copier, and a queue of its stdout lines (None at the end) unless ``pump_lines`` is
    False (then the caller reads its output with ``communicate``)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.client.programs.copier", server, mode, "input", "sink",
         group, "--partitions", str(PARTITIONS)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.strip())
        lines.put(None)

    if pump_lines:
        threading.Thread(target=pump, daemon=True).start()
    return process, lines


def kill_after_progress(process: subprocess.Popen[str], lines: queue.Queue[str | None],
                        progress_lines: int, delay_s: float) -> bool:
    """SIGKILL once the copier printed ``progress_lines`` lines with records copied; True if
    it was still running (a kill mid-stream)."""
    seen = 0
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    while seen < progress_lines and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        if line != "copied 0":
            seen += 1
    time.sleep(delay_s)
    running = process.poll() is None
    process.kill()
    process.wait(10)
    return running and seen == progress_lines


def read_to_end(server: str, topic: str, isolation_level: str) -> list[tuple[int, bytes]]:
    """(partition, value) of every record of ``topic`` up to its current end (read_committed:
    its last stable offset), in offset order per partition."""
    values: list[tuple[int, bytes]] = []
    with Consumer(server, auto_offset_reset="earliest", isolation_level=isolation_level,
                  fetch_max_wait_ms=100) as consumer:
        consumer.assign(topic)
        ends = consumer.end_offsets()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            consumer.position(tp) < end for tp, end in ends.items()
        ):
            values += [(r.partition, r.value) for r in consumer.poll(timeout=0.5)
                       if r.value is not None]
    return values


def copy_with_kills(
    broker: BrokerProcess, mode: str
) -> tuple[int, list[bytes], list[tuple[int, bytes]]]:
    """(kills survived, input values, sink records as a read_committed reader sees them)."""
    server = broker.address
    with Admin(server) as admin:
        admin.create_topic("input", PARTITIONS)
        admin.create_topic("sink", PARTITIONS)
    expected = [b"record-%05d" % i for i in range(RECORDS)]
    with Producer(server) as producer:
        for value in expected:
            producer.send("input", value, key=value)
    rng = random.Random(f"{mode}-kills")
    kills = 0
    for _ in range(KILLS):
        process, lines = start_copier(server, mode, f"copier-{mode}")
        if kill_after_progress(process, lines, rng.randint(1, 8), rng.uniform(0, 0.03)):
            kills += 1
    process, _ = start_copier(server, mode, f"copier-{mode}", pump_lines=False)
    try:
        _, stderr = process.communicate(timeout=FINISH_TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    return kills, expected, read_to_end(server, "sink", "read_committed")


def describe(mode: str, kills: int, expected: list[bytes], sink: list[bytes]) -> str:
    counts = collections.Counter(sink)
    missing = sum(1 for value in expected if value not in counts)
    twice = sum(1 for n in counts.values() if n > 1)
    return (f"{mode}: {kills} kills, {len(expected)} input records, {len(sink)} in the sink, "
            f"{missing} missing, {twice} more than once")


@pytest.mark.parametrize("mode", ["at-most-once", "at-least-once", "exactly-once"])
def test_a_copier_killed_mid_stream_keeps_its_guarantee(
    broker: BrokerProcess, mode: str, record_property: Callable[[str, object], None]
) -> None:
    kills, expected, records = copy_with_kills(broker, mode)
    sink = [value for _, value in records]
    summary = describe(mode, kills, expected, sink)
    if mode == "exactly-once":  # what the kills left behind, hidden by read_committed
        everything = read_to_end(broker.address, "sink", "read_uncommitted")
        summary += f"; {len(everything) - len(sink)} aborted copies not shown"
    record_property("guarantee", summary)
    print(summary)
    counts = collections.Counter(sink)
    assert kills == KILLS, summary
    assert set(counts) <= set(expected), summary
    if mode == "at-most-once":
        assert max(counts.values(), default=1) == 1, summary
    elif mode == "at-least-once":
        assert set(counts) == set(expected), summary
    else:
        assert sorted(sink) == expected, summary
        for partition in range(PARTITIONS):  # and each partition's order is kept
            values = [value for p, value in records if p == partition]
            assert values == sorted(values), summary
