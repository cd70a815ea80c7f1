"""One fetched message's log batches -> one ``pyarrow.Table``, read straight from their bytes.

The record section of a log batch (``logstore.records.layout``) is::

    offset_delta[n] timestamp_delta[n] key_length[n] value_length[n] headers_length[n]   <i4 each
    keys  values  headers                                  each column's bytes back to back

(a column the attributes leave out is not stored: dense offsets, one timestamp, no keys, no
headers). So every Arrow array of a batch costs a few numpy passes over its length columns,
read in place with ``np.frombuffer``, and nothing per record:

    offset      base_offset + 0..n-1 (dense) or + offset_delta                  int64
    timestamp   base_timestamp (one ``np.full``) or + timestamp_delta            int64
    key, value  offsets 0, cumsum(max(length, 0)) into the key / value bytes     int32 + a view
    headers     an empty map each (no headers) or ``headers.to_map``
    partition   a slice of one shared array

The batches of one fetched message are built together, as one table: its partition, offset and
timestamp columns (and null keys, empty header maps) are one chunk for the whole message, its
key and value columns one chunk per log batch (their int32 offsets in one array), so a log batch
costs a few numpy calls and its binary arrays, and no record batch is assembled: ~30 us a 1 MiB
batch of 1 KiB records, ~100 us when each batch was built alone (~70 ns a record less at 1 KiB).
``to_batches()`` cuts the table at every chunk boundary: one record batch per log batch.

``columns.to_batches`` reaches the same arrays through ``decode_columns`` (positions of every
record in one buffer, then per-run offsets); this path skips the positions, which is most of
the client's work at 100 B a record. A compressed batch is decompressed once, straight into an
Arrow buffer, and its arrays view that buffer. A batch whose length columns say more bytes than it holds raises
``CorruptBatchError`` (Arrow must never be handed offsets past its data).

Records before ``first`` or from ``stop`` on are cut by slicing the table (no copy).

Threading: ``read``'s decode threads call this at once; the shared arrays (``_arange``,
``columns.partitions_array``, ``headers.empty_maps``) are never written, only replaced by larger
ones, and each caller slices the one it read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lz4.frame
import numpy as np
import zstandard

from logstore.client.frames import columns as frame_columns
from logstore.client.frames import headers as header_columns
from logstore.client.frames.columns import COLUMNS, null_keys, partitions_array, schema
from logstore.client.frames.extras import pyarrow
from logstore.errors import CorruptBatchError
from logstore.records.batch import BatchHeader, iter_headers, record_section
from logstore.records.decode import skip_aborted
from logstore.records.layout import (
    CODEC_LZ4,
    CODEC_NAMES,
    CODEC_NONE,
    CODEC_ZSTD,
    COLUMN_DTYPE,
    COLUMN_WIDTH,
    DENSE_OFFSETS_FLAG,
    HEADER_SIZE,
    NO_HEADERS_FLAG,
    NO_KEYS_FLAG,
    SAME_TIMESTAMP_FLAG,
    present_columns,
)

#: Our codec numbers -> pyarrow's codec names (both LZ4 frame and zstd frame formats).
_ARROW_CODECS = {CODEC_LZ4: "lz4", CODEC_ZSTD: "zstd"}

_ARANGE: list[np.ndarray] = [np.arange(1 << 16, dtype=np.int64)]  # 0..n-1, grown on demand


def _arange(count: int) -> np.ndarray:
    """0..count-1 (a view of a shared array; the decode threads may grow it at once, so each
    slices the one it saw)."""
    arange = _ARANGE[0]
    if len(arange) < count:
        arange = _ARANGE[0] = np.arange(max(count, 2 * len(arange)), dtype=np.int64)
    return arange[:count]


def _binary(pa: Any, section: memoryview, start: int, lengths: np.ndarray,
            offsets: np.ndarray, offsets_buffer: Any, at: int) -> tuple[Any, int]:
    """(a binary array of the values ``lengths`` (-1 null) that begin at ``section[start]``,
    the position after them). Its int32 offsets are written into ``offsets[at : at + n + 1]``
    (one array for a whole message; ``offsets_buffer`` is that array as an Arrow buffer)."""
    count = len(lengths)
    low = int(lengths.min())
    clipped = lengths if low >= 0 else np.maximum(lengths, 0)
    total = int(clipped.sum(dtype=np.int64))
    if low < -1 or start + total > len(section):
        raise CorruptBatchError(
            f"record lengths say {total} bytes from position {start}, the batch holds "
            f"{len(section)}"
        )
    offsets[at] = 0
    np.cumsum(clipped, out=offsets[at + 1 : at + count + 1])
    validity, nulls = None, 0
    if low < 0:
        valid = lengths >= 0
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = count - int(np.count_nonzero(valid))
    array = pa.Array.from_buffers(
        pa.binary(), count,
        [validity, offsets_buffer.slice(4 * at, 4 * (count + 1)),
         pa.py_buffer(section[start : start + total])],
        null_count=nulls)
    return array, start + total


@dataclass(slots=True)
class _Stored:
    """One log batch's record section and its length columns (views of the section)."""

    header: BatchHeader
    section: memoryview
    count: int
    lo: int  # the records [lo, hi) lie in the range asked for
    hi: int
    deltas: np.ndarray | None  # offset deltas; None: dense
    stamps: np.ndarray | None  # timestamp deltas; None: all base_timestamp
    key_lengths: np.ndarray | None  # None: no keys
    value_lengths: np.ndarray
    headers_lengths: np.ndarray | None  # None: no headers
    position: int  # where the keys begin in ``section``


