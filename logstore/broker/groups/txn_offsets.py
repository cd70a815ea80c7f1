"""Transactional offset commits staged at a group's coordinator (a cluster), until the
transaction's marker reaches the group's ``__consumer_offsets`` partition.

In a cluster ``TxnOffsetCommit`` goes to the group's coordinator (which checks the member and
the offsets, as for a plain commit), not to the transaction coordinator. The offsets are staged:
one record in the group's partition, key ``["txn_offsets", group, producer_id]``, value
``{"epoch", "offsets": [[topic, partition, offset, metadata], ...]}`` (a later commit of the same
transaction merges into it). They are replicated with the partition, so a new coordinator loads
them. When the transaction coordinator's COMMIT marker for the partition arrives (``complete``),
they become the group's committed offsets; an ABORT drops them; either way a tombstone removes
the staged record.

A partition holding staged offsets takes no state snapshot (``OffsetStore.take_snapshots``): a
snapshot does not carry them, so the log after the last snapshot always does.

Threading: event loop thread only (owned by ``OffsetStore``).
"""

from __future__ import annotations

from typing import Any

TopicPartition = tuple[str, int]
#: (group, producer id) -> (producer epoch, {(topic, partition): (offset, metadata)})
Staged = dict[tuple[str, int], tuple[int, dict[TopicPartition, tuple[int, str]]]]

KEY = "txn_offsets"


def is_staged_key(key: Any) -> bool:
    return isinstance(key, list) and len(key) == 3 and key[0] == KEY


def apply(staged: Staged, key: list[Any], value: dict[str, Any] | None) -> None:
    """Replay one staged record (None: its tombstone)."""
    _, group, producer_id = key
    if value is None:
        staged.pop((str(group), int(producer_id)), None)
        return
    staged[(str(group), int(producer_id))] = (
        int(value["epoch"]), {(t, int(p)): (int(o), str(m)) for t, p, o, m in value["offsets"]}
    )


def merged(staged: Staged, group: str, producer_id: int, epoch: int,
           offsets: list[tuple[str, int, int, str]]) -> tuple[int, dict[TopicPartition, tuple[int, str]]]:
    """The staged entry after adding ``offsets`` (those of an older epoch are replaced)."""
    old_epoch, entries = staged.get((group, producer_id), (epoch, {}))
    entries = dict(entries) if old_epoch == epoch else {}
    for topic, partition, offset, metadata in offsets:
        entries[(topic, partition)] = (offset, metadata)
    return epoch, entries


def encode(epoch: int, entries: dict[TopicPartition, tuple[int, str]]) -> dict[str, Any]:
    return {"epoch": epoch, "offsets": [[t, p, o, m] for (t, p), (o, m) in sorted(entries.items())]}
