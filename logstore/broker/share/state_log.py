"""The durable form of share groups: the internal compacted topic ``__share_group_state``.

Keys are JSON lists (as in every internal topic):

- ``["share-config", group]`` -> the group's config, a JSON document (``config.py``),
- ``["share-snap", group, topic, partition]`` -> a snapshot of the share-partition's window,
- ``["share-delta", group, topic, partition, slot]`` -> a change since that snapshot.

A snapshot and a delta have the same binary value layout (little-endian)::

    magic      u1   1
    kind       u1   0 = snapshot, 1 = delta
    generation u4   snapshot number; a delta belongs to the snapshot of its generation
    sequence   u4   the delta's number within its generation (0 for a snapshot)
    start      i8   share-partition start offset after the change
    end        i8   window end offset after the change
    run_count  u4
    runs       run_count x RUN_DTYPE (first i8, last i8, after_ms i8, count u4, state u1)

A snapshot's runs cover its whole window; a delta's runs are the records it changed. Deltas use
slots ``0 .. DELTAS_PER_SNAPSHOT-1`` in turn; when they are used up a new snapshot (the next
generation) is written and the slots are reused. So compaction, which keeps the newest value of
each key, never loses a delta that counts, and a share-partition costs at most
``1 + DELTAS_PER_SNAPSHOT`` live keys. Rebuilding: the newest snapshot, then its generation's
deltas in sequence order; acquired records become Available again (their delivery counts kept).

In a cluster the same keys live in ``__share_state.<topic>`` (``leadership.py``): one partition
of it per data partition, loaded by whichever broker leads it (``load_logs``).
Threading: event loop thread only.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from logstore.broker.internal import (
    INTERNAL_CONFIG,
    SHARE_STATE_TOPIC,
    append_entries,
    encode_key,
    encode_value,
    ensure_topic,
    partition_for,
    read_entries,
)
from logstore.broker.share.window import ACQUIRED, AVAILABLE, RUN_DTYPE, InFlightWindow
from logstore.storage import DataDir, PartitionLog
from logstore.storage.config import FLUSH_INTERVAL

log = logging.getLogger(__name__)

MAGIC = 1
SNAPSHOT = 0
DELTA = 1
HEADER = struct.Struct("<BBIIqqI")
#: The state topic's config when it is created: the internal topics' (compacted), but flushed
#: like an ordinary topic (``flush=interval``): an acknowledgement is answered once its delta is
#: written to the log, which a process crash does not lose. ``flush=always`` on the topic
#: (``logstore topic config __share_group_state --set flush=always``) adds an fsync per tick.
STATE_TOPIC_CONFIG = {**INTERNAL_CONFIG, "flush": FLUSH_INTERVAL}
#: Deltas written after a snapshot before the next snapshot.
DELTAS_PER_SNAPSHOT = 64

PartitionKey = tuple[str, str, int]  # (group, topic, partition)


def encode_state(kind: int, generation: int, sequence: int, start: int, end: int, runs: np.ndarray) -> bytes:
    return HEADER.pack(MAGIC, kind, generation, sequence, start, end, len(runs)) + runs.astype(RUN_DTYPE).tobytes()


def decode_state(value: bytes | memoryview) -> tuple[int, int, int, int, int, np.ndarray]:
    magic, kind, generation, sequence, start, end, count = HEADER.unpack_from(value, 0)
    if magic != MAGIC:
        raise ValueError(f"share state value with magic {magic}")
    runs = np.frombuffer(value, RUN_DTYPE, count, HEADER.size)
    return kind, generation, sequence, start, end, runs


@dataclass
class _Loaded:
    snapshot: tuple[int, int, int, int, int, np.ndarray] | None = None
    deltas: dict[int, tuple[int, int, int, int, int, np.ndarray]] = field(default_factory=dict)


@dataclass
class LoadedState:
    configs: dict[str, dict[str, object]]
    windows: dict[PartitionKey, tuple[InFlightWindow, int, int]]  # window, generation, next sequence


class ShareStateLog:
    def __init__(self, data_dir: DataDir, partitions: int) -> None:
        self._logs = ensure_topic(data_dir, SHARE_STATE_TOPIC, partitions, STATE_TOPIC_CONFIG)

    def log_for(self, group: str, topic: str | None = None, partition: int = 0) -> PartitionLog:
        """Where a group's keys are written: its config by group, its share-partitions of one
        topic all in one partition (by group and topic; ``partition`` does not choose it), so a
        tick's deltas of a group's topic are one append."""
        name = group if topic is None else f"{group}\x00{topic}"
        return self._logs[partition_for(name, len(self._logs))]

    def legacy_log_for(self, group: str, topic: str, partition: int) -> PartitionLog:
        """Where earlier versions wrote a share-partition's keys (by group, topic and partition):
        loading still reads them (the newest generation wins), deleting tombstones them too."""
        return self._logs[partition_for(f"{group}\x00{topic}\x00{partition}", len(self._logs))]

    # -- writing ------------------------------------------------------------------------------

    def write_config(self, group: str, config: dict[str, object] | None) -> tuple[PartitionLog, int]:
        partition_log = self.log_for(group)
        last = append_entries(partition_log, [(encode_key("share-config", group), encode_value(config))], sync=False)
        return partition_log, last + 1

    def state_entry(self, key: PartitionKey, kind: int, generation: int, sequence: int,
                    window: InFlightWindow, runs: np.ndarray) -> tuple[bytes, bytes]:
        """The (key, value) of a snapshot or delta of ``key``'s window (``state_writer.py``
        appends the entries of one tick together)."""
        group, topic, partition = key
        if kind == SNAPSHOT:
            record_key = encode_key("share-snap", group, topic, partition)
        else:
            record_key = encode_key("share-delta", group, topic, partition, sequence % DELTAS_PER_SNAPSHOT)
        return record_key, encode_state(kind, generation, sequence, window.start_offset, window.end_offset, runs)

    def delete_partitions(self, group: str, partitions: Sequence[tuple[str, int]]) -> list[tuple[PartitionLog, int]]:
        """Tombstones for every key of these share-partitions (unsynced)."""
        written = []
        for topic, partition in partitions:
            entries: list[tuple[bytes, bytes | None]] = [(encode_key("share-snap", group, topic, partition), None)]
            entries += [(encode_key("share-delta", group, topic, partition, slot), None)
                        for slot in range(DELTAS_PER_SNAPSHOT)]
            places = {id(log): log for log in (self.log_for(group, topic, partition),
                                                self.legacy_log_for(group, topic, partition))}
            for partition_log in places.values():
                written.append((partition_log, append_entries(partition_log, entries, sync=False) + 1))
        return written

    # -- rebuilding ---------------------------------------------------------------------------

    def load(self) -> LoadedState:
        return self.load_logs(self._logs)

    @staticmethod
    def load_logs(logs: Sequence[PartitionLog]) -> LoadedState:
        """The configs and windows kept in ``logs`` (of ``__share_group_state``, or of a state
        topic in a cluster)."""
        configs: dict[str, dict[str, object]] = {}
        found: dict[PartitionKey, _Loaded] = {}
        for partition_log in logs:
            # each log on its own (its tombstones delete what it holds), then the newest
            # generation of a share-partition across the logs (earlier versions placed it by
            # partition, this one by topic: after a move both places may hold it)
            here: dict[PartitionKey, _Loaded] = {}
            ShareStateLog._read_log(partition_log, configs, here, found)
            for pk, loaded in here.items():
                if loaded.snapshot is None:
                    continue
                seen = found.get(pk)
                if seen is None or seen.snapshot is None or seen.snapshot[1] < loaded.snapshot[1]:
                    found[pk] = loaded
        windows = {}
        for pk, loaded in found.items():
            if loaded.snapshot is None:
                continue
            windows[pk] = ShareStateLog._rebuild(loaded)
        log.info("loaded %d share groups, %d share-partitions", len(configs), len(windows))
        return LoadedState(configs, windows)

    @staticmethod
    def _read_log(partition_log: PartitionLog, configs: dict[str, dict[str, object]],
                  found: dict[PartitionKey, _Loaded], earlier: dict[PartitionKey, _Loaded]) -> None:
        """The entries of one log, in order: configs into ``configs``, share-partitions into
        ``found`` (a config's tombstone drops its group's share-partitions from ``earlier`` too)."""
        for _, key, value in read_entries(partition_log, raw_values=True):
            if not isinstance(key, list) or not key:
                continue
            if key[0] == "share-config" and len(key) == 2:
                if value is None:
                    configs.pop(key[1], None)
                    for table in (found, earlier):
                        for pk in [pk for pk in table if pk[0] == key[1]]:
                            del table[pk]
                else:
                    configs[key[1]] = json.loads(value)
            elif key[0] == "share-snap" and len(key) == 4:
                pk = (key[1], key[2], int(key[3]))
                if value is None:
                    found.pop(pk, None)
                else:
                    found.setdefault(pk, _Loaded()).snapshot = decode_state(bytes(value))
            elif key[0] == "share-delta" and len(key) == 5 and value is not None:
                pk = (key[1], key[2], int(key[3]))
                found.setdefault(pk, _Loaded()).deltas[int(key[4])] = decode_state(bytes(value))

    @staticmethod
    def _rebuild(loaded: _Loaded) -> tuple[InFlightWindow, int, int]:
        assert loaded.snapshot is not None
        _, generation, _, start, end, runs = loaded.snapshot
        window = InFlightWindow(start)
        window.extend(end)
        window.apply_runs(runs)
        deltas = sorted((d for d in loaded.deltas.values() if d[1] == generation), key=lambda d: d[2])
        sequence = 1
        for _, _, seq, delta_start, delta_end, delta_runs in deltas:
            window.extend(delta_end)
            window.apply_runs(delta_runs)
            window.skip_to(delta_start)
            sequence = seq + 1
        held = np.flatnonzero(window.state == ACQUIRED)
        window.state[held] = AVAILABLE  # their members are gone with the old broker
        window.advance()
        return window, generation, sequence
