"""Who stalls a process: a watchdog thread that wakes every ``period_ms`` and notes each wake-up
later than ``threshold_ms`` (a diagnostic of ``bench/latency_trace.py --watch``).

A late wake-up of the watchdog means nothing in the process could run Python for that long, or
the thread was not scheduled. Each stall notes what tells the two apart:

- ``runqueue_ms``: how long the watchdog thread was *runnable but not running* meanwhile (the
  second field of ``/proc/self/task/<tid>/schedstat``): the box had no core for it (other
  processes), not this process's fault;
- ``steal_ms``: the VM's steal time meanwhile (``/proc/stat``): the host had no core for the VM;
- the rest (late minus both) is the watchdog waiting for the GIL, or the loop blocked: then the
  stack of every other thread at the moment the watchdog got the GIL back is kept (the thread
  holding it a switch interval too long is usually still in the middle of its work).

With ``loop`` set (the broker), it also notes loop stalls: a heartbeat callback runs on the loop
every ``period_ms``; when the last one is older than ``threshold_ms`` the watchdog keeps the loop
thread's stack (the callback that blocks it) once per stall.

Events (``name -> [(key, time_ns)]`` as ``latency_trace`` keeps them): ``stall`` and ``loop_stall``
with key = the stall's length in µs, and ``stall_info``: dicts (kept apart, in ``infos``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import traceback
from typing import Any

USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _schedstat(native_id: int = 0) -> tuple[int, int]:
    """Nanoseconds this thread (or thread ``native_id``) ran, and spent runnable but waiting for
    a core, so far."""
    try:
        task = native_id or threading.get_native_id()
        with open(f"/proc/self/task/{task}/schedstat", encoding="ascii") as f:
            fields = f.read().split()
        return int(fields[0]), int(fields[1])
    except (OSError, IndexError, ValueError):
        return 0, 0


def _runqueue_ns(native_id: int = 0) -> int:
    return _schedstat(native_id)[1]


def _steal_ns() -> int:
    try:
        with open("/proc/stat", encoding="ascii") as file:
            fields = file.readline().split()
        return int(fields[8]) * 1_000_000_000 // USER_HZ
    except (OSError, IndexError, ValueError):
        return 0


def _stacks(skip: int, only: int | None = None) -> dict[str, str]:
    names = {t.ident: t.name for t in threading.enumerate()}
    out = {}
    for ident, frame in sys._current_frames().items():
        if ident == skip or (only is not None and ident != only):
            continue
        lines = traceback.format_stack(frame, limit=12)
        out[names.get(ident, str(ident))] = "".join(lines[-6:])
    return out


class StallWatch:
    def __init__(self, events: dict[str, list[Any]], period_ms: float = 1.0,
                 threshold_ms: float = 10.0, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.events = events
        self.infos: list[dict[str, Any]] = []
        self.period_s = period_ms / 1000
        self.threshold_ns = int(threshold_ms * 1e6)
        self._loop = loop
        self._beat_ns = time.monotonic_ns()
        self._loop_thread = 0
        self._loop_native = 0
        self._stop = threading.Event()
        if loop is not None:
            loop.call_soon_threadsafe(self._beat)
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        self._loop_thread = threading.get_ident()
        self._loop_native = threading.get_native_id()
        self._beat_ns = time.monotonic_ns()
        assert self._loop is not None
        if not self._stop.is_set():
            self._loop.call_later(self.period_s, self._beat)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        me = threading.get_ident()
        period_ns = int(self.period_s * 1e9)
        runqueue, steal = _runqueue_ns(), _steal_ns()
        before = time.monotonic_ns()
        loop_stall: dict[str, Any] | None = None
        # the loop thread's run time and run-queue wait at the last heartbeat seen
        loop_ran, loop_runqueue = 0, 0
        last_beat = 0
        while not self._stop.wait(self.period_s):
            now = time.monotonic_ns()
            late = now - before - period_ns
            runqueue_now, steal_now = _runqueue_ns(), _steal_ns()
            if late > self.threshold_ns:
                wall = time.time_ns()
                self.events.setdefault("stall", []).append((late // 1000, wall - late))
                self.infos.append({
                    "at_ns": wall - late, "late_ms": late / 1e6,
                    "runqueue_ms": (runqueue_now - runqueue) / 1e6,
                    "steal_ms": (steal_now - steal) / 1e6, "stacks": _stacks(me),
                })
            if self._loop is not None and self._loop_thread:
                beat = self._beat_ns
                age = now - beat
                if beat != last_beat and loop_stall is None:
                    last_beat = beat
                    loop_ran, loop_runqueue = _schedstat(self._loop_native)
                if age > self.threshold_ns + period_ns and loop_stall is None:
                    wall = time.time_ns()
                    loop_stall = {"at_ns": wall - age, "beat": beat, "loop_ms": age / 1e6,
                                  "stacks": _stacks(me, self._loop_thread)}
                elif loop_stall is not None and beat != loop_stall["beat"]:
                    # the loop turned again: the stall lasted until that beat
                    loop_stall["loop_ms"] = (beat - loop_stall.pop("beat")) / 1e6
                    ran, runqueue_ns = _schedstat(self._loop_native)
                    loop_stall["runqueue_ms"] = (runqueue_ns - loop_runqueue) / 1e6
                    loop_stall["ran_ms"] = (ran - loop_ran) / 1e6
                    self.events.setdefault("loop_stall", []).append(
                        (int(loop_stall["loop_ms"] * 1000), loop_stall["at_ns"]))
                    self.infos.append(loop_stall)
                    loop_stall = None
                    last_beat = 0
            # from this wake-up, not from the end of this turn: the /proc reads above let the
            # GIL go, so a thread holding it then would stall the watchdog unseen
            runqueue, steal, before = runqueue_now, steal_now, now


def summary(who: str, infos: list[dict[str, Any]], start_ns: int, end_ns: int) -> list[str]:
    """Lines for the stalls of one process between two wall-clock times."""
    stalls = [i for i in infos if start_ns <= i["at_ns"] <= end_ns and "late_ms" in i]
    loops = [i for i in infos if start_ns <= i["at_ns"] <= end_ns and "loop_ms" in i]
    if not stalls and not loops:
        return [f"  {who}: no stall"]
    lines = []
    if stalls:
        late = sum(i["late_ms"] for i in stalls)
        queue = sum(min(i["runqueue_ms"], i["late_ms"]) for i in stalls)
        steal = sum(i["steal_ms"] for i in stalls)
        worst = max(stalls, key=lambda i: i["late_ms"])
        lines.append(f"  {who}: {len(stalls)} stalls, {late:.0f} ms in all (longest"
                     f" {worst['late_ms']:.1f} ms); of it waiting for a core {queue:.0f} ms, VM"
                     f" steal {steal:.0f} ms (box-wide)")
        for info in sorted(stalls, key=lambda i: -i["late_ms"])[:3]:
            if info["late_ms"] - info["runqueue_ms"] - info["steal_ms"] > 5:
                lines.append(f"    {info['late_ms']:.1f} ms, {info['runqueue_ms']:.1f} waiting for"
                             " a core; threads then:")
                for name, stack in info["stacks"].items():
                    last = stack.strip().splitlines()[-2:]
                    lines.append(f"      {name}: {' | '.join(s.strip() for s in last)}")
    if loops:
        worst = max(loops, key=lambda i: i["loop_ms"])
        total = sum(i["loop_ms"] for i in loops)
        queue = sum(i["runqueue_ms"] for i in loops)
        lines.append(f"  {who} loop: {len(loops)} turns over the threshold, {total:.0f} ms in all,"
                     f" of it the loop thread waiting for a core {queue:.0f} ms (from the"
                     f" heartbeat before); longest {worst['loop_ms']:.1f} ms"
                     f" ({worst['runqueue_ms']:.1f} waiting for a core, {worst['ran_ms']:.1f}"
                     " running); its stack then:")
        for stack in worst["stacks"].values():
            lines.extend("      " + s for s in stack.strip().splitlines()[-6:])
        ran = sum(i["ran_ms"] for i in loops)
        lines.append(f"    the loop thread ran {ran:.1f} ms of the {total:.0f} (the rest it was"
                     " blocked: waiting for the GIL or a lock held by a thread off its core)")
    return lines
