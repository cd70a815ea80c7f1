"""What a range is: per partition, the first offset read and the offset it stops before.

``start`` and ``end`` are each one of:

- ``"earliest"`` (the log start offset) or ``"latest"`` (the log end offset; under
  ``read_committed`` the last stable offset);
- an ``int``: an offset, the same for every partition;
- a ``dict`` ``{partition: offset}``; partitions it does not name take ``"earliest"`` (start)
  or ``"latest"`` (end);
- a ``datetime.datetime`` (naive is local time; ``pandas.Timestamp`` is one): the first offset
  whose record timestamp is at or after it (``ListOffsets``), the log end when there is none.

The end is exclusive and never past the log end as it was when the range was resolved: a range is
a snapshot and reading it never waits for records produced later.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from logstore.client.admin import OffsetQuery
from logstore.client.channel import Channels
from logstore.client.config import ConsumerConfig
from logstore.client.models import TopicPartition

Bound = str | int | datetime.datetime | Mapping[int, int]

#: list_offsets(queries, isolation_level) -> offsets; partition_count(topic) -> int.
ListOffsets = Callable[[dict[TopicPartition, OffsetQuery], int], dict[TopicPartition, int]]


@dataclass(frozen=True, slots=True)
class Link:
    """What a range read borrows from its ``Consumer``: its channels, the broker each partition
    is read from (its leader), and the offset look-ups."""

    channels: Channels
    route: Callable[[TopicPartition], str]
    config: ConsumerConfig
    list_offsets: ListOffsets
    partition_count: Callable[[str], int]
    #: stream_port(address, fresh) -> the Subscribe data channel's port of the broker at that
    #: address (0: none, None: no broker answered), ``fresh`` asking the cluster again.
    stream_port: Callable[[str, bool], int | None] = lambda address, fresh: 0


def _query(bound: Bound, partition: int, default: str, name: str) -> OffsetQuery | int:
    """An offset (int) or a ListOffsets query for one partition."""
    if isinstance(bound, Mapping):
        value: Any = bound.get(partition, default)
    else:
        value = bound
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an offset, a datetime, 'earliest' or 'latest', not a bool")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name} offset must not be negative, not {value}")
        return value
    if isinstance(value, datetime.datetime):
        return value
    if value in ("earliest", "latest"):
        return str(value)
    raise ValueError(
        f"{name} must be an offset, a {{partition: offset}} dict, a datetime, 'earliest' or "
        f"'latest', not {value!r}"
    )


def resolve(
    link: Link, topic: str, partitions: Iterable[int] | None, start: Bound, end: Bound,
    isolation_level: int,
) -> dict[int, tuple[int, int]]:
    """``{partition: (first offset, stop offset)}``; partitions with nothing to read map to an
    empty span (first >= stop)."""
    chosen = sorted(set(partitions)) if partitions is not None else list(
        range(link.partition_count(topic))
    )
    queries: dict[TopicPartition, OffsetQuery] = {}
    firsts: dict[int, OffsetQuery | int] = {}
    stops: dict[int, OffsetQuery | int] = {}
    for partition in chosen:
        if partition < 0:
            raise ValueError(f"partition must not be negative, not {partition}")
        firsts[partition] = _query(start, partition, "earliest", "start")
        stops[partition] = _query(end, partition, "latest", "end")
        queries[TopicPartition(topic, partition)] = "latest"
    latest = link.list_offsets(queries, isolation_level)
    found: dict[tuple[str, int], int] = {}
    for kind, bounds in (("first", firsts), ("stop", stops)):
        asked: dict[TopicPartition, OffsetQuery] = {
            TopicPartition(topic, p): q for p, q in bounds.items()
            if not isinstance(q, int) and q != "latest"}
        for tp, offset in link.list_offsets(asked, isolation_level).items():
            found[(kind, tp.partition)] = offset
    spans: dict[int, tuple[int, int]] = {}
    for partition in chosen:
        end_offset = latest[TopicPartition(topic, partition)]
        pair = []
        for kind, bound in (("first", firsts[partition]), ("stop", stops[partition])):
            if isinstance(bound, int):
                pair.append(bound)
            elif bound == "latest":
                pair.append(end_offset)
            else:
                pair.append(found[(kind, partition)])
        spans[partition] = (pair[0], min(pair[1], end_offset))
    return spans
