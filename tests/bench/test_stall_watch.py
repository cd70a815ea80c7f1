"""The stall watchdog of ``bench/latency_trace.py --watch``: it notes a process that cannot run
Python, and an event loop whose turn overruns, with the stack that did it."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from bench.stall_watch import StallWatch, summary


def test_a_thread_holding_the_gil_is_a_stall_not_a_wait_for_a_core() -> None:
    events: dict[str, list[Any]] = {}
    watch = StallWatch(events, threshold_ms=20)
    try:
        time.sleep(0.01)
        values = [random.random() for _ in range(1_000_000)]
        started = time.monotonic()
        while time.monotonic() - started < 0.25:
            sorted(values)  # C code holding the GIL for tens of ms at a time
        time.sleep(0.01)
    finally:
        watch.stop()
    stalls = [info for info in watch.infos if "late_ms" in info]
    assert stalls and events["stall"]
    worst = max(stalls, key=lambda info: info["late_ms"])
    assert worst["late_ms"] > 20
    assert worst["late_ms"] - worst["runqueue_ms"] > 10  # the GIL, not the box
    lines = summary("test", watch.infos, 0, time.time_ns())
    assert "stalls" in lines[0]


def test_an_overrunning_loop_turn_keeps_the_loop_threads_stack() -> None:
    events: dict[str, list[Any]] = {}

    async def main() -> StallWatch:
        watch = StallWatch(events, threshold_ms=20, loop=asyncio.get_running_loop())
        await asyncio.sleep(0.02)  # a few heartbeats
        time.sleep(0.1)  # blocks the loop (lets the GIL go: the watchdog sees it)
        await asyncio.sleep(0.02)  # the loop turns again: the stall is measured
        watch.stop()
        return watch

    watch = asyncio.run(main())
    loops = [info for info in watch.infos if "loop_ms" in info]
    assert len(loops) == 1 and events["loop_stall"]
    assert 90 <= loops[0]["loop_ms"] < 1000
    assert any("time.sleep(0.1)" in stack for stack in loops[0]["stacks"].values())
