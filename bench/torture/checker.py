"""The history checker: reads the torture run's history and counts anomalies, Jepsen-style.

``python -m bench.torture.checker HISTORY...`` prints every count and exits 1 if any anomaly was
found. The history is JSON lines, one event per line, from every worker and the nemesis (see
``workload`` and ``nemesis``); each event has ``t`` (``time.monotonic()``, one clock for every
process of the machine) and ``type``:

- ``send``: a producer's record: ``process``, ``topic``, ``partition``, ``value``, and either the
  acknowledged ``offset`` or an ``error``; a transactional one carries ``txn``.
- ``txn``: how a transaction ended: ``process``, ``txn``, ``outcome`` (``commit``, ``abort``, or
  ``unknown`` when the commit's answer was lost).
- ``poll``: what one ``poll()`` returned for one partition: ``member``, ``group``,
  ``isolation``, ``tenure`` (which assignment of that partition to that member this is),
  ``since``, ``topic``, ``partition``, ``offsets``, ``values``.
- ``cut``: the nemesis damaged a partition's unsynced tail between a kill and the restart (a
  simulated power loss): every record from ``offset`` on was removed.
- ``meta`` (the run's options, among them ``flush``), and informational events (``kill``,
  ``pause``, ``start``, ``assign``, ``revoke``, ``lost``, ``commit``, ``error``) that the checker
  does not need.

**Slots.** A record lives at a *slot* ``(topic, partition, offset, generation)``. Without
simulated power loss the generation is always 0. A ``cut`` at offset O makes every offset >= O a
new slot: an event at time t sees offset o in generation = the number of cuts of its partition
before t with O <= o. A slot is *live* if no later cut removed it. Reads and acknowledgements of
the same offset in different generations are different records, never an inconsistency. A
consumer keeps a fetch in flight, so a poll's records were served some time between ``since``
(when the member's previous poll started) and ``t``; when a cut lies in between, a record gets
the highest generation in that range that its value does not contradict.

**Anomalies** (each must be 0):

- *lost write*: an acknowledged, live record (for a transactional one: of a committed
  transaction) that no member of a consumer group reading its topic ever returned, although a
  member of that group returned a higher offset of the partition after the write was
  acknowledged (after the commit). Counted once per group that missed it. With ``flush=always``
  an acknowledged record that a cut removed is a lost write too (the nemesis only cuts what was
  never acknowledged, so this would be a storage or nemesis bug).
- *duplicate*: one value at two live slots (read or acknowledged there).
- *inconsistent offset*: one slot read or acknowledged with two different values.
- *non-monotonic poll*: within one poll, offsets of a partition not strictly increasing; or a
  poll that starts below the end of the previous poll of the same member, partition and tenure.
- *skipped offset*: within one tenure, an offset between two consecutive polls (or inside one
  poll) that exists: some read or acknowledgement saw that slot. For a read_committed member
  only slots holding a non-transactional or committed value count (aborted records and
  transaction markers are skipped by design). Pairs of polls with a cut of the partition
  between them are not compared: the member may have been reset to the log start.
- *aborted read*: a read_committed member returned a value of an aborted transaction.
- *phantom read*: a value no producer ever sent (garbage served as a record).
- *replica divergence* (cluster run only, added by ``bench.torture.convergence`` after the
  run, not from the history): a partition's replicas end at different offsets, or hold
  different bytes below the high watermark.

**Figures** (not anomalies): *unread* (acknowledged, live, never read by some group, with no
higher offset read after it: the run ended first), *cut acknowledged* with ``flush=never`` (an
acknowledged write a simulated power loss removed: what ``flush=never`` allows), *reads cut*
(a member read a record a later power loss removed: it was never acknowledged), records sent,
acknowledged and read.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.paths import input_file

TopicPartition = tuple[str, int]
Slot = tuple[str, int, int, int]  # topic, partition, offset, generation

ANOMALIES = (
    "lost_writes",
    "duplicates",
    "inconsistent_offsets",
    "non_monotonic_polls",
    "skipped_offsets",
    "aborted_reads",
    "phantom_reads",
    "replica_divergence",
)
FIGURES = (
    "sent",
    "acknowledged",
    "send_errors",
    "read",
    "polls",
    "unread",
    "cut_acknowledged",
    "reads_cut",
    "transactions_committed",
    "transactions_aborted",
    "transactions_unknown",
)
OUTCOME_NAMES = {"commit": "committed", "abort": "aborted", "unknown": "unknown"}
#: Examples kept per anomaly for the report.
EXAMPLES = 5


@dataclass
class Report:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ANOMALIES + FIGURES, 0))
    examples: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, example: Any = None, amount: int = 1) -> None:
        self.counts[name] += amount
        if example is not None and len(self.examples[name]) < EXAMPLES:
            self.examples[name].append(example)

    @property
    def anomalies(self) -> int:
        return sum(self.counts[name] for name in ANOMALIES)

    def to_json(self) -> dict[str, Any]:
        return {
            "anomalies": {name: self.counts[name] for name in ANOMALIES},
            "figures": {name: self.counts[name] for name in FIGURES},
            "examples": {name: list(examples) for name, examples in self.examples.items()},
        }

    def text(self) -> str:
        width = max(len(name) for name in ANOMALIES + FIGURES)
        lines = ["anomalies:"]
        lines += [f"  {name.ljust(width)}  {self.counts[name]:>10,}" for name in ANOMALIES]
        lines += ["figures:"]
        lines += [f"  {name.ljust(width)}  {self.counts[name]:>10,}" for name in FIGURES]
        for name in ANOMALIES:
            for example in self.examples.get(name, []):
                lines.append(f"  e.g. {name}: {json.dumps(example)}")
        return "\n".join(lines)


class Cuts:
    """The nemesis's cuts per partition, to give every event's offset its generation."""

    def __init__(self, events: Iterable[dict[str, Any]]) -> None:
        self._by_tp: dict[TopicPartition, list[tuple[float, int]]] = defaultdict(list)
        for event in events:
            self._by_tp[(event["topic"], event["partition"])].append(
                (event["t"], event["offset"]))
        for cuts in self._by_tp.values():
            cuts.sort()

    def generation(self, tp: TopicPartition, offset: int, t: float) -> int:
        cuts = self._by_tp.get(tp)
        if not cuts:
            return 0
        return sum(1 for when, start in cuts if when < t and start <= offset)

    def final(self, tp: TopicPartition, offset: int) -> int:
        """The generation of ``offset`` after every cut: a slot of a lower one was removed."""
        cuts = self._by_tp.get(tp)
        if not cuts:
            return 0
        return sum(1 for _, start in cuts if start <= offset)

    def between(self, tp: TopicPartition, start: float, end: float) -> bool:
        cuts = self._by_tp.get(tp) or []
        return any(start < when <= end for when, _ in cuts)


@dataclass
class _Ack:
    slot: Slot
    value: str
    t: float  # when it counts as acknowledged (for a transactional value: its commit)
    txn: tuple[str, int] | None


def read_history(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every event of every file, in time order. A torn last line (a worker killed while
    writing it) is skipped; a torn line anywhere else raises."""
    events: list[dict[str, Any]] = []
    for path in paths:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                if number != len(lines):
                    raise
    events.sort(key=lambda event: event["t"])
    return events


