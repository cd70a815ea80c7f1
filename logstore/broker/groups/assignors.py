"""Server-side partition assignors: who in a group should own which partition.

Each assignor is a pure function of the members (id -> subscribed topics), the partition count of
every subscribed topic, and the current assignment, returning the target assignment. Members are
ordered by id so the result is deterministic.

- ``range``: per topic, each subscriber gets a contiguous range (the first ones one extra).
- ``roundrobin``: every subscribed partition dealt out in turn to the members subscribed to it.
- ``sticky`` (default): keep every current owner that is still valid, then hand the rest to the
  least-loaded members and move partitions only as far as needed so that counts differ by at most
  one. Adding or removing a member moves only the partitions that must move.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

TopicPartition = tuple[str, int]
Assignment = dict[str, set[TopicPartition]]
Assignor = Callable[[Mapping[str, Sequence[str]], Mapping[str, int], Mapping[str, set[TopicPartition]]], Assignment]


def _subscribers(members: Mapping[str, Sequence[str]], topic: str) -> list[str]:
    return sorted(member for member, topics in members.items() if topic in topics)


def range_assignor(
    members: Mapping[str, Sequence[str]],
    partitions: Mapping[str, int],
    current: Mapping[str, set[TopicPartition]],
) -> Assignment:
    target: Assignment = {member: set() for member in members}
    for topic in sorted(partitions):
        subscribers = _subscribers(members, topic)
        if not subscribers:
            continue
        count = partitions[topic]
        share, extra = divmod(count, len(subscribers))
        start = 0
        for index, member in enumerate(subscribers):
            size = share + (1 if index < extra else 0)
            target[member].update((topic, p) for p in range(start, start + size))
            start += size
    return target


def roundrobin_assignor(
    members: Mapping[str, Sequence[str]],
    partitions: Mapping[str, int],
    current: Mapping[str, set[TopicPartition]],
) -> Assignment:
    target: Assignment = {member: set() for member in members}
    ordered = sorted(members)
    cursor = 0
    for topic in sorted(partitions):
        for partition in range(partitions[topic]):
            for step in range(len(ordered)):
                member = ordered[(cursor + step) % len(ordered)]
                if topic in members[member]:
                    target[member].add((topic, partition))
                    cursor = (cursor + step + 1) % len(ordered)
                    break
    return target


def sticky_assignor(
    members: Mapping[str, Sequence[str]],
    partitions: Mapping[str, int],
    current: Mapping[str, set[TopicPartition]],
) -> Assignment:
    target: Assignment = {member: set() for member in members}
    if not members:
        return target
    valid = {(t, p) for t, count in partitions.items() for p in range(count)}
    owner: dict[TopicPartition, str] = {}
    # 1. keep what members own now, if it still exists and they still subscribe to it
    for member in sorted(current):
        if member not in members:
            continue
        for tp in sorted(current[member]):
            if tp in valid and tp[0] in members[member] and tp not in owner:
                owner[tp] = member
                target[member].add(tp)
    # 2. hand out the unowned partitions, each to the least-loaded eligible member
    for tp in sorted(valid - owner.keys()):
        eligible = [m for m in sorted(members) if tp[0] in members[m]]
        if not eligible:
            continue
        member = min(eligible, key=lambda m: (len(target[m]), m))
        target[member].add(tp)
        owner[tp] = member
    # 3. balance: move one partition at a time from the most to the least loaded member
    while True:
        ordered = sorted(members, key=lambda m: (len(target[m]), m))
        moved = False
        for heavy in reversed(ordered):
            for light in ordered:
                if len(target[heavy]) - len(target[light]) <= 1:
                    continue
                movable = sorted(tp for tp in target[heavy] if tp[0] in members[light])
                if movable:
                    tp = movable[-1]
                    target[heavy].discard(tp)
                    target[light].add(tp)
                    moved = True
                    break
            if moved:
                break
        if not moved:
            return target


ASSIGNORS: dict[str, Assignor] = {
    "range": range_assignor,
    "roundrobin": roundrobin_assignor,
    "sticky": sticky_assignor,
}
DEFAULT_ASSIGNOR = "sticky"
