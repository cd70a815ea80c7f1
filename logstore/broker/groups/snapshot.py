"""The committed-offsets snapshot payload: the groups of one ``__consumer_offsets`` partition as
columns, so loading 100,000 committed offsets is a few numpy and C-level steps, not JSON per entry.

Layout (little-endian), format version 1::

    offset  size    field
    0       8       entries      <u8  N
    8       8       names_bytes  <u8  S
    16      S       names        JSON list of strings — groups, topics and metadata, each once
    16+S    N x 32  entries      ENTRY_DTYPE, the entries of one group next to each other

An entry is (group, topic, partition, metadata, offset, commit_timestamp_ms); group, topic and
metadata are indexes into ``names``. Decoding makes one ``PendingGroup`` per group (a numpy
view of its rows); its dict of ``Committed`` values is built the first time the group is used,
so a start-up costs time per group, and encoding copies a group never used straight back. The
file around it (kind ``offsets``, the log offset it
covers, crc32c) is ``snapshot_file``'s.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np

KIND = "offsets"
VERSION = 1
COUNTS = struct.Struct("<QQ")  # entries, names_bytes
ENTRY_DTYPE = np.dtype([
    ("group", "<u4"),
    ("topic", "<u4"),
    ("partition", "<i4"),
    ("metadata", "<u4"),
    ("offset", "<i8"),
    ("commit_timestamp_ms", "<i8"),
])

TopicPartition = tuple[str, int]
_first, _second, _third = itemgetter(0), itemgetter(1), itemgetter(2)


class PendingGroup:
    """A group's entries as the snapshot holds them, turned into a dict only when the group is
    first used: loading costs time per group, not per committed offset. Immutable."""

    __slots__ = ("entries", "names", "committed")

    def __init__(self, entries: np.ndarray, names: list[str], committed: type[tuple]) -> None:  # type: ignore[type-arg]
        self.entries = entries  # rows of ENTRY_DTYPE, all of one group
        self.names = names  # the snapshot's name table
        self.committed = committed

    def __len__(self) -> int:
        return len(self.entries)

    def materialize(self) -> dict[TopicPartition, Any]:
        """(topic, partition) -> ``committed`` tuple (offset, metadata, commit_timestamp_ms)."""
        names, entries = self.names, self.entries
        keys = zip(map(names.__getitem__, entries["topic"].tolist()), entries["partition"].tolist(), strict=True)
        values = map(tuple.__new__, repeat(self.committed), zip(
            entries["offset"].tolist(),
            map(names.__getitem__, entries["metadata"].tolist()),
            entries["commit_timestamp_ms"].tolist(),
            strict=True,
        ))
        return dict(zip(keys, values, strict=True))


#: group -> (topic, partition) -> Committed (offset, metadata, commit_timestamp_ms), or the
#: group's snapshot entries not yet materialized
GroupOffsets = Mapping[str, "Mapping[TopicPartition, tuple[int, str, int]] | PendingGroup"]


def encode_offsets(groups: GroupOffsets) -> bytes:
    names: dict[str, int] = {}
    remaps: dict[int, np.ndarray] = {}  # id(name table of a snapshot) -> index in ``names``
    entries = np.empty(sum(map(len, groups.values())), dtype=ENTRY_DTYPE)
    position = 0
    for group, offsets in groups.items():
        count = len(offsets)
        if not count:
            continue
        rows = entries[position : position + count]
        position += count
        if isinstance(offsets, PendingGroup):  # copy its rows, its names into this table
            remap = remaps.get(id(offsets.names))
            if remap is None:
                remap = remaps[id(offsets.names)] = np.array(
                    [names.setdefault(n, len(names)) for n in offsets.names], dtype=np.uint32
                )
            rows[:] = offsets.entries
            for column in ("group", "topic", "metadata"):
                rows[column] = remap[offsets.entries[column]]
            continue
        keys = list(offsets)
        values = list(offsets.values())
        topics = list(map(_first, keys))
        metadata = list(map(_second, values))
        for name in chain((group,), set(topics), set(metadata)):
            names.setdefault(name, len(names))
        rows["group"] = names[group]
        rows["topic"] = list(map(names.__getitem__, topics))
        rows["partition"] = list(map(_second, keys))
        rows["metadata"] = list(map(names.__getitem__, metadata))
        rows["offset"] = list(map(_first, values))
        rows["commit_timestamp_ms"] = list(map(_third, values))
    table = json.dumps(list(names), separators=(",", ":")).encode()
    return COUNTS.pack(len(entries), len(table)) + table + entries.tobytes()


def decode_offsets(
    payload: bytes, committed: type[tuple], log_ends: Mapping[str, np.ndarray]  # type: ignore[type-arg]
) -> tuple[dict[str, PendingGroup], list[tuple[str, TopicPartition]]]:
    """The groups in ``payload`` (each a ``PendingGroup`` whose values become ``committed``
    tuples), and the (group, (topic, partition)) whose offset is past that partition's log end
    (``log_ends``: topic -> log end offset of each partition; a topic not in it is skipped).
    Raises ValueError if the payload does not hold together."""
    if len(payload) < COUNTS.size:
        raise ValueError("offsets payload shorter than its counts")
    count, names_bytes = COUNTS.unpack_from(payload)
    if len(payload) != COUNTS.size + names_bytes + count * ENTRY_DTYPE.itemsize:
        raise ValueError(f"offsets payload of {len(payload)} bytes does not hold {count} entries")
    names = json.loads(payload[COUNTS.size : COUNTS.size + names_bytes])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("offsets payload: the name table is not a list of strings")
    entries = np.frombuffer(payload, dtype=ENTRY_DTYPE, count=count, offset=COUNTS.size + names_bytes)
    if not count:
        return {}, []
    for column in ("group", "topic", "metadata"):
        if int(entries[column].max()) >= len(names):
            raise ValueError(f"offsets payload: a {column} index past the name table")
    group_column = entries["group"]
    bounds = [0, *(np.flatnonzero(group_column[1:] != group_column[:-1]) + 1).tolist(), count]
    group_names = map(names.__getitem__, group_column[bounds[:-1]].tolist())
    groups = {
        group: PendingGroup(entries[low:high], names, committed)
        for group, low, high in zip(group_names, bounds[:-1], bounds[1:], strict=True)
    }
    if len(groups) != len(bounds) - 1:
        raise ValueError("offsets payload: a group's entries are not next to each other")
    return groups, _past_log_end(entries, names, log_ends)


def _past_log_end(
    entries: np.ndarray, names: list[str], log_ends: Mapping[str, np.ndarray]
) -> list[tuple[str, TopicPartition]]:
    found: list[tuple[str, TopicPartition]] = []
    topic_column = entries["topic"]
    for topic_index in np.flatnonzero(np.bincount(topic_column)).tolist():
        ends = log_ends.get(names[topic_index])
        if ends is None:
            continue
        rows = entries[topic_column == topic_index]
        partitions = rows["partition"]
        known = (partitions >= 0) & (partitions < len(ends))
        past = known & (rows["offset"] > ends[np.where(known, partitions, 0)])
        for row in rows[past].tolist():
            found.append((names[row[0]], (names[row[1]], row[2])))
    return found
