"""One transactional id's state at its coordinator, and the record value it is written as.

A ``Transaction`` moves EMPTY -> ONGOING -> PREPARE_COMMIT / PREPARE_ABORT -> COMPLETE_COMMIT /
COMPLETE_ABORT (then ONGOING again with the next transaction); ``TransactionCoordinator``
(``transactions``) drives it and writes it to ``__transaction_state``, keyed by
``["txn", transactional_id]``, as the JSON value of ``to_value``::

    {"producer_id": int, "producer_epoch": int, "timeout_ms": int, "state": str,
     "partitions": [[topic, partition], ...],                  # sorted
     "offsets": {group: [[topic, partition, offset, metadata], ...]},
     "started_ms": int, "abort_reason": str}

``from_value`` reads it back; ``started_ms`` and ``abort_reason`` may be missing (older records).

Threading: plain data, owned by the coordinator (event loop thread only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TopicPartition = tuple[str, int]

EMPTY = "empty"
ONGOING = "ongoing"
PREPARE_COMMIT = "prepare_commit"
PREPARE_ABORT = "prepare_abort"
COMPLETE_COMMIT = "complete_commit"
COMPLETE_ABORT = "complete_abort"


@dataclass
class Transaction:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: str = EMPTY
    partitions: set[TopicPartition] = field(default_factory=set)
    offsets: dict[str, dict[TopicPartition, tuple[int, str]]] = field(default_factory=dict)
    started_ms: int = 0
    #: Set when the broker aborted the transaction on its own (a topic was deleted); the producer
    #: learns it from its next call.
    abort_reason: str = ""

    def to_value(self) -> dict:  # type: ignore[type-arg]
        return {
            "producer_id": self.producer_id,
            "producer_epoch": self.producer_epoch,
            "timeout_ms": self.timeout_ms,
            "state": self.state,
            "partitions": sorted([t, p] for t, p in self.partitions),
            "offsets": {
                group: [[t, p, o, m] for (t, p), (o, m) in sorted(entries.items())]
                for group, entries in self.offsets.items()
            },
            "started_ms": self.started_ms,
            "abort_reason": self.abort_reason,
        }

    @classmethod
    def from_value(cls, transactional_id: str, value: dict) -> Transaction:  # type: ignore[type-arg]
        return cls(
            transactional_id,
            int(value["producer_id"]),
            int(value["producer_epoch"]),
            int(value["timeout_ms"]),
            str(value["state"]),
            {(t, int(p)) for t, p in value.get("partitions", [])},
            {
                group: {(t, int(p)): (int(o), str(m)) for t, p, o, m in entries}
                for group, entries in value.get("offsets", {}).items()
            },
            int(value.get("started_ms", 0)),
            str(value.get("abort_reason", "")),
        )