def _stored(pa: Any, buffer: Any, header: BatchHeader, first: int, stop: int) -> _Stored | None:
    """The batch ``header``'s columns, or None when none of its records is in [first, stop)."""
    section = _section(pa, buffer, header)
    count = header.record_count
    attributes = header.attributes
    present = present_columns(attributes)
    if present * count * COLUMN_WIDTH > len(section):
        raise CorruptBatchError(f"a batch of {count} records holds only {len(section)} bytes")
    rows = iter(np.frombuffer(section, dtype=COLUMN_DTYPE, count=present * count).reshape(
        present, count))
    deltas = None if attributes & DENSE_OFFSETS_FLAG else next(rows)
    stamps = None if attributes & SAME_TIMESTAMP_FLAG else next(rows)
    key_lengths = None if attributes & NO_KEYS_FLAG else next(rows)
    value_lengths = next(rows)
    headers_lengths = None if attributes & NO_HEADERS_FLAG else next(rows)
    base = header.base_offset
    lo, hi = _trim(deltas, count, first - base, stop - base)
    if lo >= hi:
        return None
    return _Stored(header, section, count, lo, hi, deltas, stamps, key_lengths, value_lengths,
                   headers_lengths, present * count * COLUMN_WIDTH)


def to_record_batch(
    buffer: Any, header: BatchHeader, partition: int, first: int, stop: int,
    names: Sequence[str] = COLUMNS,
) -> Any:
    """The records of the log batch ``header`` (in ``buffer``) with offsets in [first, stop)
    as one Arrow record batch of the columns ``names``, or None when none are in range."""
    table = _table(buffer, [header], partition, first, stop, names)
    return None if table is None else table.combine_chunks().to_batches()[0]