class _Multimap:
    """key -> values, storing the (common) single value without a set."""

    def __init__(self) -> None:
        self.first: dict[Any, Any] = {}
        self.more: dict[Any, set[Any]] = {}

    def add(self, key: Any, value: Any) -> None:
        found = self.first.setdefault(key, value)
        if found != value:
            self.more.setdefault(key, {found}).add(value)

    def get(self, key: Any) -> set[Any]:
        if key in self.more:
            return self.more[key]
        return {self.first[key]} if key in self.first else set()


def check(events: Sequence[dict[str, Any]]) -> Report:
    """Count every anomaly and figure of a history (events in time order)."""
    report = Report()
    meta = next((e for e in events if e["type"] == "meta"), {})
    flush = meta.get("flush", "always")
    cuts = Cuts(e for e in events if e["type"] == "cut")

    # -- transactions ----------------------------------------------------------------------------
    outcomes: dict[tuple[str, int], tuple[str, float]] = {}
    for event in events:
        if event["type"] == "txn":
            outcomes[(event["process"], event["txn"])] = (event["outcome"], event["t"])
            report.add(f"transactions_{OUTCOME_NAMES[event['outcome']]}")

    def committed(txn: tuple[str, int] | None) -> bool:
        return txn is None or outcomes.get(txn, ("unknown", 0.0))[0] == "commit"

    # -- sends -----------------------------------------------------------------------------------
    acks: list[_Ack] = []
    sent_max: dict[str, int] = {}
    for event in events:
        if event["type"] != "send":
            continue
        report.add("sent")
        process, value = event["process"], event["value"]
        counter = _counter(value, process)
        if counter is not None:
            sent_max[process] = max(sent_max.get(process, -1), counter)
        if event.get("offset") is None:
            report.add("send_errors")
            continue
        report.add("acknowledged")
        tp = (event["topic"], event["partition"])
        offset = event["offset"]
        slot = (tp[0], tp[1], offset, cuts.generation(tp, offset, event["t"]))
        txn = (process, event["txn"]) if "txn" in event else None
        acks.append(_Ack(slot, value, event["t"], txn))
    # Every transactional send, answered or not: a record whose answer was lost (the broker was
    # killed after appending it) is still in the log, and still belongs to its transaction.
    txn_of_value = {event["value"]: (event["process"], event["txn"])
                    for event in events if event["type"] == "send" and "txn" in event}

    # -- reads -----------------------------------------------------------------------------------
    polls = [e for e in events if e["type"] == "poll"]
    slot_values = _Multimap()  # slot -> values read or acknowledged there
    value_slots = _Multimap()  # value -> slots
    read_by_group: dict[str, set[str]] = defaultdict(set)
    #: Per (group, partition): (time, offset) of every read, for the lost-write rule.
    group_reads: dict[tuple[str, TopicPartition], list[tuple[float, int]]] = defaultdict(list)
    group_topics: dict[str, set[str]] = defaultdict(set)
    group_isolation: dict[str, str] = {}
    for ack in acks:
        slot_values.add(ack.slot, ack.value)
        value_slots.add(ack.value, ack.slot)
    read_slots = _read_slots(polls, cuts, slot_values)
    for poll, slots in zip(polls, read_slots, strict=True):
        tp = (poll["topic"], poll["partition"])
        group = poll["group"]
        group_topics[group].add(tp[0])
        group_isolation[group] = poll["isolation"]
        report.add("polls")
        read_committed = poll["isolation"] == "read_committed"
        for slot, value in zip(slots, poll["values"], strict=True):
            offset = slot[2]
            report.add("read")
            slot_values.add(slot, value)
            value_slots.add(value, slot)
            read_by_group[group].add(value)
            group_reads[(group, tp)].append((poll["t"], offset))
            process, counter = _split(value)
            if counter is None or process not in sent_max or counter > sent_max[process]:
                report.add("phantom_reads", {"member": poll["member"], "topic": tp[0],
                                             "partition": tp[1], "offset": offset,
                                             "value": value})
            if read_committed:
                txn = txn_of_value.get(value)
                if txn is not None and outcomes.get(txn, ("unknown", 0.0))[0] == "abort":
                    report.add("aborted_reads", {"member": poll["member"], "value": value,
                                                 "offset": offset, "txn": list(txn)})

    def live(slot: Slot) -> bool:
        return slot[3] == cuts.final((slot[0], slot[1]), slot[2])

    # -- inconsistent offsets, duplicates, reads cut ---------------------------------------------
    for slot, values in slot_values.more.items():
        report.add("inconsistent_offsets", {"slot": list(slot), "values": sorted(values)})
    for value in set(value_slots.first) | set(value_slots.more):
        alive = sorted(s for s in value_slots.get(value) if live(s))
        if len(alive) > 1:
            report.add("duplicates", {"value": value, "slots": [list(s) for s in alive]})
    for slots in read_slots:
        report.add("reads_cut", amount=sum(1 for slot in slots if not live(slot)))

    # -- lost writes -----------------------------------------------------------------------------
    latest_after: dict[tuple[str, TopicPartition], tuple[list[float], list[int]]] = {}
    for key, reads in group_reads.items():
        reads.sort()
        suffix_max = [0] * len(reads)
        best = -1
        for index in range(len(reads) - 1, -1, -1):
            best = max(best, reads[index][1])
            suffix_max[index] = best
        latest_after[key] = ([t for t, _ in reads], suffix_max)
    for ack in acks:
        tp = (ack.slot[0], ack.slot[1])
        if not live(ack.slot):
            report.add("cut_acknowledged")
            if flush == "always":
                report.add("lost_writes", {"value": ack.value, "slot": list(ack.slot),
                                           "why": "acknowledged with flush=always, then cut"})
            continue
        for group, topics in group_topics.items():
            if tp[0] not in topics:
                continue
            acknowledged_at = ack.t
            if group_isolation[group] == "read_committed" and ack.txn is not None:
                if not committed(ack.txn):
                    continue
                acknowledged_at = max(ack.t, outcomes[ack.txn][1])
            if ack.value in read_by_group[group]:
                continue
            times, suffix_max = latest_after.get((group, tp), ([], []))
            index = bisect.bisect_right(times, acknowledged_at)
            if index < len(times) and suffix_max[index] > ack.slot[2]:
                report.add("lost_writes", {"value": ack.value, "slot": list(ack.slot),
                                           "group": group, "acknowledged_at": acknowledged_at,
                                           "higher_offset_read": suffix_max[index]})
            else:
                report.add("unread")

    # -- per member: monotonic polls and skipped offsets -----------------------------------------
    offsets_seen: dict[TopicPartition, set[int]] = defaultdict(set)
    for slot in slot_values.first:
        offsets_seen[(slot[0], slot[1])].add(slot[2])
    sorted_known = {tp: sorted(offsets) for tp, offsets in offsets_seen.items()}

    def skipped(tp: TopicPartition, start: int, end: int, t: float,
                read_committed: bool) -> list[int]:
        """Offsets in [start, end) that exist at time t (for read_committed: that hold a
        non-transactional or committed value)."""
        offsets = sorted_known.get(tp, [])
        found = []
        for offset in offsets[bisect.bisect_left(offsets, start):bisect.bisect_left(offsets, end)]:
            values = slot_values.get((tp[0], tp[1], offset, cuts.generation(tp, offset, t)))
            if values and (not read_committed
                           or any(committed(txn_of_value.get(v)) for v in values)):
                found.append(offset)
        return found

    previous: dict[tuple[str, TopicPartition, int], dict[str, Any]] = {}
    for poll in polls:
        tp = (poll["topic"], poll["partition"])
        offsets = poll["offsets"]
        if not offsets:
            continue
        read_committed = poll["isolation"] == "read_committed"
        if any(b <= a for a, b in zip(offsets, offsets[1:], strict=False)):
            report.add("non_monotonic_polls", {"member": poll["member"], "topic": tp[0],
                                               "partition": tp[1], "offsets": offsets[:20]})
        else:
            inside = [o for a, b in zip(offsets, offsets[1:], strict=False) if b > a + 1
                      for o in skipped(tp, a + 1, b, poll["t"], read_committed)]
            if inside:
                report.add("skipped_offsets", {"member": poll["member"], "topic": tp[0],
                                               "partition": tp[1], "skipped": inside[:20],
                                               "within_poll": True}, amount=len(inside))
        tenure = (poll["member"], tp, poll["tenure"])
        before = previous.get(tenure)
        previous[tenure] = poll
        if before is None or cuts.between(tp, before["t"], poll["t"]):
            continue
        end = before["offsets"][-1] + 1
        if offsets[0] < end:
            report.add("non_monotonic_polls", {
                "member": poll["member"], "topic": tp[0], "partition": tp[1],
                "previous_end": end, "first": offsets[0], "tenure": poll["tenure"]})
        elif offsets[0] > end:
            gap = skipped(tp, end, offsets[0], poll["t"], read_committed)
            if gap:
                report.add("skipped_offsets", {
                    "member": poll["member"], "topic": tp[0], "partition": tp[1],
                    "previous_end": end, "first": offsets[0], "skipped": gap[:20],
                    "tenure": poll["tenure"]}, amount=len(gap))
    return report


