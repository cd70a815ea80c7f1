"""Committed offsets: what each group has finished with, kept in ``__consumer_offsets``.

A commit of (group, topic, partition) -> offset is one record whose key is
``["offset", group, topic, partition]`` and whose value is ``{"offset", "metadata", "ts"}``; a
tombstone deletes it (a deleted group or topic). All offsets of one commit go into one batch, so
a commit is all or nothing. The topic is compacted, so it stays as small as the live keys, and
the whole state is read back into memory when the broker starts; an offset past its
partition's log end (recovery cut the log below it) is then moved back to the log end.

The committed offset is the next record to read — one past the last record processed.

Threading: event loop thread only (appends to the internal topic wait for its fsync inline; they
are small).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from logstore.broker.internal import (
    OFFSETS_TOPIC,
    append_entries,
    encode_key,
    encode_value,
    ensure_topic,
    partition_for,
    read_entries,
)
from logstore.errors import LogstoreError
from logstore.storage import DataDir
from logstore.storage.clock import Clock

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Committed:
    offset: int
    metadata: str
    commit_timestamp_ms: int


class OffsetStore:
    def __init__(self, data_dir: DataDir, clock: Clock, partitions: int = 4) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self._logs = ensure_topic(data_dir, OFFSETS_TOPIC, partitions)
        self._offsets: dict[str, dict[TopicPartition, Committed]] = {}
        self._load()
        self._clamp_to_log_ends()

    def _load(self) -> None:
        count = 0
        for partition_log in self._logs:
            for _, key, value in read_entries(partition_log):
                if not (isinstance(key, list) and len(key) == 4 and key[0] == "offset"):
                    continue
                _, group, topic, partition = key
                offsets = self._offsets.setdefault(group, {})
                if value is None:
                    offsets.pop((topic, partition), None)
                    if not offsets:
                        del self._offsets[group]
                else:
                    offsets[(topic, partition)] = Committed(
                        int(value["offset"]), str(value.get("metadata", "")), int(value.get("ts", 0))
                    )
                count += 1
        log.info("loaded committed offsets of %d groups (%d records)", len(self._offsets), count)

    def _clamp_to_log_ends(self) -> None:
        """Move committed offsets past their partition's log end back to the log end.

        A commit is refused past the log end, so this only happens when recovery cut the log
        below a committed offset (a power loss took unsynced records a group had read). Left
        alone, the group would skip the records appended after the restart at the offsets
        that were cut, once the log grew past its committed offset again.
        """
        for group, offsets in list(self._offsets.items()):
            moved = []
            for (topic, partition), committed in offsets.items():
                try:
                    end = self.data_dir.log(topic, partition).log_end_offset
                except LogstoreError:  # a deleted topic or partition
                    continue
                if committed.offset > end:
                    log.warning("group %s: committed offset %d of %s/%d is past the log end %d "
                                "(recovery cut the log); moved back to %d", group,
                                committed.offset, topic, partition, end, end)
                    moved.append((topic, partition, end, committed.metadata))
            self.commit(group, moved)

    def _log_for(self, group: str):  # type: ignore[no-untyped-def]
        return self._logs[partition_for(group, len(self._logs))]

    def commit(self, group: str, offsets: Iterable[tuple[str, int, int, str]]) -> None:
        """Commit (topic, partition, offset, metadata) entries; durable when this returns."""
        now = self.clock.now_ms()
        batch = list(offsets)
        if not batch:
            return
        entries = [
            (
                encode_key("offset", group, topic, partition),
                encode_value({"offset": offset, "metadata": metadata, "ts": now}),
            )
            for topic, partition, offset, metadata in batch
        ]
        append_entries(self._log_for(group), entries)
        current = self._offsets.setdefault(group, {})
        for topic, partition, offset, metadata in batch:
            current[(topic, partition)] = Committed(offset, metadata, now)

    def committed(self, group: str) -> dict[TopicPartition, Committed]:
        return dict(self._offsets.get(group, {}))

    def get(self, group: str, topic: str, partition: int) -> Committed | None:
        return self._offsets.get(group, {}).get((topic, partition))

    def groups(self) -> list[str]:
        return sorted(self._offsets)

    def _delete(self, group: str, keys: list[TopicPartition]) -> None:
        if not keys:
            return
        entries = [(encode_key("offset", group, t, p), None) for t, p in keys]
        append_entries(self._log_for(group), entries)
        offsets = self._offsets.get(group, {})
        for key in keys:
            offsets.pop(key, None)
        if not offsets:
            self._offsets.pop(group, None)

    def delete_group(self, group: str) -> None:
        self._delete(group, list(self._offsets.get(group, {})))

    def delete_topic(self, topic: str) -> None:
        """The offsets of a deleted topic go with it, in every group."""
        for group in list(self._offsets):
            self._delete(group, [tp for tp in self._offsets[group] if tp[0] == topic])
