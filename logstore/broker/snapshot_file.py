"""State snapshot files: a coordinator's state, keyed to the log offset of the partition it is
derived from, so that a (re)start replays only the records after that offset.

A coordinator's state (committed offsets, transactions) is a pure function of its internal
partition's records. A snapshot is that state as of one log offset; it sits in the partition's
directory, beside the segments it summarises. Layout (little-endian)::

    offset  size  field
    0       8     magic    b"LSSNAP\\r\\n"
    8       8     kind     ASCII, NUL-padded: which state ("offsets", "txns")
    16      4     version  <u4  format version of the payload
    20      4     crc      <u4  crc32c of bytes [24, end of file)
    24      8     offset   <i8  the state covers every record of the partition below this offset
    32      8     length   <u8  bytes of payload that follow
    40      ...   payload  the kind's own encoding

``read_snapshot`` returns a snapshot only if it is whole (its length and crc32c match), of the
expected kind and version, and its offset lies within [log start, log end] of the partition.
Anything else — torn, damaged, another format version, or past the log end because recovery cut
the log below it — is logged, removed and ignored, and the caller replays the partition from its
log start: a snapshot is a shortcut, never the only copy of anything.

Why that is enough: a snapshot is written only after every record below its offset is durable
(``wait_durable``), and records that are durable are never cut by recovery except by a damaged
disk, which moves the log end below the offset before anything is appended again — the next
start sees a snapshot past the log end and drops it. In a cluster, a truncation of the partition
below a snapshot's offset (a new leader's log diverged) must remove the snapshot the same way;
the offset key is what lets a new coordinator load its partition's state on failover.

Files are replaced by write-new, fsync, rename (``atomic_write_bytes``); a ``.tmp`` left by a
crash is removed when the partition is opened.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from crc32c import crc32c

from logstore.storage import PartitionLog
from logstore.storage.files import atomic_write_bytes, remove_quietly

log = logging.getLogger(__name__)

MAGIC = b"LSSNAP\r\n"
HEADER = struct.Struct("<8s8sIIqQ")  # magic, kind, version, crc, offset, length
CRC_START = 24  # the crc covers offset, length and payload
HEADER_SIZE = HEADER.size  # 40
KIND_WIDTH = 8


@dataclass(frozen=True, slots=True)
class Snapshot:
    offset: int  # the state covers every record below this offset
    payload: bytes


@dataclass(frozen=True)
class PendingSnapshot:
    """A snapshot taken (encoded on the state's own thread), to be written on any thread."""

    partition_log: PartitionLog
    path: Path
    kind: str
    version: int
    offset: int
    payload: bytes

    def write(self) -> None:
        """Wait until every record below ``offset`` is durable, then write the file."""
        self.partition_log.wait_durable(self.offset)
        write_snapshot(self.path, self.kind, self.version, self.offset, self.payload)


def encode_snapshot(kind: str, version: int, offset: int, payload: bytes) -> bytes:
    crc = crc32c(payload, crc32c(struct.pack("<qQ", offset, len(payload))))
    return HEADER.pack(MAGIC, _kind(kind), version, crc, offset, len(payload)) + payload


def write_snapshot(path: Path, kind: str, version: int, offset: int, payload: bytes) -> None:
    """Write (replace) the snapshot at ``path``; durable when this returns."""
    atomic_write_bytes(path, encode_snapshot(kind, version, offset, payload))


def decode_snapshot(data: bytes, kind: str, version: int) -> Snapshot:
    """The snapshot in ``data``; raises ValueError saying what is wrong with it."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"{len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, found_kind, found_version, crc, offset, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("not a snapshot file (bad magic)")
    if found_kind != _kind(kind):
        found = found_kind.rstrip(b"\0").decode("ascii", errors="replace")
        raise ValueError(f"a snapshot of {found!r}, not {kind!r}")
    if found_version != version:
        raise ValueError(f"format version {found_version}, this broker reads version {version}")
    if len(data) != HEADER_SIZE + length:
        raise ValueError(f"{len(data)} bytes where the header says {HEADER_SIZE + length} (torn)")
    actual = crc32c(memoryview(data)[CRC_START:])
    if actual != crc:
        raise ValueError(f"crc32c {actual:#010x} does not match the header's {crc:#010x}")
    return Snapshot(offset, data[HEADER_SIZE:])


def read_snapshot(path: Path, kind: str, version: int, partition_log: PartitionLog) -> Snapshot | None:
    """The usable snapshot at ``path`` for ``partition_log``, or None (see the module doc)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring the state snapshot %s: %s", path, exc)
        return None
    try:
        snapshot = decode_snapshot(data, kind, version)
        start, end = partition_log.log_start_offset, partition_log.log_end_offset
        if not start <= snapshot.offset <= end:
            raise ValueError(
                f"it covers the log up to offset {snapshot.offset}, outside the log's "
                f"[{start}, {end}] (the log was cut below it)"
            )
    except ValueError as exc:
        log.warning("ignoring the state snapshot %s: %s; replaying the log from its start", path, exc)
        remove_quietly(path)
        return None
    return snapshot


def _kind(kind: str) -> bytes:
    raw = kind.encode("ascii")
    if len(raw) > KIND_WIDTH:
        raise ValueError(f"snapshot kind {kind!r} is longer than {KIND_WIDTH} bytes")
    return raw.ljust(KIND_WIDTH, b"\0")