def _table(
    buffer: Any, headers: list[BatchHeader], partition: int, first: int, stop: int,
    names: Sequence[str],
) -> Any:
    """The records of the log batches ``headers`` with offsets in [first, stop) as one
    ``pyarrow.Table`` (None when there are none): the key and value columns one chunk per log
    batch (views of its bytes), the partition, offset and timestamp columns (and null keys,
    empty header maps) one chunk for all of them.

    So the work per log batch is a few numpy calls and the Arrow arrays over its bytes, and no
    record batch is assembled (~1 KiB records come ~1,000 to a 1 MiB batch: what a batch
    costs matters as much as what a record costs). ``to_batches()`` cuts the table at every
    chunk boundary: one record batch per log batch."""
    pa = pyarrow()
    stored = [s for s in (_stored(pa, buffer, h, first, stop) for h in headers) if s is not None]
    if not stored:
        return None
    starts = np.zeros(len(stored) + 1, dtype=np.int64)
    np.cumsum([s.count for s in stored], out=starts[1:])
    begins = starts.tolist()
    total = begins[-1]
    out_schema = schema(names)
    columns: dict[str, Any] = {}
    if "partition" in names:
        columns["partition"] = [partitions_array(partition, total)]
    if "offset" in names:
        columns["offset"] = [_int64(pa, pa.int64(), _offsets(stored, begins))]
    if "timestamp" in names:
        columns["timestamp"] = [_int64(pa, out_schema.field("timestamp").type,
                                       _timestamps(stored, begins))]
    keyless = all(s.key_lengths is None for s in stored)
    if "key" in names and keyless:
        columns["key"] = [null_keys(total)]
    if "headers" in names and all(s.headers_lengths is None or not s.headers_lengths.any()
                                  for s in stored):
        columns["headers"] = [header_columns.empty_maps(pa, total)]
    per_batch: dict[str, list[Any]] = {
        name: [] for name in ("key", "value", "headers") if name in names and name not in columns}
    offsets = np.empty(total + len(stored), dtype=np.int32)  # batch k's at begins[k] + k
    offsets_buffer = pa.py_buffer(offsets)
    key_offsets = offsets if keyless else np.empty(total + len(stored), dtype=np.int32)
    key_offsets_buffer = offsets_buffer if keyless else pa.py_buffer(key_offsets)
    for index, item in enumerate(stored):
        count, section, position, at = item.count, item.section, item.position, begins[index] + index
        keys = None
        if item.key_lengths is not None:
            keys, position = _binary(pa, section, position, item.key_lengths, key_offsets,
                                     key_offsets_buffer, at)
        values, position = _binary(pa, section, position, item.value_lengths, offsets,
                                   offsets_buffer, at)
        if "value" in per_batch:
            per_batch["value"].append(values)
        if "key" in per_batch:
            per_batch["key"].append(keys if keys is not None else null_keys(count))
        if "headers" in per_batch:
            per_batch["headers"].append(
                _headers(pa, section, position, item.headers_lengths, count))
    columns.update(per_batch)
    table = pa.Table.from_arrays(
        [pa.chunked_array(columns[name], type=out_schema.field(name).type) for name in names],
        schema=out_schema)
    return _trimmed(pa, table, stored, begins)


def _trimmed(pa: Any, table: Any, stored: list[_Stored], begins: list[int]) -> Any:
    """``table`` without the records of each batch outside its [lo, hi) (only the first and
    the last batch of a range are cut, so this is one zero-copy slice)."""
    if all((s.lo, s.hi) == (0, s.count) for s in stored):
        return table
    if all((s.lo, s.hi) == (0, s.count) for s in stored[1:-1]) and (
            len(stored) == 1 or (stored[0].hi == stored[0].count and stored[-1].lo == 0)):
        low = stored[0].lo
        return table.slice(low, begins[-2] + stored[-1].hi - low)
    return pa.concat_tables([table.slice(begin + s.lo, s.hi - s.lo)
                             for s, begin in zip(stored, begins, strict=False)])


def _offsets(stored: list[_Stored], begins: list[int]) -> np.ndarray:
    """The int64 offset of every record of ``stored``, back to back (one ``arange`` when the
    batches are dense and follow one another, as they usually do)."""
    first_base = stored[0].header.base_offset
    if all(s.deltas is None and s.header.base_offset - first_base == begin
           for s, begin in zip(stored, begins, strict=False)):
        return np.arange(first_base, first_base + begins[-1], dtype=np.int64)
    out = np.empty(begins[-1], dtype=np.int64)
    for item, begin in zip(stored, begins, strict=False):
        base = np.int64(item.header.base_offset)
        np.add(_arange(item.count) if item.deltas is None else item.deltas, base,
               out=out[begin : begin + item.count])
    return out


def _timestamps(stored: list[_Stored], begins: list[int]) -> np.ndarray:
    """The int64 timestamp (ms) of every record of ``stored``, back to back."""
    out = np.empty(begins[-1], dtype=np.int64)
    for item, begin in zip(stored, begins, strict=False):
        base = item.header.base_timestamp
        if item.stamps is None:
            out[begin : begin + item.count] = base
        else:
            np.add(item.stamps, np.int64(base), out=out[begin : begin + item.count])
    return out


