"""Small builders shared by the storage tests: batches, pending appends, and reading a log back."""

from __future__ import annotations

from logstore.records import decode_records, encode_batch, read_header
from logstore.records.layout import ASSIGNED_PREFIX, ASSIGNED_PREFIX_SIZE
from logstore.storage import PartitionLog
from logstore.storage.segment import PendingBatch

T0 = 1_700_000_000_000


def batch(*values: bytes | None, keys: list[bytes | None] | None = None, timestamp: int = T0,
          codec: str = "none") -> bytes:
    """One batch of ``values`` (offsets are assigned on append)."""
    return encode_batch(list(values), keys, timestamp, codec=codec)


def value_batch(index: int, size: int = 100, records: int = 1, timestamp: int = T0) -> bytes:
    """A batch of ``records`` values of ``size`` bytes, distinguishable by ``index``."""
    return encode_batch(
        [(b"%d-%d:" % (index, r)).ljust(size, b".") for r in range(records)], timestamps=timestamp
    )


def pending(data: bytes, offset: int) -> PendingBatch:
    """``data`` as the broker would append it at ``offset``."""
    header = read_header(data)
    view = memoryview(data)
    return PendingBatch(
        ASSIGNED_PREFIX.pack(offset, header.batch_length, 0),
        view[ASSIGNED_PREFIX_SIZE:],
        offset,
        offset + header.last_offset_delta + 1,
        header.max_timestamp,
        header.batch_length,
    )


def read_all(partition_log: PartitionLog, start: int | None = None) -> list[tuple[int, bytes | None]]:
    """Every (offset, value) from ``start`` (default: log start) to the log end, read batch by batch."""
    offset = partition_log.log_start_offset if start is None else start
    out: list[tuple[int, bytes | None]] = []
    while offset < partition_log.log_end_offset:
        result = partition_log.read(offset, max_bytes=1)
        records = decode_records(result.data, min_offset=offset)
        assert records, f"no records at {offset} below log end {partition_log.log_end_offset}"
        out += [(r.offset, r.value) for r in records]
        offset = records[-1].offset + 1
    return out


def fill(partition_log, count: int, records: int = 1, size: int = 100, step_ms: int = 10):
    """Append ``count`` batches; batch i's records have timestamp T0 + step_ms * i."""
    results = []
    for i in range(count):
        data = value_batch(i, size=size, records=records, timestamp=T0 + step_ms * i)
        results.append(partition_log.append(data))
    return results