def _read_slots(polls: list[dict[str, Any]], cuts: Cuts,
                acknowledged: _Multimap) -> list[list[Slot]]:
    """The slot of every record of every poll.

    A poll's records were served by the broker some time between ``since`` (when the previous
    poll started: the consumer keeps a fetch in flight) and ``t``. When a cut of the partition
    lies in between, the record's generation is ambiguous; it is the highest one in that range
    whose slot no acknowledgement or unambiguous read contradicts (holds another value), or
    the highest one if all do.
    """
    found: list[list[Slot]] = []
    ambiguous: list[tuple[int, int, int, int, str]] = []  # poll, record, low, high generation
    seen = _Multimap()
    seen.first = dict(acknowledged.first)
    seen.more = {key: set(values) for key, values in acknowledged.more.items()}
    for index, poll in enumerate(polls):
        tp = (poll["topic"], poll["partition"])
        since = poll.get("since", poll["t"])
        slots = []
        for position, (offset, value) in enumerate(zip(poll["offsets"], poll["values"],
                                                       strict=True)):
            high = cuts.generation(tp, offset, poll["t"])
            low = cuts.generation(tp, offset, since) if since < poll["t"] else high
            slot = (tp[0], tp[1], offset, high)
            if low != high:
                ambiguous.append((index, position, low, high, value))
            else:
                seen.add(slot, value)
            slots.append(slot)
        found.append(slots)
    for index, position, low, high, value in ambiguous:
        topic, partition, offset, _ = found[index][position]
        for generation in range(high, low - 1, -1):
            values = seen.get((topic, partition, offset, generation))
            if not values or values == {value}:
                found[index][position] = (topic, partition, offset, generation)
                break
    return found


def _split(value: str) -> tuple[str, int | None]:
    """``"p3-1234"`` -> ("p3", 1234)."""
    process, _, counter = value.rpartition("-")
    try:
        return process, int(counter)
    except ValueError:
        return process, None


def _counter(value: str, process: str) -> int | None:
    found, counter = _split(value)
    return counter if found == process else None


def history_files(paths: Sequence[str]) -> Iterator[Path]:
    """Files as given; a directory stands for its ``*.jsonl`` files."""
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(path.glob("*.jsonl"))
        else:
            yield path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.torture.checker",
        description="Check a torture history (JSON lines) for anomalies; exit 1 if any.")
    parser.add_argument("history", nargs="+", type=input_file, help="history files, or directories of *.jsonl")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    options = parser.parse_args(argv)
    report = check(read_history(list(history_files(options.history))))
    print(json.dumps(report.to_json(), indent=2) if options.json else report.text())
    return 1 if report.anomalies else 0


if __name__ == "__main__":
    sys.exit(main())