def _section(pa: Any, buffer: Any, header: BatchHeader) -> memoryview:
    """The record section: a view of ``buffer``, or for a compressed batch one Arrow buffer it
    is decompressed into by one C call (``pyarrow.decompress``, which releases the GIL: see
    ``read``'s decode threads), when the frame states its size; else ``record_section``'s."""
    codec = header.codec
    start = header.position + HEADER_SIZE
    raw = memoryview(buffer)[start : header.position + header.batch_length]
    if codec == CODEC_NONE:
        return raw.cast("B") if raw.format != "B" else raw
    size = _content_size(codec, raw)
    if 0 < size <= max(64 << 20, 64 * len(raw)):
        try:
            return memoryview(pa.decompress(raw, size, codec=_ARROW_CODECS[codec],
                                            asbytes=False, memory_pool=pa.system_memory_pool()))
        except (pa.ArrowException, OSError) as exc:
            raise CorruptBatchError(
                f"cannot decompress {CODEC_NAMES[codec]} record section: {exc}") from exc
    return memoryview(record_section(buffer, header)).cast("B")


def _content_size(codec: int, raw: memoryview) -> int:
    """The decompressed size the frame header states (0: unknown or not a frame)."""
    try:
        if codec == CODEC_LZ4:
            return int(lz4.frame.get_frame_info(raw).get("content_size") or 0)
        if codec == CODEC_ZSTD:
            size = zstandard.get_frame_parameters(raw).content_size
            return 0 if size == zstandard.CONTENTSIZE_UNKNOWN else int(size)
    except Exception:  # noqa: BLE001 - a damaged frame: record_section reports it
        return 0
    return 0


def _trim(deltas: np.ndarray | None, count: int, low: int, high: int) -> tuple[int, int]:
    """The records [lo, hi) whose offset deltas lie in [low, high)."""
    if deltas is None:
        return min(max(low, 0), count), min(max(high, 0), count)
    lo = 0 if low <= 0 else int(np.searchsorted(deltas, np.int32(min(low, 2**31 - 1))))
    hi = count if high > int(deltas[-1]) else int(np.searchsorted(deltas, np.int32(max(high, 0))))
    return lo, hi


def _int64(pa: Any, arrow_type: Any, values: np.ndarray) -> Any:
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def _headers(pa: Any, section: memoryview, start: int, lengths: np.ndarray | None,
             count: int) -> Any:
    if lengths is None or not lengths.any():
        return header_columns.empty_maps(pa, count)
    if int(lengths.min()) < 0 or start + int(lengths.sum(dtype=np.int64)) > len(section):
        raise CorruptBatchError("record header lengths run past the batch")
    positions = np.empty(count, dtype=np.int64)
    positions[0] = start
    np.cumsum(lengths[:-1], out=positions[1:])
    positions[1:] += start
    return header_columns.to_map(pa, section, positions, lengths)


def message_table(
    records: Any, first: int, stop: int, aborted: list[tuple[int, int, int]], partition: int,
    names: Sequence[str] = COLUMNS,
) -> Any:
    """The records of one fetched message with offsets in [first, stop), control batches and
    aborted transactions left out, as one ``pyarrow.Table`` (see ``_table``), or None when it
    has none. A message of short log batches (fewer than ``columns.MIN_RUN_RECORDS`` records
    on average) goes through ``columns.to_batches`` instead, which gathers them into one."""
    include = skip_aborted(aborted)
    headers = [header for header in iter_headers(records)
               if header.record_count > 0 and not header.is_control
               and (include is None or include(header)) and header.base_offset < stop and header.next_offset > first]
    if not headers:
        return None
    if len(headers) > 1 and sum(h.record_count for h in headers) < (
            frame_columns.MIN_RUN_RECORDS * len(headers)):
        decoded = frame_columns.decode(records, first, stop, aborted)
        batches = frame_columns.to_batches(decoded, partition, names)
        return pyarrow().Table.from_batches(batches, schema=schema(names)) if batches else None
    return _table(records, headers, partition, first, stop, names)


def message_batches(
    records: Any, first: int, stop: int, aborted: list[tuple[int, int, int]], partition: int,
    names: Sequence[str] = COLUMNS,
) -> list[Any]:
    """``message_table`` as record batches: one per log batch (or one of gathered short
    batches)."""
    table = message_table(records, first, stop, aborted, partition, names)
    return [] if table is None else table.to_batches()
