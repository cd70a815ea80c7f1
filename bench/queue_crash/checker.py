"""The queue crash test's checker: reads the workers' histories, the run's fault log and the
dead-letter topic, and counts anomalies (each should be 0):

- ``lost``: a task no worker sent an accept (or reject) for and not in the dead-letter topic;
- ``accepted_twice``: a task whose accept the broker applied (answered OK) more than once;
- ``poison_accepted``: a poison task the broker reported accepted;
- ``unjustified_redelivery``: a task delivered again while its previous delivery still held
  its lock: no release was sent for it, no broker crash came between, and the lock (``lock_ms``
  from that delivery) had not run out;
- ``count_not_increasing``: two deliveries of a task with the same delivery count, or one
  asked for after another was answered yet with a count not above it. The broker makes each
  acquisition (its count) durable before answering, so counts order a task's deliveries as the
  broker handed them out, across crashes too; the workers' clocks only bound each acquisition
  (between when its fetch was asked, ``t``, and when its poll returned, ``got``): a long poll
  asked early may return after a delivery asked later, and an answer prefetched before a broker
  crash may be polled after the restarted broker handed the task to another worker;
- ``not_done``: records the broker still had available or acquired at the end.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.queue_crash.worker import POISON_AT, POISON_EVERY

ANOMALIES = ("lost", "accepted_twice", "poison_accepted", "unjustified_redelivery",
             "count_not_increasing", "not_done")
#: Clocks of the worker and broker processes are the same wall clock; allow scheduling slack.
SLACK_S = 0.05


@dataclass
class Report:
    anomalies: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ANOMALIES, 0))
    figures: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def flag(self, name: str, example: str) -> None:
        self.anomalies[name] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{name}: {example}")


def read_events(paths: Iterable[Path]) -> list[dict[str, Any]]:
    events = []
    for path in paths:
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the line a SIGKILL cut
    events.sort(key=lambda e: e["t"])
    return events


def _answered(delivery: dict[str, Any]) -> float:
    """When the poll that delivered it returned (histories without "got": when it was asked)."""
    return float(delivery.get("got", delivery["t"]))


def check(tasks: dict[tuple[int, int], int], events: list[dict[str, Any]], dead: set[tuple[int, int]],
          crashes: list[float], lock_ms: int, remaining: int) -> Report:
    """``tasks``: (partition, offset) -> task number; ``dead``: (partition, offset) found in the
    dead-letter topic; ``crashes``: wall times of broker kills; ``remaining``: records the
    broker had available or acquired at the end."""
    report = Report()
    sent: dict[tuple[int, int], set[str]] = defaultdict(set)
    accepted: dict[tuple[int, int], int] = defaultdict(int)
    deliveries: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    releases: dict[tuple[int, int], list[float]] = defaultdict(list)
    for event in events:
        key = (event["p"], event["o"])
        if event["ev"] == "deliver":
            deliveries[key].append(event)
        elif event["ev"] == "sent":
            sent[key].add(event["kind"])
            if event["kind"] == "release":
                releases[key].append(event["t"])
        elif event["ev"] == "ok" and event["kind"] == "accept":
            accepted[key] += 1
    for key, number in tasks.items():
        poison = number % POISON_EVERY == POISON_AT
        if not ({"accept", "reject"} & sent[key]) and key not in dead:
            report.flag("lost", f"task {number} at {key}")
        if accepted[key] > 1:
            report.flag("accepted_twice", f"task {number} at {key}: {accepted[key]} accepts applied")
        if poison and accepted[key]:
            report.flag("poison_accepted", f"task {number} at {key}")
        # in the order the broker handed them out (by delivery count); each acquisition happened
        # between its "t" and its "got"
        ordered = sorted(deliveries[key], key=lambda d: (d["dc"], _answered(d)))
        for i, earlier in enumerate(ordered):
            for later in ordered[i + 1:]:
                if later["dc"] == earlier["dc"] or earlier["t"] > _answered(later) + SLACK_S:
                    report.flag("count_not_increasing",
                                f"task {number}: {later['dc']} to {later['w']} answered at "
                                f"{_answered(later):.3f}, {earlier['dc']} to {earlier['w']} asked at "
                                f"{earlier['t']:.3f}")
        previous: dict[str, Any] | None = None
        for delivery in ordered:
            if previous is not None:
                start, now = previous["t"], _answered(delivery)
                released = any(start - SLACK_S <= t <= now + SLACK_S for t in releases[key])
                crashed = any(start - SLACK_S <= t <= now + SLACK_S for t in crashes)
                expired = now + SLACK_S >= start + lock_ms / 1000
                if not (released or crashed or expired):
                    report.flag("unjustified_redelivery",
                                f"task {number}: delivered to {previous['w']} at {start:.3f}, to "
                                f"{delivery['w']} at {now:.3f}")
            previous = delivery
    if remaining:
        report.flag("not_done", f"{remaining} records still available or acquired")
    report.figures = {
        "tasks": len(tasks),
        "deliveries": sum(len(d) for d in deliveries.values()),
        "redelivered_tasks": sum(1 for d in deliveries.values() if len(d) > 1),
        "accepted": sum(1 for k in tasks if accepted[k]),
        "accepted_unconfirmed": sum(1 for k in tasks if not accepted[k] and "accept" in sent[k]),
        "dead_lettered": len(dead & set(tasks)),
        "released": sum(len(r) for r in releases.values()),
    }
    return report
