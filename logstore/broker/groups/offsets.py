"""Committed offsets: what each group has finished with, kept in ``__consumer_offsets``.

A commit of (group, topic, partition) -> offset is one record whose key is
``["offset", group, topic, partition]`` and whose value is ``{"offset", "metadata", "ts"}``; a
tombstone deletes it (a deleted group or topic). All offsets of one commit go into one batch, so
a commit is all or nothing. The topic is compacted, so it stays as small as the live keys.

Loading costs time in proportion to the live state, not to the history: each partition's state
is read from its snapshot (``offsets.snapshot`` in the partition directory: the state as of a log
offset, see ``snapshot_file`` and ``groups/snapshot``), written at a clean shutdown and at
checkpoints, and only the records after that offset are replayed, in bulk
(``internal.read_latest``). Without a usable snapshot the whole partition is replayed. Either
way, an offset past its partition's log end (recovery cut the log below it) is then moved back
to the log end. Each partition's load is logged: from where, how many records, how long.

The committed offset is the next record to read — one past the last record processed.

In a cluster ``__consumer_offsets`` is replicated like any topic, and a group's coordinator is
the leader of the partition the group hashes to (``partition_of``). ``leadership`` (set by the
broker) says at which leader epoch this broker leads a partition, or raises ``NotLeaderError``;
a partition's state is (re)loaded from its snapshot and log the first time it is used at a new
leader epoch (``current``), so a broker that becomes leader serves exactly what the log holds,
and the state of a partition it no longer leads is never consulted, written, or snapshotted
(and dropped by ``release_unled``, at housekeeping).
On a single node ``leadership`` is None: every partition is led here, at epoch 0.

Threading: event loop thread only (appends to the internal topic wait for its fsync inline; they
are small). A ``PendingSnapshot`` from ``take_snapshots`` may be written on any thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from logstore.broker.groups import snapshot as offsets_snapshot
from logstore.broker.groups import txn_offsets
from logstore.broker.groups.snapshot import PendingGroup
from logstore.broker.internal import (
    OFFSETS_TOPIC,
    append_entries,
    encode_key,
    encode_value,
    ensure_topic,
    parse_many,
    partition_for,
    read_latest,
)
from logstore.broker.snapshot_file import PendingSnapshot, read_snapshot
from logstore.errors import LogstoreError, ProducerFencedError
from logstore.storage import DataDir, PartitionLog
from logstore.storage.clock import Clock

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
SNAPSHOT_FILE = "offsets.snapshot"


class Committed(NamedTuple):
    offset: int
    metadata: str
    commit_timestamp_ms: int


class OffsetStore:
    def __init__(self, data_dir: DataDir, clock: Clock, partitions: int = 4, *, clamp: bool = True) -> None:
        """``clamp``: move committed offsets past their log end back (a single node, see
        ``_clamp_to_log_ends``); a clustered broker does not: its copies of other partitions
        may lag their leaders, and it writes its internal partitions only as their leader."""
        self.data_dir = data_dir
        self.clock = clock
        self._logs = ensure_topic(data_dir, OFFSETS_TOPIC, partitions)
        #: group -> its committed offsets, or its snapshot entries until the group is first used
        self._offsets: dict[str, dict[TopicPartition, Committed] | PendingGroup] = {}
        #: per partition: the log offset its snapshot on disk covers (-1: none)
        self._snapshot_offsets = [-1] * len(self._logs)
        #: In a cluster: partition -> this broker's leader epoch of it (raises NotLeaderError);
        #: None on a single node.
        self.leadership: Callable[[int], int] | None = None
        #: per partition: the leader epoch its state in memory was loaded at (0: at start-up,
        #: -1: released, see ``release_unled``)
        self._loaded_epochs = [0] * len(self._logs)
        #: per partition: transactional offset commits staged until their marker (a cluster,
        #: see ``txn_offsets``)
        self._staged: list[txn_offsets.Staged] = [{} for _ in self._logs]
        #: per partition: producer id -> the highest epoch a marker carried here (fences a
        #: zombie's later staging; in memory: a new coordinator starts without it)
        self._marker_epochs: list[dict[int, int]] = [{} for _ in self._logs]
        log_ends = self._log_ends()
        suspects: list[tuple[str, TopicPartition]] = []  # maybe past their log end
        for partition_log in self._logs:
            suspects += self._load(partition_log, log_ends)
        if clamp:
            self._clamp_to_log_ends(suspects, log_ends)

    def _log_ends(self) -> dict[str, np.ndarray]:
        """topic -> the log end offset of each of its partitions."""
        return {
            name: np.array([lg.log_end_offset for lg in self.data_dir.topic(name).logs], dtype=np.int64)
            for name in self.data_dir.list_topics()
        }

    def _snapshot_path(self, partition_log: PartitionLog) -> Path:
        return partition_log.directory / SNAPSHOT_FILE

    def _load(self, partition_log: PartitionLog, log_ends: dict[str, np.ndarray]) -> list[tuple[str, TopicPartition]]:
        """Load one partition's groups; returns the entries that may be past their log end."""
        started = time.perf_counter()
        path = self._snapshot_path(partition_log)
        snapshot = read_snapshot(path, offsets_snapshot.KIND, offsets_snapshot.VERSION, partition_log)
        start, source = partition_log.log_start_offset, "log"
        suspects: list[tuple[str, TopicPartition]] = []
        if snapshot is not None:
            try:
                groups, suspects = offsets_snapshot.decode_offsets(snapshot.payload, Committed, log_ends)
            except (ValueError, TypeError) as exc:
                suspects = []
                log.warning("ignoring the state snapshot %s: %s; replaying the log from its start", path, exc)
            else:
                self._offsets.update(groups)
                start, source = snapshot.offset, "snapshot"
                self._snapshot_offsets[partition_log.partition] = snapshot.offset
        latest, records = read_latest(partition_log, start)
        suspects += self._apply(latest)
        groups_here = sum(1 for g in self._offsets if partition_for(g, len(self._logs)) == partition_log.partition)
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info(
            "loaded committed offsets of %d groups from %s/%d: %s up to offset %d, then %d records "
            "of the log, in %.1f ms", groups_here, OFFSETS_TOPIC, partition_log.partition,
            "the snapshot" if source == "snapshot" else "no snapshot", start, records, elapsed_ms,
            extra={"partition": partition_log.partition, "source": source, "snapshot_offset": start,
                   "records": records, "groups": groups_here, "load_ms": round(elapsed_ms, 1)},
        )
        return suspects

    def _apply(self, latest: dict[bytes, bytes | None]) -> list[tuple[str, TopicPartition]]:
        """Apply each key's last value (None: a tombstone) over the state; returns the keys set."""
        applied: list[tuple[str, TopicPartition]] = []
        raw_values = list(latest.values())
        values = iter(parse_many([v for v in raw_values if v is not None]))
        for key, raw in zip(parse_many(list(latest)), raw_values, strict=True):
            value = None if raw is None else next(values)
            if txn_offsets.is_staged_key(key):
                txn_offsets.apply(self._staged[partition_for(str(key[1]), len(self._logs))], key, value)
                continue
            if not (isinstance(key, list) and len(key) == 4 and key[0] == "offset"):
                continue
            _, group, topic, partition = key
            if value is None:
                offsets = self._group(group)
                if offsets is not None:
                    offsets.pop((topic, partition), None)
                    if not offsets:
                        del self._offsets[group]
            else:
                self._group_to_change(group)[(topic, partition)] = Committed(
                    int(value["offset"]), str(value.get("metadata", "")), int(value.get("ts", 0))
                )
                applied.append((group, (topic, partition)))
        return applied

    # -- leadership (a cluster) -----------------------------------------------------------------

    @property
    def partitions(self) -> int:
        return len(self._logs)

    def partition_of(self, group: str) -> int:
        """The ``__consumer_offsets`` partition that holds ``group`` (its coordinator leads it)."""
        return partition_for(group, len(self._logs))

    def leads_loaded(self, partition: int) -> bool:
        """Whether this broker leads ``partition`` at the epoch its state was loaded at (always
        on a single node)."""
        if self.leadership is None:
            return True
        try:
            return self.leadership(partition) == self._loaded_epochs[partition]
        except LogstoreError:
            return False

    def current(self, partition: int) -> bool:
        """Make ``partition``'s state the log's as of this broker's leadership (reloading it at a
        new leader epoch); True when it was reloaded. Raises ``NotLeaderError`` when this broker
        does not lead it."""
        if self.leadership is None:
            return False
        epoch = self.leadership(partition)
        if epoch == self._loaded_epochs[partition]:
            return False
        for group in [g for g in self._offsets if partition_for(g, len(self._logs)) == partition]:
            del self._offsets[group]
        self._staged[partition] = {}
        self._snapshot_offsets[partition] = -1
        self._load(self._logs[partition], self._log_ends())  # (clamping would write: not here)
        self._loaded_epochs[partition] = epoch
        return True

    def release_unled(self) -> list[int]:
        """Drop the state of the partitions this broker no longer leads at the epoch they were
        loaded at (a cluster); returns them. They are loaded again if it leads them again."""
        if self.leadership is None:
            return []
        released = [p for p in range(len(self._logs)) if self._loaded_epochs[p] >= 0 and not self.leads_loaded(p)]
        for partition in released:
            for group in [g for g in self._offsets if partition_for(g, len(self._logs)) == partition]:
                del self._offsets[group]
            self._staged[partition] = {}
            self._loaded_epochs[partition] = -1  # never a leader epoch: the next use reloads
        return released

    def take_snapshots(self, *, force: bool = False) -> list[PendingSnapshot]:
        """Snapshots of the partitions whose log grew since their last one (all with ``force``),
        encoded now; write them (``PendingSnapshot.write``) on any thread. In a cluster, only of
        the partitions led here whose state is loaded."""
        count = len(self._logs)
        changed = [
            lg for lg in self._logs
            if (force or lg.log_end_offset != self._snapshot_offsets[lg.partition])
            and self.leads_loaded(lg.partition)
            and not self._staged[lg.partition]  # a snapshot does not carry staged offsets
        ]
        if not changed:
            return []
        by_partition: dict[int, dict[str, dict[TopicPartition, Committed] | PendingGroup]] = {
            lg.partition: {} for lg in changed
        }
        for group, offsets in self._offsets.items():
            groups = by_partition.get(partition_for(group, count))
            if groups is not None:
                groups[group] = offsets
        pending = []
        for lg in changed:
            payload = offsets_snapshot.encode_offsets(by_partition[lg.partition])
            pending.append(PendingSnapshot(
                lg, self._snapshot_path(lg), offsets_snapshot.KIND, offsets_snapshot.VERSION,
                lg.log_end_offset, payload,
            ))
            self._snapshot_offsets[lg.partition] = lg.log_end_offset
        return pending

    def _clamp_to_log_ends(self, suspects: list[tuple[str, TopicPartition]], log_ends: dict[str, np.ndarray]) -> None:
        """Move committed offsets past their partition's log end back to the log end.

        A commit is refused past the log end, so this only happens when recovery cut the log
        below a committed offset (a power loss took unsynced records a group had read). Left
        alone, the group would skip the records appended after the restart at the offsets
        that were cut, once the log grew past its committed offset again. Only ``suspects``
        are checked: the entries replayed from the log, and those of a snapshot that numpy
        found past their log end.
        """
        moved: dict[str, list[tuple[str, int, int, str]]] = {}
        for group, (topic, partition) in dict.fromkeys(suspects):
            committed = (self._group(group) or {}).get((topic, partition))
            ends = log_ends.get(topic)
            if committed is None or ends is None or not 0 <= partition < len(ends):
                continue  # gone since, or of a deleted topic or partition
            end = int(ends[partition])
            if committed.offset > end:
                log.warning("group %s: committed offset %d of %s/%d is past the log end %d "
                            "(recovery cut the log); moved back to %d", group,
                            committed.offset, topic, partition, end, end)
                moved.setdefault(group, []).append((topic, partition, end, committed.metadata))
        for group, entries in moved.items():
            self.commit(group, entries)

    def _group(self, group: str) -> dict[TopicPartition, Committed] | None:
        """The group's committed offsets (materialized from the snapshot on first use)."""
        offsets = self._offsets.get(group)
        if isinstance(offsets, PendingGroup):
            offsets = self._offsets[group] = offsets.materialize()
        return offsets

    def _group_to_change(self, group: str) -> dict[TopicPartition, Committed]:
        offsets = self._group(group)
        if offsets is None:
            offsets = self._offsets[group] = {}
        return offsets

    def _log_for(self, group: str) -> PartitionLog:
        return self._logs[partition_for(group, len(self._logs))]

    def _epoch_for(self, group: str) -> int:
        return self._loaded_epochs[partition_for(group, len(self._logs))]

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
        append_entries(self._log_for(group), entries, leader_epoch=self._epoch_for(group))
        current = self._group_to_change(group)
        for topic, partition, offset, metadata in batch:
            current[(topic, partition)] = Committed(offset, metadata, now)

    # -- transactional commits staged until their marker (a cluster, see txn_offsets) ----------

    def stage(self, group: str, producer_id: int, epoch: int, offsets: list[tuple[str, int, int, str]]) -> None:
        """Stage a transaction's offsets of ``group``; durable when this returns. Refused
        (``ProducerFencedError``) below an epoch a marker of the producer carried here."""
        partition = partition_for(group, len(self._logs))
        known = self._marker_epochs[partition].get(producer_id, -1)
        if epoch < known:
            raise ProducerFencedError(producer_id, epoch, known)
        staged = self._staged[partition]
        entry = txn_offsets.merged(staged, group, producer_id, epoch, offsets)
        append_entries(
            self._log_for(group),
            [(encode_key(txn_offsets.KEY, group, producer_id), encode_value(txn_offsets.encode(*entry)))],
            leader_epoch=self._epoch_for(group),
        )
        staged[(group, producer_id)] = entry

    def complete_staged(self, partition: int, producer_id: int, epoch: int, commit: bool) -> None:
        """The transaction marker of ``producer_id`` (at ``epoch``) reached ``partition``: its
        staged offsets are committed (or dropped) and their records removed. A no-op when none
        are staged (a marker sent again)."""
        epochs = self._marker_epochs[partition]
        epochs[producer_id] = max(epochs.get(producer_id, -1), epoch)
        staged = self._staged[partition]
        for group, pid in [k for k in staged if k[1] == producer_id]:
            staged_epoch, entries = staged[(group, pid)]
            if commit and staged_epoch == epoch:  # (a zombie's, of an older epoch: dropped)
                self.commit(group, [(t, p, o, m) for (t, p), (o, m) in entries.items()])
            append_entries(self._logs[partition], [(encode_key(txn_offsets.KEY, group, pid), None)],
                           leader_epoch=self._loaded_epochs[partition])
            del staged[(group, pid)]

    def staged_partitions(self, group: str) -> set[TopicPartition]:
        """Partitions of ``group`` with a transactional commit staged (waiting for its marker)."""
        pending: set[TopicPartition] = set()
        for (name, _), (_, entries) in self._staged[partition_for(group, len(self._logs))].items():
            if name == group:
                pending |= set(entries)
        return pending

    def committed(self, group: str) -> dict[TopicPartition, Committed]:
        return dict(self._group(group) or {})

    def get(self, group: str, topic: str, partition: int) -> Committed | None:
        return (self._group(group) or {}).get((topic, partition))

    def groups(self) -> list[str]:
        return sorted(self._offsets)

    def _delete(self, group: str, keys: list[TopicPartition]) -> None:
        if not keys:
            return
        entries = [(encode_key("offset", group, t, p), None) for t, p in keys]
        append_entries(self._log_for(group), entries, leader_epoch=self._epoch_for(group))
        offsets = self._group(group) or {}
        for key in keys:
            offsets.pop(key, None)
        if not offsets:
            self._offsets.pop(group, None)

    def delete_group(self, group: str) -> None:
        self._delete(group, list(self._group(group) or {}))

    def delete_topic(self, topic: str) -> None:
        """The offsets of a deleted topic go with it, in every group (in a cluster, every group
        coordinated here, loaded by the caller: each coordinator deletes its own groups' offsets)."""
        for group in list(self._offsets):
            if self.leads_loaded(partition_for(group, len(self._logs))):
                self._delete(group, [tp for tp in self._group(group) or {} if tp[0] == topic])
