"""What the etcd client hands back: stored keys, watch events, a member's status. No protobuf.

Keys and values are bytes; every method of the client also takes ``str`` (encoded as UTF-8).
Revisions are etcd's: one counter for the whole store, bumped by every write (a transaction is
one write). A key's ``create_revision`` is the revision of the write that created it, which is
why it serves as an election epoch: a re-created key always has a larger one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: A key or value as callers pass it.
BytesLike = str | bytes


def to_bytes(data: BytesLike) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def prefix_end(prefix: bytes) -> bytes:
    """The exclusive end of the range of keys starting with ``prefix`` (b"\\0": no end)."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as stored at one revision. ``lease`` is its lease id, 0 when none."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. For a DELETE, ``kv`` has the key and the deletion's revision, an empty value and
    zero create revision and version. ``revision`` is the revision of the change."""

    type: EventType
    kv: KeyValue
    revision: int


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One etcd member's view (Maintenance.Status). ``leader_id`` is 0 while it knows no leader."""

    endpoint: str
    member_id: int
    leader_id: int
    raft_term: int
    raft_index: int
    revision: int
    version: str
    errors: tuple[str, ...]

    @property
    def is_leader(self) -> bool:
        return self.member_id == self.leader_id != 0
